package deviceapi

import (
	"encoding/json"
	"fmt"
	"regexp"
	"unicode/utf8"

	"github.com/meshanics/meshanics/internal/artifact"
	"github.com/meshanics/meshanics/internal/errdefs"
	"github.com/meshanics/meshanics/internal/names"
	devicev1 "github.com/meshanics/meshanics/proto/meshanics/device/v1"
)

// Bounds on what a device may send (SPEC §13).
const (
	maxShortField   = 256 // hardware strings, agent version, tag values
	maxAccelerators = 32
	maxTags         = 64
	maxInstalled    = 256
	MaxDetailBytes  = 4096
	maxIDBytes      = 128
	maxAgentVersion = 128
	maxTagKeyBytes  = 63
	sha256HexLen    = 64
)

var (
	tagKeyRE = regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9._/-]{0,62})$`)
	hexRE    = regexp.MustCompile(`^[0-9a-f]{64}$`)
	idRE     = regexp.MustCompile(`^[A-Za-z0-9._:-]{1,128}$`)
)

// printable reports whether s is valid UTF-8 without control characters,
// at most max bytes.
func printable(s string, max int) bool {
	if len(s) > max || !utf8.ValidString(s) {
		return false
	}
	for _, r := range s {
		if r < 0x20 || r == 0x7f {
			return false
		}
	}
	return true
}

// hardwareJSON is the SPEC §4.2 shape of a hardware profile.
type hardwareJSON struct {
	Model        string   `json:"model"`
	SoC          string   `json:"soc"`
	Arch         string   `json:"arch"`
	MemoryBytes  uint64   `json:"memory_bytes"`
	CPUCores     uint32   `json:"cpu_cores"`
	Accelerators []string `json:"accelerators"`
	OS           string   `json:"os"`
	Kernel       string   `json:"kernel"`
}

func hardwareFromProto(h *devicev1.HardwareProfile) (json.RawMessage, error) {
	if h == nil {
		h = &devicev1.HardwareProfile{}
	}
	for what, v := range map[string]string{"model": h.Model, "soc": h.Soc, "arch": h.Arch, "os": h.Os, "kernel": h.Kernel} {
		if !printable(v, maxShortField) {
			return nil, errdefs.Invalid(fmt.Sprintf("hardware.%s must be printable UTF-8 of at most %d bytes", what, maxShortField))
		}
	}
	if len(h.Accelerators) > maxAccelerators {
		return nil, errdefs.Invalid(fmt.Sprintf("hardware.accelerators: at most %d entries", maxAccelerators))
	}
	acc := make([]string, 0, len(h.Accelerators))
	for _, a := range h.Accelerators {
		if a == "" || !printable(a, 64) {
			return nil, errdefs.Invalid("hardware.accelerators: each entry must be printable, 1-64 bytes")
		}
		acc = append(acc, a)
	}
	b, err := json.Marshal(hardwareJSON{
		Model: h.Model, SoC: h.Soc, Arch: h.Arch, MemoryBytes: h.MemoryBytes, CPUCores: h.CpuCores,
		Accelerators: acc, OS: h.Os, Kernel: h.Kernel,
	})
	if err != nil {
		return nil, fmt.Errorf("encode hardware: %w", err)
	}
	return b, nil
}

func validateTags(tags map[string]string) error {
	if len(tags) > maxTags {
		return errdefs.Invalid(fmt.Sprintf("tags: at most %d", maxTags))
	}
	for k, v := range tags {
		if !tagKeyRE.MatchString(k) {
			return errdefs.Invalid("tags: keys must match [A-Za-z0-9][A-Za-z0-9._/-]{0,62}")
		}
		if !printable(v, maxShortField) {
			return errdefs.Invalid(fmt.Sprintf("tags: values must be printable UTF-8 of at most %d bytes", maxShortField))
		}
	}
	return nil
}

// installedJSON is the stored shape of one installed artifact.
type installedJSON struct {
	Kind            string `json:"kind"`
	Name            string `json:"name"`
	Version         string `json:"version"`
	SHA256          string `json:"sha256,omitempty"`
	PreviousVersion string `json:"previous_version,omitempty"`
}

func validateInstalled(in []*devicev1.InstalledArtifact) error {
	if len(in) > maxInstalled {
		return errdefs.Invalid(fmt.Sprintf("installed: at most %d entries", maxInstalled))
	}
	seen := make(map[string]bool, len(in))
	for _, a := range in {
		if a == nil {
			return errdefs.Invalid("installed: empty entry")
		}
		if !artifact.ValidKind(a.Kind) {
			return errdefs.Invalid("installed: kind must be model, config or container")
		}
		if err := names.ValidateArtifact(a.Name); err != nil {
			return errdefs.Invalid("installed: " + err.Error())
		}
		if seen[a.Name] {
			return errdefs.Invalid("installed: one entry per artifact name")
		}
		seen[a.Name] = true
		if err := names.ValidateVersion(a.Version); err != nil {
			return errdefs.Invalid("installed: " + err.Error())
		}
		if a.PreviousVersion != "" {
			if err := names.ValidateVersion(a.PreviousVersion); err != nil {
				return errdefs.Invalid("installed: previous_version: " + err.Error())
			}
		}
		if a.Sha256 != "" && !hexRE.MatchString(a.Sha256) {
			return errdefs.Invalid("installed: sha256 must be 64 lower-case hex digits")
		}
	}
	return nil
}

func installedToJSON(in []*devicev1.InstalledArtifact) (json.RawMessage, error) {
	out := make([]installedJSON, 0, len(in))
	for _, a := range in {
		out = append(out, installedJSON{Kind: a.Kind, Name: a.Name, Version: a.Version, SHA256: a.Sha256, PreviousVersion: a.PreviousVersion})
	}
	b, err := json.Marshal(out)
	if err != nil {
		return nil, fmt.Errorf("encode installed: %w", err)
	}
	return b, nil
}
