// Package statefile persists the agent's durable state crash-safely through
// internal/atomicfile (the old or the new document after a crash, never a
// mix) and defines the update journal (journal.go). Imported by the agent's
// reconcile and apply packages.
package statefile

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/meshanics/meshanics/internal/atomicfile"
)

// MaxBytes bounds a state document read back from disk.
const MaxBytes = 4 << 20

// SaveJSON atomically writes v as JSON to path (mode 0600).
func SaveJSON(path string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return fmt.Errorf("encode %s: %w", filepath.Base(path), err)
	}
	return atomicfile.WriteFile(path, append(b, '\n'), 0o600)
}

// LoadJSON reads path into v. It reports false, nil when the file does not
// exist yet.
func LoadJSON(path string, v any) (bool, error) {
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("load %s: %w", filepath.Base(path), err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, MaxBytes+1))
	if err != nil {
		return false, fmt.Errorf("load %s: %w", filepath.Base(path), err)
	}
	if len(b) > MaxBytes {
		return false, fmt.Errorf("load %s: larger than %d bytes", filepath.Base(path), MaxBytes)
	}
	if err := json.Unmarshal(b, v); err != nil {
		return false, fmt.Errorf("load %s: %w", filepath.Base(path), err)
	}
	return true, nil
}
