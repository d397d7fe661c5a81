package enroll

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"

	"github.com/meshanics/meshanics/internal/atomicfile"
)

// TrustRecordFile, in the config dir, lists the runtime trust directories
// enrollment created, so that renewal can refresh them and decommission can
// remove exactly those (and nothing the operator made).
const TrustRecordFile = "trust-dirs.json"

// Files of a runtime trust directory: the layout both podman
// (containers-certs.d(5)) and docker read for a registry host:port.
const (
	trustCA   = "ca.crt"
	trustCert = "client.cert"
	trustKey  = "client.key"
)

// TrustRecord is the JSON content of TrustRecordFile.
type TrustRecord struct {
	Dirs []string `json:"dirs"` // absolute <base>/<host:port> directories
}

// ReadTrustRecord returns the record in configDir (empty when absent).
func ReadTrustRecord(configDir string) (TrustRecord, error) {
	var r TrustRecord
	b, err := os.ReadFile(filepath.Join(configDir, TrustRecordFile))
	if errors.Is(err, fs.ErrNotExist) {
		return r, nil
	}
	if err != nil {
		return r, fmt.Errorf("read trust record: %w", err)
	}
	if len(b) > 64<<10 {
		return r, errors.New("read trust record: too large")
	}
	if err := json.Unmarshal(b, &r); err != nil {
		return r, fmt.Errorf("read trust record: %w", err)
	}
	// Only absolute, clean paths two levels deep are ever removed.
	r.Dirs = slices.DeleteFunc(r.Dirs, func(d string) bool {
		return !filepath.IsAbs(d) || filepath.Clean(d) != d || filepath.Dir(d) == "/" || d == "/"
	})
	return r, nil
}

func writeTrustRecord(configDir string, r TrustRecord) error {
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	return atomicfile.WriteFile(filepath.Join(configDir, TrustRecordFile), append(b, '\n'), 0o644)
}

// writeTrustDirs installs caPEM, certPEM and keyPEM for hostPort under each
// base and records the directories.
func writeTrustDirs(configDir string, bases []string, hostPort string, caPEM, certPEM, keyPEM []byte) ([]string, error) {
	rec, err := ReadTrustRecord(configDir)
	if err != nil {
		return nil, err
	}
	var dirs []string
	for _, base := range bases {
		// Only for a runtime that is installed: /etc/docker exists, say,
		// even if certs.d does not yet.
		if _, err := os.Stat(filepath.Dir(base)); err != nil {
			continue
		}
		dir := filepath.Join(base, hostPort)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return dirs, fmt.Errorf("trust dir: %w", err)
		}
		if !slices.Contains(rec.Dirs, dir) {
			rec.Dirs = append(rec.Dirs, dir)
		}
		// Record before writing the key, so a crash never leaves a key
		// copy that decommission would not know about.
		if err := writeTrustRecord(configDir, rec); err != nil {
			return dirs, err
		}
		for _, f := range []struct {
			name string
			data []byte
			mode os.FileMode
		}{{trustCA, caPEM, 0o644}, {trustCert, certPEM, 0o644}, {trustKey, keyPEM, 0o600}} {
			if err := atomicfile.WriteFile(filepath.Join(dir, f.name), f.data, f.mode); err != nil {
				return dirs, fmt.Errorf("trust dir: %w", err)
			}
		}
		dirs = append(dirs, dir)
	}
	return dirs, nil
}

// RefreshTrustDirs writes a renewed client certificate into every recorded
// trust directory that still exists.
func RefreshTrustDirs(configDir string, certPEM []byte) error {
	rec, err := ReadTrustRecord(configDir)
	if err != nil {
		return err
	}
	var errs []error
	for _, d := range rec.Dirs {
		if _, err := os.Stat(d); err != nil {
			continue
		}
		if err := atomicfile.WriteFile(filepath.Join(d, trustCert), certPEM, 0o644); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
