// Package agentenv reads agent.env, the unit's EnvironmentFile written by
// `meshanics-agent enroll`, the way systemd would, so tools that start the
// agent outside systemd (meshctl demo, meshanics-bench) start it exactly as
// its unit does. Stdlib-only leaf.
package agentenv

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"strings"
)

// Read returns the KEY=VALUE entries of the file at path (blank lines and
// # comments skipped, surrounding double quotes removed). Only MESHANICS_*
// variables are accepted: anything else is an error, not silently passed on.
func Read(path string) ([]string, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var env []string
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok || !strings.HasPrefix(k, "MESHANICS_") {
			return nil, fmt.Errorf("%s: unexpected line %q", path, line)
		}
		env = append(env, k+"="+strings.Trim(v, `"`))
	}
	return env, sc.Err()
}
