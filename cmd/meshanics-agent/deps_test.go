package main

import (
	"os/exec"
	"strings"
	"testing"
)

// TestAgentDependencies keeps server, CLI and SQL code out of the agent: it
// runs as root on devices we cannot reach, so what it links is what it
// exposes.
func TestAgentDependencies(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", ".").Output()
	if err != nil {
		t.Fatalf("go list -deps: %v", err)
	}
	forbidden := []string{
		"github.com/meshanics/meshanics/internal/server",
		"github.com/meshanics/meshanics/internal/cli",
		"github.com/meshanics/meshanics/internal/ceremony",
		"database/sql",
		"modernc.org/",
		"github.com/jackc/",
		"github.com/prometheus/",
	}
	deps := strings.Fields(string(out))
	if len(deps) < 50 {
		t.Fatalf("go list -deps returned %d packages; want the real list", len(deps))
	}
	for _, d := range deps {
		for _, f := range forbidden {
			if d == strings.TrimSuffix(f, "/") || strings.HasPrefix(d, f) || strings.HasPrefix(d, strings.TrimSuffix(f, "/")+"/") {
				t.Errorf("meshanics-agent depends on %s (forbidden: %s)", d, f)
			}
		}
	}
}
