package decommission

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"testing/synctest"
	"time"
)

func TestWipeRemovesFilesAndDirsAndReportsFailures(t *testing.T) {
	dir := t.TempDir()
	key := filepath.Join(dir, "device.key")
	os.WriteFile(key, []byte("secret"), 0o600)
	trust := filepath.Join(dir, "certs.d", "cp:9444")
	os.MkdirAll(trust, 0o755)
	os.WriteFile(filepath.Join(trust, "client.key"), []byte("secret"), 0o600)
	// A step that cannot succeed, even as root: its parent is a file.
	notDir := filepath.Join(dir, "plain")
	os.WriteFile(notDir, nil, 0o600)
	stuck := filepath.Join(notDir, "state.json")

	res := Wipe(context.Background(), slog.New(slog.DiscardHandler), []Step{
		{What: "device key", Path: key, Scrub: true},
		{What: "missing", Path: filepath.Join(dir, "never-there")},
		{What: "update state", Path: stuck},
		{What: "trust dir", Path: trust},
		{What: "root", Path: "/"},
		{What: "relative", Path: "x"},
	}, 0)
	for _, p := range []string{key, trust} {
		if _, err := os.Lstat(p); err == nil {
			t.Errorf("%s still exists after Wipe", p)
		}
	}
	if len(res.Failed) != 1 {
		t.Errorf("Wipe().Failed = %v, want the impossible step only", res.Failed)
	}
	if len(res.Removed) != 2 {
		t.Errorf("Wipe().Removed = %v, want key and trust dir", res.Removed)
	}
}

func TestWipeDoesNotWaitForAHungStep(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		dir := t.TempDir()
		hung := filepath.Join(dir, "on-a-dead-nfs")
		after := filepath.Join(dir, "device.crt")
		os.WriteFile(after, []byte("x"), 0o644)
		release := make(chan struct{})
		removeStep = func(s Step) error {
			if s.Path == hung {
				<-release
				return nil
			}
			return remove(s)
		}
		defer func() { removeStep = remove }()

		start := time.Now()
		res := Wipe(context.Background(), slog.New(slog.DiscardHandler), []Step{
			{What: "update state", Path: hung},
			{What: "device certificate", Path: after},
		}, 2*time.Second)
		if took := time.Since(start); took != 2*time.Second {
			t.Errorf("Wipe took %v, want exactly the 2s step deadline", took)
		}
		if len(res.Failed) != 1 || !strings.Contains(res.Failed[0], "deadline") {
			t.Errorf("Wipe().Failed = %v, want the hung step", res.Failed)
		}
		if _, err := os.Stat(after); err == nil {
			t.Error("the step after a hung one did not run")
		}
		close(release)
	})
}
