// Package file applies standalone files and models (SPEC §4.3): a version
// is staged under <data>/artifacts/<name>/versions/<version>/ and activated
// by atomically swapping the <data>/artifacts/<name>/current symlink. It
// also owns that on-disk layout, which config artifacts use for staging too.
// Imported by the agent's reconciler.
package file

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/meshanics/meshanics/internal/artifact"
	"github.com/meshanics/meshanics/internal/atomicfile"
	"github.com/meshanics/meshanics/internal/names"
)

// Layout is the artifact tree under the data dir.
type Layout struct {
	Root string // <data>/artifacts
}

// SlotDir is <root>/<name>.
func (l Layout) SlotDir(name string) string { return filepath.Join(l.Root, name) }

// VersionDir is <root>/<name>/versions/<version>.
func (l Layout) VersionDir(name, version string) string {
	return filepath.Join(l.Root, name, "versions", version)
}

// Current is the <root>/<name>/current symlink.
func (l Layout) Current(name string) string { return filepath.Join(l.Root, name, "current") }

// StagedFile is where the verified bytes of a version live.
func (l Layout) StagedFile(name, version, file string) (string, error) {
	if err := names.ValidateArtifact(name); err != nil {
		return "", err
	}
	if err := names.ValidateVersion(version); err != nil {
		return "", err
	}
	if err := artifact.ValidateFileName(file); err != nil {
		return "", err
	}
	return filepath.Join(l.VersionDir(name, version), file), nil
}

// PartialFile is where a download in progress is written; it is renamed to
// the staged file only after verification.
func PartialFile(staged string) string {
	return filepath.Join(filepath.Dir(staged), ".partial-"+filepath.Base(staged))
}

// Prune removes every version directory of name except keep, and partial
// downloads. It never touches the current symlink.
func (l Layout) Prune(name string, keep ...string) error {
	dir := filepath.Join(l.SlotDir(name), "versions")
	ents, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("prune %s: %w", name, err)
	}
	for _, e := range ents {
		if slices.Contains(keep, e.Name()) {
			continue
		}
		if err := os.RemoveAll(filepath.Join(dir, e.Name())); err != nil {
			return fmt.Errorf("prune %s: %w", name, err)
		}
	}
	return atomicfile.SyncDir(dir)
}

// CurrentVersion reads which version the current symlink points at ("" when
// there is none).
func (l Layout) CurrentVersion(name string) (string, error) {
	target, err := os.Readlink(l.Current(name))
	if errors.Is(err, fs.ErrNotExist) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("read current of %s: %w", name, err)
	}
	v, ok := strings.CutPrefix(target, "versions/")
	if !ok || strings.Contains(v, "/") {
		return "", fmt.Errorf("current of %s points at %q, outside versions/", name, target)
	}
	return v, nil
}

// SetCurrent atomically points current at version ("" removes current):
// a symlink under a temp name, renamed over current, directory fsynced.
func (l Layout) SetCurrent(name, version string) error {
	dir, cur := l.SlotDir(name), l.Current(name)
	if version == "" {
		if err := os.Remove(cur); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("remove current of %s: %w", name, err)
		}
		return atomicfile.SyncDir(dir)
	}
	if _, err := os.Stat(l.VersionDir(name, version)); err != nil {
		return fmt.Errorf("activate %s@%s: %w", name, version, err)
	}
	var rnd [8]byte
	rand.Read(rnd[:])
	tmp := filepath.Join(dir, ".current.tmp-"+hex.EncodeToString(rnd[:]))
	if err := os.Symlink(filepath.Join("versions", version), tmp); err != nil {
		return fmt.Errorf("activate %s@%s: %w", name, version, err)
	}
	if err := os.Rename(tmp, cur); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("activate %s@%s: %w", name, version, err)
	}
	return atomicfile.SyncDir(dir)
}

// CleanTemps removes symlinks and files a crash left under temp names.
func (l Layout) CleanTemps(name string) error {
	m, _ := filepath.Glob(filepath.Join(l.SlotDir(name), ".current.tmp-*"))
	for _, p := range m {
		if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
	}
	return nil
}
