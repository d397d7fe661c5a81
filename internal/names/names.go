// Package names validates the identifiers of SPEC §2 and §6: device names,
// artifact names and versions. It is a stdlib-only leaf shared by the agent,
// the server and meshctl.
package names

import (
	"fmt"
	"regexp"
	"strings"
)

var (
	deviceRE   = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)
	artifactRE = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,62}$`)
	versionRE  = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._+-]{0,63}$`)
)

// ValidateDevice reports whether s is a valid device name.
func ValidateDevice(s string) error {
	if !deviceRE.MatchString(s) {
		return fmt.Errorf("invalid device name %q: want lower-case letters, digits and '-', 1-63 characters, not starting or ending with '-'", truncate(s))
	}
	return nil
}

// ValidateArtifact reports whether s is a valid artifact name.
func ValidateArtifact(s string) error {
	if !artifactRE.MatchString(s) {
		return fmt.Errorf("invalid artifact name %q: want [a-z0-9][a-z0-9._-]{0,62}", truncate(s))
	}
	return nil
}

// ValidateVersion reports whether s is a valid artifact version.
func ValidateVersion(s string) error {
	if !versionRE.MatchString(s) {
		return fmt.Errorf("invalid version %q: want [A-Za-z0-9][A-Za-z0-9._+-]{0,63}", truncate(s))
	}
	return nil
}

// ParseRef splits "name@version" and validates both halves.
func ParseRef(ref string) (name, version string, err error) {
	name, version, ok := strings.Cut(ref, "@")
	if !ok {
		return "", "", fmt.Errorf("invalid artifact reference %q: want name@version", truncate(ref))
	}
	if err := ValidateArtifact(name); err != nil {
		return "", "", err
	}
	if err := ValidateVersion(version); err != nil {
		return "", "", err
	}
	return name, version, nil
}

// DefaultDevice turns a host name into a device name candidate: lower-cased,
// first DNS label only. The result still has to pass ValidateDevice.
func DefaultDevice(hostname string) string {
	h, _, _ := strings.Cut(strings.ToLower(strings.TrimSpace(hostname)), ".")
	return h
}

// truncate keeps error messages bounded when the input is hostile.
func truncate(s string) string {
	const max = 48
	if len(s) > max {
		return s[:max] + "…"
	}
	return s
}
