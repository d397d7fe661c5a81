// Package decommission wipes the device's identity when the control plane
// has offboarded it (SPEC §4.5): the key, certificate, CA bundle, trust
// anchor, TUF metadata cache, update state and the runtime trust
// directories enrollment installed. Running payloads are left alone.
//
// Every step is best-effort with its own short deadline; a step that fails
// or hangs is logged and skipped, and Wipe always returns, so the agent
// always reaches its terminal exit. Imported by internal/agent only.
package decommission

import (
	"context"
	"errors"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"time"
)

// DefaultStepTimeout bounds each removal.
const DefaultStepTimeout = 2 * time.Second

// Step removes one path: a file, or a directory and everything in it.
type Step struct {
	What string // e.g. "device key", for the log
	Path string
	// Scrub overwrites a regular file with zeros before removing it (the
	// private key: cheap, and useful on media without remapping).
	Scrub bool
}

// Result lists what could not be removed.
type Result struct {
	Removed []string
	Failed  []string // "<what> <path>: <why>"
}

// Wipe runs each step in order. A step that outlives timeout is abandoned
// (its goroutine may finish later; the process is about to exit anyway).
func Wipe(ctx context.Context, log *slog.Logger, steps []Step, timeout time.Duration) Result {
	if timeout <= 0 {
		timeout = DefaultStepTimeout
	}
	var res Result
	for _, s := range steps {
		if s.Path == "" || !filepath.IsAbs(s.Path) || filepath.Clean(s.Path) == "/" {
			continue
		}
		err := runStep(ctx, s, timeout)
		switch {
		case err == nil:
			res.Removed = append(res.Removed, s.Path)
			log.Info("removed", "what", s.What, "path", s.Path)
		case errors.Is(err, fs.ErrNotExist):
			// Already gone: nothing to do.
		default:
			res.Failed = append(res.Failed, s.What+" "+s.Path+": "+err.Error())
			log.Error("could not remove", "what", s.What, "path", s.Path, "err", err)
		}
	}
	return res
}

func runStep(ctx context.Context, s Step, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- removeStep(s) }()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// removeStep is remove; tests replace it to simulate a hung filesystem.
var removeStep = remove

func remove(s Step) error {
	fi, err := os.Lstat(s.Path)
	if err != nil {
		return err
	}
	if fi.IsDir() {
		return os.RemoveAll(s.Path)
	}
	if s.Scrub && fi.Mode().IsRegular() {
		scrub(s.Path, fi.Size())
	}
	if err := os.Remove(s.Path); err != nil {
		return err
	}
	// Best effort: make the removal durable.
	if d, err := os.Open(filepath.Dir(s.Path)); err == nil {
		d.Sync()
		d.Close()
	}
	return nil
}

func scrub(path string, size int64) {
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		return
	}
	defer f.Close()
	zeros := make([]byte, min(size, 64<<10))
	for left := size; left > 0; left -= int64(len(zeros)) {
		if _, err := f.Write(zeros[:min(left, int64(len(zeros)))]); err != nil {
			return
		}
	}
	f.Sync()
}
