package cli

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/meshanics/meshanics/internal/server/rollout"
)

// The demo's story depends on the device without calibration being the
// canary; the rollout engine decides who that is.
func TestDemoCanaryIsWaveZero(t *testing.T) {
	s, err := rollout.ParseStrategy([]byte(`{"waves":[{"percent":20,"approval":"auto"},{"percent":100,"approval":"manual"}],"max_failure_rate":0}`))
	if err != nil {
		t.Fatal(err)
	}
	waves := s.Partition(demoDevices)
	if want := []string{demoCanary(demoDevices)}; !cmp.Equal(waves[0], want) {
		t.Errorf("Partition(%v) wave 0 = %v, want %v (demoCanary)", demoDevices, waves[0], want)
	}
	if len(waves[1]) != len(demoDevices)-1 {
		t.Errorf("Partition(%v) wave 1 = %v, want the other %d devices", demoDevices, waves[1], len(demoDevices)-1)
	}
}

func TestQuoteArgs(t *testing.T) {
	got := quoteArgs([]string{"rollouts", "-probe", `{"type":"file"}`, "it's"})
	want := []string{"rollouts", "-probe", `'{"type":"file"}'`, `'it'\''s'`}
	if !cmp.Equal(got, want) {
		t.Errorf("quoteArgs = %q, want %q", got, want)
	}
}

func TestIndentWriter(t *testing.T) {
	var b bytes.Buffer
	w := &indentWriter{w: &b, prefix: "  "}
	w.Write([]byte("a\nb"))
	w.Write([]byte("c\n\nd\n"))
	if got, want := b.String(), "  a\n  bc\n  \n  d\n"; got != want {
		t.Errorf("indentWriter wrote %q, want %q", got, want)
	}
}

func TestDemoBinariesFromBinDir(t *testing.T) {
	dir := t.TempDir()
	if _, _, err := demoBinaries(t.Context(), dir, t.TempDir()); err == nil {
		t.Error("demoBinaries accepted a -bin-dir without the binaries")
	}
	for _, b := range []string{"meshanics-server", "meshanics-agent"} {
		os.WriteFile(filepath.Join(dir, b), []byte("#!/bin/false\n"), 0o755)
	}
	got, built, err := demoBinaries(t.Context(), dir, t.TempDir())
	if err != nil || got != dir || built {
		t.Errorf("demoBinaries(%s) = %q, %v, %v; want the directory, not built", dir, got, built, err)
	}
}
