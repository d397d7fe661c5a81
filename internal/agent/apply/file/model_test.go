package file

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/meshanics/meshanics/internal/agent/statefile"
)

func stage(t *testing.T, l Layout, name, version, content string) *statefile.Artifact {
	t.Helper()
	p, err := l.StagedFile(name, version, "model.onnx")
	if err != nil {
		t.Fatal(err)
	}
	os.MkdirAll(filepath.Dir(p), 0o755)
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return &statefile.Artifact{Kind: "model", Name: name, Version: version, File: p, Length: int64(len(content))}
}

func readCurrent(t *testing.T, l Layout, name string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(l.Current(name), "model.onnx"))
	if err != nil {
		return "<none>"
	}
	return string(b)
}

func TestActivateUndoPrune(t *testing.T) {
	l := Layout{Root: t.TempDir()}
	m := Model{Layout: l}
	ctx := context.Background()
	v1, v2, v3 := stage(t, l, "det", "1", "one"), stage(t, l, "det", "2", "two"), stage(t, l, "det", "3", "three")
	if err := m.Activate(ctx, v1, nil); err != nil {
		t.Fatal(err)
	}
	if err := m.Activate(ctx, v2, v1); err != nil {
		t.Fatal(err)
	}
	if got := readCurrent(t, l, "det"); got != "two" {
		t.Errorf("current after v2 = %q, want two", got)
	}
	if err := m.Undo(ctx, v2, v1); err != nil {
		t.Fatal(err)
	}
	if got := readCurrent(t, l, "det"); got != "one" {
		t.Errorf("current after undo = %q, want one", got)
	}
	if v, _ := l.CurrentVersion("det"); v != "1" {
		t.Errorf("CurrentVersion = %q, want 1", v)
	}
	if err := m.Activate(ctx, v3, v1); err != nil {
		t.Fatal(err)
	}
	if err := l.Prune("det", "3", "1"); err != nil {
		t.Fatal(err)
	}
	ents, _ := os.ReadDir(filepath.Join(l.SlotDir("det"), "versions"))
	if len(ents) != 2 || ents[0].Name() != "1" || ents[1].Name() != "3" {
		t.Errorf("versions after prune = %v, want [1 3]", ents)
	}
	if err := m.Undo(ctx, v1, nil); err != nil {
		t.Fatal(err)
	}
	if got := readCurrent(t, l, "det"); got != "<none>" {
		t.Errorf("current after undo to empty = %q, want none", got)
	}
	if left, _ := filepath.Glob(filepath.Join(l.SlotDir("det"), ".*")); len(left) != 0 {
		t.Errorf("temp links left: %v", left)
	}
}

func TestActivateRefusesPartialStage(t *testing.T) {
	l := Layout{Root: t.TempDir()}
	v := stage(t, l, "det", "1", "one")
	v.Length = 10
	if err := (Model{Layout: l}).Activate(context.Background(), v, nil); err == nil {
		t.Fatal("Activate(short staged file) = nil error")
	}
	if _, err := os.Lstat(l.Current("det")); err == nil {
		t.Error("current was created for a half-staged version")
	}
}

func TestStagedFileRejectsTraversal(t *testing.T) {
	l := Layout{Root: "/data/artifacts"}
	for _, c := range [][3]string{{"..", "1", "f"}, {"a", "..", "f"}, {"a", "1", "../f"}, {"a", "1", ".."}} {
		if _, err := l.StagedFile(c[0], c[1], c[2]); err == nil {
			t.Errorf("StagedFile(%q) = nil error", c)
		}
	}
}
