package tufclient

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/meshanics/meshanics/internal/agent/config"
)

// bypassRE matches names a verification bypass would have.
var bypassRE = regexp.MustCompile(`(?i)(insecure|skip[-_]?verif|no[-_]?verif|unverified|unsigned|unsafe|trust[-_]?all|disable[-_]?(tuf|verif|sig)|allow[-_]?(unsigned|unverified))`)

// There is no flag, env var or build tag that disables or skips
// verification (SPEC §5): the agent's flag set and the agent's source say so.
func TestNoVerificationBypassInAgentFlags(t *testing.T) {
	_, err := config.Parse([]string{"-help"}, func(string) string { return "" })
	var help *config.Help
	if !errors.As(err, &help) {
		t.Fatalf("config.Parse(-help) = %v, want the flag list", err)
	}
	if !strings.Contains(help.Usage, "-tuf-root") || !strings.Contains(help.Usage, "MESHANICS_TUF_ROOT") {
		t.Fatalf("agent flag list lacks -tuf-root / MESHANICS_TUF_ROOT; is this the flag set?\n%s", help.Usage)
	}
	for _, line := range strings.Split(help.Usage, "\n") {
		if bypassRE.MatchString(line) {
			t.Errorf("agent flag looks like a verification bypass: %q", strings.TrimSpace(line))
		}
	}
}

func TestNoVerificationBypassInAgentSource(t *testing.T) {
	root := filepath.Join("..", "..", "..")
	dirs := []string{filepath.Join(root, "internal", "agent"), filepath.Join(root, "cmd", "meshanics-agent")}
	envRE := regexp.MustCompile(`MESHANICS_[A-Z0-9_]+`)
	tagRE := regexp.MustCompile(`(?m)^//go:build .*$`)
	goTUFUnsafe := regexp.MustCompile(`UnsafeLocalMode|InsecureSkipVerify:\s*true|DisableLocalCache:\s*true`)
	n := 0
	for _, dir := range dirs {
		err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
			if err != nil || d.IsDir() || !strings.HasSuffix(p, ".go") {
				return err
			}
			src, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			n++
			for _, tag := range tagRE.FindAllString(string(src), -1) {
				if bypassRE.MatchString(tag) {
					t.Errorf("%s: build tag looks like a verification bypass: %s", p, tag)
				}
			}
			if strings.HasSuffix(p, "_test.go") {
				return nil // tests build their own fakes and attackers
			}
			for _, env := range envRE.FindAllString(string(src), -1) {
				if bypassRE.MatchString(env) {
					t.Errorf("%s: environment variable looks like a verification bypass: %s", p, env)
				}
			}
			for _, loc := range goTUFUnsafe.FindAllStringIndex(string(src), -1) {
				m := string(src[loc[0]:loc[1]])
				// Certificate pinning turns the default check off only to
				// replace it with VerifyConnection in the same literal.
				after := string(src[loc[1]:min(len(src), loc[1]+800)])
				if strings.HasPrefix(m, "InsecureSkipVerify") && strings.Contains(after[:max(0, strings.Index(after, "\n}"))], "VerifyConnection:") {
					continue
				}
				t.Errorf("%s: uses %s", p, m)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	if n < 10 {
		t.Fatalf("scanned only %d agent source files; wrong root?", n)
	}
}
