package atomicfile

import (
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"
)

func TestWriteFileReplaces(t *testing.T) {
	p := filepath.Join(t.TempDir(), "f")
	for _, want := range []string{"one", "two"} {
		if err := WriteFile(p, []byte(want), 0o640); err != nil {
			t.Fatal(err)
		}
		b, err := os.ReadFile(p)
		if err != nil || string(b) != want {
			t.Fatalf("ReadFile = %q, %v; want %q", b, err, want)
		}
	}
	if fi, _ := os.Stat(p); fi.Mode().Perm() != 0o640 {
		t.Errorf("mode = %v, want 0640", fi.Mode().Perm())
	}
}

func TestCleanTempsRemovesLeftovers(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, ".state.json.tmp-123"), []byte("x"), 0o600)
	os.WriteFile(filepath.Join(dir, "state.json"), []byte("x"), 0o600)
	if err := CleanTemps(dir); err != nil {
		t.Fatal(err)
	}
	left, _ := filepath.Glob(filepath.Join(dir, "*"))
	hidden, _ := filepath.Glob(filepath.Join(dir, ".*"))
	if len(left) != 1 || len(hidden) != 0 {
		t.Errorf("after CleanTemps: %v %v, want only state.json", left, hidden)
	}
}

func TestWriteFromFailureLeavesOldFile(t *testing.T) {
	p := filepath.Join(t.TempDir(), "f")
	if err := WriteFile(p, []byte("old"), 0o644); err != nil {
		t.Fatal(err)
	}
	err := WriteFrom(p, func(w io.Writer) error {
		w.Write([]byte("half"))
		return errors.New("disk on fire")
	}, 0o644)
	if err == nil {
		t.Fatal("WriteFrom(failing fill) = nil error")
	}
	if b, _ := os.ReadFile(p); string(b) != "old" {
		t.Errorf("after failed write file = %q, want %q", b, "old")
	}
	if left, _ := filepath.Glob(filepath.Join(filepath.Dir(p), ".*")); len(left) != 0 {
		t.Errorf("temp files left behind: %v", left)
	}
}
