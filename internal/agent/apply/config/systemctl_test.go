package config

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/meshanics/meshanics/internal/artifact"
)

// TestMain doubles as a fake systemctl: run through a symlink named
// systemctl, the test binary records its argv beside the symlink (the
// minimal environment carries nothing, so the path is the only channel)
// and fails when a file named "fail" is there.
func TestMain(m *testing.M) {
	if filepath.Base(os.Args[0]) == "systemctl" {
		dir := filepath.Dir(os.Args[0])
		f, err := os.OpenFile(filepath.Join(dir, "calls"), os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
		if err == nil {
			f.WriteString(strings.Join(os.Args[1:], " ") + "\n")
			f.Close()
		}
		if _, err := os.Stat(filepath.Join(dir, "fail")); err == nil {
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func fakeSystemctl(t *testing.T) (bin, dir string) {
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	dir = t.TempDir()
	bin = filepath.Join(dir, "systemctl")
	if err := os.Symlink(self, bin); err != nil {
		t.Fatal(err)
	}
	return bin, dir
}

func TestUnitReloadRunsSystemctlReloadOrRestart(t *testing.T) {
	bin, dir := fakeSystemctl(t)
	_, app := tree(t)
	dest := filepath.Join(app, "app.conf")
	os.WriteFile(dest, []byte("old"), 0o644)
	pl := &Placer{Policy: Policy{Dest: []string{app}, Units: []string{"app.service"}}, Systemctl: bin}
	next := stageConfig(t, "new", dest, "0644", &artifact.Reload{SystemdUnit: "app.service"})
	ctx := context.Background()
	if err := pl.Activate(ctx, next, nil); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(dir, "fail"), nil, 0o600) // a failing reload after the restore is an error too
	if err := pl.Undo(ctx, next, nil); err == nil {
		t.Error("Undo with a failing reload = nil error")
	}
	if b, _ := os.ReadFile(dest); string(b) != "old" {
		t.Errorf("after Undo dest = %q, want old (restored before the reload)", b)
	}
	calls, _ := os.ReadFile(filepath.Join(dir, "calls"))
	if got, want := string(calls), "reload-or-restart -- app.service\nreload-or-restart -- app.service\n"; got != want {
		t.Errorf("systemctl calls = %q, want %q", got, want)
	}
}

func TestUnitReloadNotAllowlisted(t *testing.T) {
	bin, dir := fakeSystemctl(t)
	_, app := tree(t)
	pl := &Placer{Policy: Policy{Dest: []string{app}, Units: []string{"other.service"}}, Systemctl: bin}
	next := stageConfig(t, "new", filepath.Join(app, "x.conf"), "0644", &artifact.Reload{SystemdUnit: "sshd.service"})
	if err := pl.Activate(context.Background(), next, nil); err == nil {
		t.Fatal("Activate with a unit off the allowlist = nil error")
	}
	if _, err := os.Stat(filepath.Join(dir, "calls")); err == nil {
		t.Error("systemctl ran for a unit off the allowlist")
	}
	if _, err := os.Stat(filepath.Join(app, "x.conf")); err == nil {
		t.Error("file placed although the reload is refused")
	}
}
