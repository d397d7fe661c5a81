package main

import (
	"os/exec"
	"strings"
	"testing"
)

// TestAgentDependencies keeps server, CLI and SQL code out of the agent: it
// runs as root on devices we cannot reach, so what it links is what it
// exposes. The shipped build (-tags grpcnotrace) also leaves out grpc's
// x/net/trace and its html/template.
func TestAgentDependencies(t *testing.T) {
	forbidden := []string{
		"github.com/meshanics/meshanics/internal/server",
		"github.com/meshanics/meshanics/internal/cli",
		"github.com/meshanics/meshanics/internal/ceremony",
		"database/sql",
		"modernc.org/",
		"github.com/jackc/",
		"github.com/prometheus/",
	}
	check(t, nil, forbidden)
	check(t, []string{"-tags", "grpcnotrace"}, append(forbidden, "golang.org/x/net/trace", "html/template"))
}

func check(t *testing.T, flags, forbidden []string) {
	t.Helper()
	args := append(append([]string{"list"}, flags...), "-deps", ".")
	out, err := exec.Command("go", args...).Output()
	if err != nil {
		t.Fatalf("go %s: %v", strings.Join(args, " "), err)
	}
	deps := strings.Fields(string(out))
	if len(deps) < 50 {
		t.Fatalf("go %s returned %d packages; want the real list", strings.Join(args, " "), len(deps))
	}
	for _, d := range deps {
		for _, f := range forbidden {
			prefix := strings.TrimSuffix(f, "/")
			if d == prefix || strings.HasPrefix(d, prefix+"/") {
				t.Errorf("go %s: meshanics-agent depends on %s (forbidden: %s)", strings.Join(args, " "), d, f)
			}
		}
	}
}
