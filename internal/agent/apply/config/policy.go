// Package config applies config artifacts with the place-file activator
// (SPEC §4.3): re-validate the signed delivery profile, check destination
// and reload against the device allowlists, back up the existing file,
// write a temp file in the destination directory and rename it into place,
// run the reload; undo restores the backup and reloads again. Imported by
// the agent's reconciler.
package config

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/meshanics/meshanics/internal/artifact"
	"github.com/meshanics/meshanics/internal/errdefs"
)

// Policy is the device's allowlists. Every empty list denies everything.
type Policy struct {
	Dest  []string // -allow-config-dest: directory prefixes
	Units []string // -allow-reload-unit: systemd unit names
	Exec  []string // -allow-reload-exec: absolute binaries
}

// Check re-validates profile and checks it against the allowlists and the
// live filesystem. A refusal by policy wraps errdefs.ErrPermission.
func (p Policy) Check(profile *artifact.ConfigProfile) error {
	if profile == nil {
		return fmt.Errorf("config: %w: no delivery profile", errdefs.ErrInvalid)
	}
	if err := profile.Validate(); err != nil {
		return fmt.Errorf("config: %w: %v", errdefs.ErrInvalid, err)
	}
	if err := p.checkDest(profile.Destination); err != nil {
		return err
	}
	return p.checkReload(profile.Reload)
}

func (p Policy) checkDest(dest string) error {
	parent := filepath.Dir(dest)
	for _, pre := range p.Dest {
		if !filepath.IsAbs(pre) || filepath.Clean(pre) != pre || !within(dest, pre) {
			continue
		}
		real, err := filepath.EvalSymlinks(parent)
		if err != nil {
			return fmt.Errorf("config destination %s: parent directory: %w", dest, err)
		}
		realPre, err := filepath.EvalSymlinks(pre)
		if err != nil {
			realPre = pre
		}
		if !inside(real, pre) && !inside(real, realPre) {
			return fmt.Errorf("config: %w: destination %s resolves to %s, outside %s", errdefs.ErrPermission, dest, real, pre)
		}
		fi, err := os.Lstat(dest)
		switch {
		case errors.Is(err, fs.ErrNotExist):
			return nil
		case err != nil:
			return fmt.Errorf("config destination %s: %w", dest, err)
		case fi.Mode()&fs.ModeSymlink != 0:
			return fmt.Errorf("config: %w: destination %s is a symlink", errdefs.ErrPermission, dest)
		case !fi.Mode().IsRegular():
			return fmt.Errorf("config: %w: destination %s is not a regular file", errdefs.ErrPermission, dest)
		}
		return nil
	}
	return fmt.Errorf("config: %w: destination %s is not under an allowed prefix (-allow-config-dest)", errdefs.ErrPermission, dest)
}

// checkRealDir accepts a resolved directory inside an allowed prefix (or
// inside the prefix's own real path).
func (p Policy) checkRealDir(real string) error {
	for _, pre := range p.Dest {
		if !filepath.IsAbs(pre) || filepath.Clean(pre) != pre {
			continue
		}
		realPre, err := filepath.EvalSymlinks(pre)
		if err != nil {
			realPre = pre
		}
		if real != "" && (inside(real, pre) || inside(real, realPre)) {
			return nil
		}
	}
	return fmt.Errorf("config: %w: directory %q is outside the allowed prefixes", errdefs.ErrPermission, real)
}

func (p Policy) checkReload(r *artifact.Reload) error {
	switch {
	case r == nil || (r.SystemdUnit == "" && len(r.Exec) == 0):
		return nil
	case r.SystemdUnit != "":
		if !slices.Contains(p.Units, r.SystemdUnit) {
			return fmt.Errorf("config: %w: unit %s is not on the reload allowlist (-allow-reload-unit)", errdefs.ErrPermission, r.SystemdUnit)
		}
	default:
		if !slices.Contains(p.Exec, r.Exec[0]) {
			return fmt.Errorf("config: %w: %s is not on the reload allowlist (-allow-reload-exec)", errdefs.ErrPermission, r.Exec[0])
		}
	}
	return nil
}

// within reports whether p lies strictly below prefix, matching whole path
// components (/etc/app/x is within /etc/app; /etc/app-evil/x is not).
func within(p, prefix string) bool {
	if prefix == "/" {
		return p != "/" && strings.HasPrefix(p, "/")
	}
	return strings.HasPrefix(p, prefix+"/")
}

// inside is within or equal.
func inside(p, prefix string) bool { return p == prefix || within(p, prefix) }
