package file

import (
	"context"
	"fmt"
	"os"

	"github.com/meshanics/meshanics/internal/agent/statefile"
)

// Model activates models and raw files by swapping the current symlink. It
// holds no state; safe for concurrent use on different slots.
type Model struct {
	Layout Layout
}

// Check needs the staged file to be present: activation must never point
// current at a half-staged version.
func (m Model) Check(a *statefile.Artifact) error {
	fi, err := os.Stat(a.File)
	if err != nil {
		return fmt.Errorf("model %s@%s: staged file: %w", a.Name, a.Version, err)
	}
	if !fi.Mode().IsRegular() || fi.Size() != a.Length {
		return fmt.Errorf("model %s@%s: staged file is not the verified %d bytes", a.Name, a.Version, a.Length)
	}
	return nil
}

// Activate points current at next.
func (m Model) Activate(_ context.Context, next, _ *statefile.Artifact) error {
	if err := m.Check(next); err != nil {
		return err
	}
	return m.Layout.SetCurrent(next.Name, next.Version)
}

// Undo points current back at prior (or removes it when the slot was
// empty). It is idempotent, whether or not Activate ran.
func (m Model) Undo(_ context.Context, next, prior *statefile.Artifact) error {
	if prior == nil {
		return m.Layout.SetCurrent(next.Name, "")
	}
	return m.Layout.SetCurrent(prior.Name, prior.Version)
}

// Remove takes the slot's current symlink away (a revert to nothing).
func (m Model) Remove(_ context.Context, cur *statefile.Artifact, _ string) error {
	return m.Layout.SetCurrent(cur.Name, "")
}
