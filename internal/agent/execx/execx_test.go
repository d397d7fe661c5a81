package execx

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/meshanics/meshanics/internal/errdefs"
)

func TestRunRefusesRelativeAndShells(t *testing.T) {
	dir := t.TempDir()
	link := filepath.Join(dir, "innocent")
	if err := os.Symlink("/bin/sh", link); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"sh", "bin/true", "./true", "/bin/sh", "/bin/bash", "/usr/bin/env", "/usr/bin/../bin/true", link, ""} {
		_, err := Run(context.Background(), Cmd{Path: p, Args: []string{"-c", "touch " + filepath.Join(dir, "pwned")}})
		if err == nil {
			t.Errorf("Run(%q) = nil error, want refusal", p)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "pwned")); err == nil {
		t.Fatal("a refused program ran")
	}
	if _, err := Run(context.Background(), Cmd{Path: "sh"}); !errors.Is(err, errdefs.ErrPermission) {
		t.Errorf("Run(sh) = %v, want ErrPermission", err)
	}
}

func mustFind(t *testing.T, name string) string {
	t.Helper()
	p, err := Find(name)
	if err != nil {
		t.Skipf("%s not installed: %v", name, err)
	}
	return p
}

func TestRunExitCodeAndOutput(t *testing.T) {
	res, err := Run(context.Background(), Cmd{Path: mustFind(t, "echo"), Args: []string{"hello", "; rm -rf /"}})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := string(res.Stdout), "hello ; rm -rf /\n"; got != want {
		t.Errorf("stdout = %q, want %q (arguments passed verbatim, not interpreted)", got, want)
	}
	_, err = Run(context.Background(), Cmd{Path: mustFind(t, "false")})
	var ee *ExitError
	if !errors.As(err, &ee) || ee.Code != 1 {
		t.Errorf("Run(false) = %v, want ExitError code 1", err)
	}
}

func TestRunBoundsOutput(t *testing.T) {
	f := filepath.Join(t.TempDir(), "big")
	if err := os.WriteFile(f, []byte(strings.Repeat("x", 1<<20)), 0o600); err != nil {
		t.Fatal(err)
	}
	res, err := Run(context.Background(), Cmd{Path: mustFind(t, "cat"), Args: []string{f}, MaxOutput: 1000})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Stdout) != 1000 || !res.Truncated {
		t.Errorf("len(stdout) = %d truncated=%v, want 1000 true", len(res.Stdout), res.Truncated)
	}
}

func TestRunTimeoutKills(t *testing.T) {
	_, err := Run(context.Background(), Cmd{Path: mustFind(t, "sleep"), Args: []string{"60"}, Timeout: 50 * time.Millisecond})
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Run(sleep 60, 50ms) = %v, want deadline exceeded", err)
	}
}

func TestRunMinimalEnvironment(t *testing.T) {
	t.Setenv("MESHANICS_SECRET_TOKEN", "leak")
	res, err := Run(context.Background(), Cmd{Path: mustFind(t, "printenv")})
	if err != nil {
		t.Fatal(err)
	}
	got := strings.Fields(string(res.Stdout))
	want := minimalEnv()
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("child environment = %q, want %q", got, want)
	}
}
