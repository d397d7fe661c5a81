package statefile

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestJournalRoundTrip(t *testing.T) {
	p := filepath.Join(t.TempDir(), "journal.json")
	j, err := LoadJournal(p)
	if err != nil || len(j.Slots) != 0 {
		t.Fatalf("LoadJournal(missing) = %v, %v; want empty", j, err)
	}
	j.Slot("m").Current = &Artifact{Kind: "model", Name: "m", Version: "1", SHA256: "ab"}
	j.Tasks["a1"] = &Task{AssignmentID: "a1", Action: "apply", Phase: "downloading"}
	j.AddDone(Done{AssignmentID: "a0", State: "healthy"})
	if err := SaveJSON(p, j); err != nil {
		t.Fatal(err)
	}
	got, err := LoadJournal(p)
	if err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff(j, got); d != "" {
		t.Errorf("journal round trip (-want +got):\n%s", d)
	}
	fi, _ := os.Stat(p)
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("journal mode = %v, want 0600", fi.Mode().Perm())
	}
	left, _ := filepath.Glob(filepath.Join(filepath.Dir(p), ".*"))
	if len(left) != 0 {
		t.Errorf("temp files left behind: %v", left)
	}
}

func TestLoadRejectsOversizeAndWrongVersion(t *testing.T) {
	dir := t.TempDir()
	big := filepath.Join(dir, "big")
	os.WriteFile(big, []byte(`{"version":1,"x":"`+strings.Repeat("a", MaxBytes)+`"}`), 0o600)
	if _, err := LoadJournal(big); err == nil {
		t.Error("LoadJournal(oversize) = nil error")
	}
	old := filepath.Join(dir, "old")
	os.WriteFile(old, []byte(`{"version":99}`), 0o600)
	if _, err := LoadJournal(old); err == nil {
		t.Error("LoadJournal(version 99) = nil error")
	}
}

func TestAddDoneBounded(t *testing.T) {
	j := NewJournal()
	for i := 0; i < MaxDone+10; i++ {
		j.AddDone(Done{AssignmentID: string(rune('a' + i%26))})
	}
	if len(j.Done) != MaxDone {
		t.Errorf("len(Done) = %d, want %d", len(j.Done), MaxDone)
	}
}
