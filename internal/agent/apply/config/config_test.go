package config

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/meshanics/meshanics/internal/agent/execx"
	"github.com/meshanics/meshanics/internal/agent/statefile"
	"github.com/meshanics/meshanics/internal/artifact"
	"github.com/meshanics/meshanics/internal/errdefs"
)

// tree makes <tmp>/etc/app (allowed), <tmp>/etc/app-evil, <tmp>/outside
// and <tmp>/etc/app/link -> <tmp>/outside.
func tree(t testing.TB) (root, app string) {
	t.Helper()
	root = t.TempDir()
	app = filepath.Join(root, "etc", "app")
	for _, d := range []string{app, filepath.Join(app, "sub"), filepath.Join(root, "etc", "app-evil"), filepath.Join(root, "outside")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Symlink(filepath.Join(root, "outside"), filepath.Join(app, "link")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join(root, "outside", "x.conf"), filepath.Join(app, "dest-link.conf")); err != nil {
		t.Fatal(err)
	}
	return root, app
}

func TestPolicyDestinations(t *testing.T) {
	root, app := tree(t)
	p := Policy{Dest: []string{app}}
	for _, tc := range []struct {
		dest string
		ok   bool
		kind error
	}{
		{app + "/app.conf", true, nil},
		{app + "/sub/app.conf", true, nil},
		{app + "/../app-evil/app.conf", false, errdefs.ErrInvalid},
		{app + "//app.conf", false, errdefs.ErrInvalid},
		{app + "/./app.conf", false, errdefs.ErrInvalid},
		{root + "/etc/app-evil/app.conf", false, errdefs.ErrPermission},
		{root + "/etc/app", false, errdefs.ErrPermission},
		{app + "/link/app.conf", false, errdefs.ErrPermission},
		{app + "/dest-link.conf", false, errdefs.ErrPermission},
		{app + "/sub", false, errdefs.ErrPermission},
		{"relative/app.conf", false, errdefs.ErrInvalid},
	} {
		err := p.Check(&artifact.ConfigProfile{Activator: "place-file", Destination: tc.dest, Mode: "0644"})
		if (err == nil) != tc.ok || (tc.kind != nil && !errors.Is(err, tc.kind)) {
			t.Errorf("Check(%s) = %v, want ok=%v kind=%v", tc.dest, err, tc.ok, tc.kind)
		}
	}
	deny := Policy{}
	if err := deny.Check(&artifact.ConfigProfile{Activator: "place-file", Destination: app + "/app.conf", Mode: "0644"}); !errors.Is(err, errdefs.ErrPermission) {
		t.Errorf("empty allowlist Check = %v, want ErrPermission", err)
	}
	// A prefix with a trailing slash or relative form is ignored, not widened.
	odd := Policy{Dest: []string{app + "/", "etc"}}
	if err := odd.Check(&artifact.ConfigProfile{Activator: "place-file", Destination: app + "/app.conf", Mode: "0644"}); err == nil {
		t.Error("unclean allowlist entry matched")
	}
}

func TestPolicyModesAndReloads(t *testing.T) {
	_, app := tree(t)
	p := Policy{Dest: []string{app}, Units: []string{"app.service"}, Exec: []string{"/usr/bin/touch"}}
	dest := app + "/app.conf"
	for _, tc := range []struct {
		mode   string
		reload *artifact.Reload
		ok     bool
	}{
		{"0644", nil, true},
		{"0777", nil, true},
		{"4755", nil, false},
		{"1777", nil, false},
		{"0644", &artifact.Reload{SystemdUnit: "app.service"}, true},
		{"0644", &artifact.Reload{SystemdUnit: "sshd.service"}, false},
		{"0644", &artifact.Reload{Exec: []string{"/usr/bin/touch", "/tmp/x"}}, true},
		{"0644", &artifact.Reload{Exec: []string{"/bin/sh", "-c", "id"}}, false},
		{"0644", &artifact.Reload{Exec: []string{"touch"}}, false},
	} {
		err := p.Check(&artifact.ConfigProfile{Activator: "place-file", Destination: dest, Mode: tc.mode, Reload: tc.reload})
		if (err == nil) != tc.ok {
			t.Errorf("Check(mode %s, reload %+v) = %v, want ok=%v", tc.mode, tc.reload, err, tc.ok)
		}
	}
}

func stageConfig(t *testing.T, content, dest, mode string, reload *artifact.Reload) *statefile.Artifact {
	t.Helper()
	dir := t.TempDir()
	f := filepath.Join(dir, "staged.conf")
	os.WriteFile(f, []byte(content), 0o600)
	return &statefile.Artifact{Kind: "config", Name: "app", Version: "1", File: f, Backup: filepath.Join(dir, "backup"),
		Config: &artifact.ConfigProfile{Activator: "place-file", Destination: dest, Mode: mode, Reload: reload}}
}

func TestActivateUndoRestoresAndReloads(t *testing.T) {
	touch, err := execx.Find("touch")
	if err != nil {
		t.Skip(err)
	}
	_, app := tree(t)
	dest := filepath.Join(app, "app.conf")
	os.WriteFile(dest, []byte("original"), 0o640)
	marker := filepath.Join(t.TempDir(), "reloaded")
	pl := &Placer{Policy: Policy{Dest: []string{app}, Exec: []string{touch}}}
	next := stageConfig(t, "new", dest, "0604", &artifact.Reload{Exec: []string{touch, marker}})
	ctx := context.Background()
	if err := pl.Activate(ctx, next, nil); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(dest)
	fi, _ := os.Stat(dest)
	if string(b) != "new" || fi.Mode().Perm() != 0o604 {
		t.Errorf("after Activate dest = %q %v, want \"new\" 0604", b, fi.Mode().Perm())
	}
	if _, err := os.Stat(marker); err != nil {
		t.Errorf("reload did not run: %v", err)
	}
	os.Remove(marker)
	if err := pl.Undo(ctx, next, nil); err != nil {
		t.Fatal(err)
	}
	b, _ = os.ReadFile(dest)
	fi, _ = os.Stat(dest)
	if string(b) != "original" || fi.Mode().Perm() != 0o640 {
		t.Errorf("after Undo dest = %q %v, want \"original\" 0640", b, fi.Mode().Perm())
	}
	if _, err := os.Stat(marker); err != nil {
		t.Errorf("reload did not run again after restore: %v", err)
	}
	if left, _ := filepath.Glob(filepath.Join(app, ".meshanics-*")); len(left) != 0 {
		t.Errorf("temp files left: %v", left)
	}
}

func TestActivateRefusedWritesNothing(t *testing.T) {
	root, app := tree(t)
	pl := &Placer{Policy: Policy{Dest: []string{app}}}
	for _, dest := range []string{root + "/etc/app-evil/app.conf", app + "/link/app.conf", app + "/dest-link.conf"} {
		next := stageConfig(t, "evil", dest, "0644", nil)
		if err := pl.Activate(context.Background(), next, nil); !errors.Is(err, errdefs.ErrPermission) {
			t.Errorf("Activate(%s) = %v, want ErrPermission", dest, err)
		}
		if _, err := os.Stat(next.Backup); err == nil {
			t.Errorf("Activate(%s) refused but wrote a backup", dest)
		}
	}
	if ents, _ := os.ReadDir(filepath.Join(root, "outside")); len(ents) != 0 {
		t.Errorf("files written outside the allowlist: %v", ents)
	}
	if ents, _ := os.ReadDir(filepath.Join(root, "etc", "app-evil")); len(ents) != 0 {
		t.Errorf("files written to app-evil: %v", ents)
	}
}

func TestUndoOfNewFileRemovesIt(t *testing.T) {
	_, app := tree(t)
	dest := filepath.Join(app, "fresh.conf")
	pl := &Placer{Policy: Policy{Dest: []string{app}}}
	next := stageConfig(t, "x", dest, "0644", nil)
	ctx := context.Background()
	if err := pl.Activate(ctx, next, nil); err != nil {
		t.Fatal(err)
	}
	if err := pl.Undo(ctx, next, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(dest); err == nil {
		t.Error("Undo left a file where there was none")
	}
	// Undo of an activation that never started touches nothing.
	os.WriteFile(dest, []byte("keep"), 0o644)
	never := stageConfig(t, "x", dest, "0644", nil)
	if err := pl.Undo(ctx, never, nil); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(dest); string(b) != "keep" {
		t.Errorf("Undo without backup changed dest to %q", b)
	}
}

func TestFailingReloadIsAnError(t *testing.T) {
	falseBin, err := execx.Find("false")
	if err != nil {
		t.Skip(err)
	}
	_, app := tree(t)
	pl := &Placer{Policy: Policy{Dest: []string{app}, Exec: []string{falseBin}}}
	next := stageConfig(t, "x", filepath.Join(app, "a.conf"), "0644", &artifact.Reload{Exec: []string{falseBin}})
	if err := pl.Activate(context.Background(), next, nil); err == nil {
		t.Error("Activate with failing reload = nil error")
	}
}

func TestPlaceRechecksTheOpenedDirectory(t *testing.T) {
	root, app := tree(t)
	p := Policy{Dest: []string{app}}
	// Check passed for app/sub; then sub is swapped for a symlink outside.
	sub := filepath.Join(app, "sub")
	os.RemoveAll(sub)
	if err := os.Symlink(filepath.Join(root, "outside"), sub); err != nil {
		t.Fatal(err)
	}
	err := place(filepath.Join(sub, "x.conf"), strings.NewReader("evil"), 0o644, [2]int{-1, -1}, p.checkRealDir)
	if !errors.Is(err, errdefs.ErrPermission) {
		t.Errorf("place through a swapped directory = %v, want ErrPermission", err)
	}
	if ents, _ := os.ReadDir(filepath.Join(root, "outside")); len(ents) != 0 {
		t.Errorf("written outside: %v", ents)
	}
	if err := place(filepath.Join(app, "ok.conf"), strings.NewReader("ok"), 0o644, [2]int{-1, -1}, p.checkRealDir); err != nil {
		t.Errorf("place inside = %v", err)
	}
}

// A directory swapped for a symlink after the apply never leads a rollback
// (Undo or Remove) to write or delete outside the allowlist.
func TestRollbackRechecksTheOpenedDirectory(t *testing.T) {
	root, app := tree(t)
	outside := filepath.Join(root, "outside")
	pl := &Placer{Policy: Policy{Dest: []string{app}}}
	ctx := context.Background()
	sub := filepath.Join(app, "sub")
	swap := func() {
		t.Helper()
		os.RemoveAll(sub)
		if err := os.Symlink(outside, sub); err != nil {
			t.Fatal(err)
		}
	}
	unswap := func() {
		t.Helper()
		os.Remove(sub)
		os.MkdirAll(sub, 0o755)
	}

	// Undo of a replaced file would write the backup outside.
	os.WriteFile(filepath.Join(sub, "x.conf"), []byte("planted"), 0o644)
	next := stageConfig(t, "new", filepath.Join(sub, "x.conf"), "0644", nil)
	if err := pl.Activate(ctx, next, nil); err != nil {
		t.Fatal(err)
	}
	swap()
	if err := pl.Undo(ctx, next, nil); !errors.Is(err, errdefs.ErrPermission) {
		t.Errorf("Undo through a swapped directory = %v, want ErrPermission", err)
	}
	if ents, _ := os.ReadDir(outside); len(ents) != 0 {
		t.Errorf("Undo wrote outside the allowlist: %v", ents)
	}

	// Undo of a new file would delete a file of the same name outside.
	unswap()
	fresh := stageConfig(t, "new", filepath.Join(sub, "y.conf"), "0644", nil)
	if err := pl.Activate(ctx, fresh, nil); err != nil {
		t.Fatal(err)
	}
	swap()
	victim := filepath.Join(outside, "y.conf")
	os.WriteFile(victim, []byte("keep"), 0o644)
	if err := pl.Undo(ctx, fresh, nil); !errors.Is(err, errdefs.ErrPermission) {
		t.Errorf("Undo (remove) through a swapped directory = %v, want ErrPermission", err)
	}
	if err := pl.Remove(ctx, fresh, ""); !errors.Is(err, errdefs.ErrPermission) {
		t.Errorf("Remove through a swapped directory = %v, want ErrPermission", err)
	}
	if b, err := os.ReadFile(victim); err != nil || string(b) != "keep" {
		t.Errorf("a file outside the allowlist was touched: %q %v", b, err)
	}

	// Unswapped, the same rollbacks work.
	unswap()
	os.WriteFile(filepath.Join(sub, "y.conf"), []byte("new"), 0o644)
	if err := pl.Undo(ctx, fresh, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(sub, "y.conf")); err == nil {
		t.Error("Undo left the new file in place")
	}
}
