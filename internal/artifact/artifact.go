// Package artifact defines the signed descriptors of SPEC §6 (model manifest,
// config delivery profile, container descriptor), their validation, and the
// TUF target path and custom metadata that carry them. The server validates a
// descriptor at publish; the agent re-validates the signed copy before it
// acts on it. Stdlib-only leaf.
package artifact

import (
	"encoding/json"
	"fmt"
	"path"
	"strings"

	"github.com/meshanics/meshanics/internal/names"
)

// Kinds.
const (
	KindModel     = "model"
	KindConfig    = "config"
	KindContainer = "container"
)

// ValidKind reports whether k is one of the three kinds.
func ValidKind(k string) bool { return k == KindModel || k == KindConfig || k == KindContainer }

// TargetPath is the TUF target path of an artifact file:
// artifacts/<kind>/<name>/<version>/<file>.
func TargetPath(kind, name, version, file string) string {
	return path.Join("artifacts", kind, name, version, file)
}

// ParseTargetPath splits a target path and validates every element.
func ParseTargetPath(p string) (kind, name, version, file string, err error) {
	parts := strings.Split(p, "/")
	if len(parts) != 5 || parts[0] != "artifacts" {
		return "", "", "", "", fmt.Errorf("target path %q: want artifacts/<kind>/<name>/<version>/<file>", p)
	}
	kind, name, version, file = parts[1], parts[2], parts[3], parts[4]
	if !ValidKind(kind) {
		return "", "", "", "", fmt.Errorf("target path %q: unknown kind", p)
	}
	if err := names.ValidateArtifact(name); err != nil {
		return "", "", "", "", err
	}
	if err := names.ValidateVersion(version); err != nil {
		return "", "", "", "", err
	}
	if err := ValidateFileName(file); err != nil {
		return "", "", "", "", err
	}
	return kind, name, version, file, nil
}

// ValidateFileName accepts a single safe path element.
func ValidateFileName(f string) error {
	if f == "" || len(f) > 128 || f == "." || f == ".." || strings.ContainsAny(f, "/\\\x00") {
		return fmt.Errorf("invalid file name %q", f)
	}
	return nil
}

// Custom is the custom metadata of a TUF target: the kind and exactly the
// descriptor that matches it.
type Custom struct {
	Kind      string         `json:"kind"`
	Name      string         `json:"name"`
	Version   string         `json:"version"`
	Manifest  *ModelManifest `json:"manifest,omitempty"`
	Config    *ConfigProfile `json:"config,omitempty"`
	Container *ContainerSpec `json:"container,omitempty"`
}

// Validate checks that the descriptor present matches the kind and is valid.
func (c Custom) Validate() error {
	if !ValidKind(c.Kind) {
		return fmt.Errorf("unknown artifact kind %q", c.Kind)
	}
	if err := names.ValidateArtifact(c.Name); err != nil {
		return err
	}
	if err := names.ValidateVersion(c.Version); err != nil {
		return err
	}
	switch c.Kind {
	case KindModel:
		if c.Manifest == nil || c.Config != nil || c.Container != nil {
			return fmt.Errorf("model artifact needs a manifest and nothing else")
		}
		return c.Manifest.Validate()
	case KindConfig:
		if c.Config == nil || c.Manifest != nil || c.Container != nil {
			return fmt.Errorf("config artifact needs a delivery profile and nothing else")
		}
		return c.Config.Validate()
	default:
		if c.Container == nil || c.Manifest != nil || c.Config != nil {
			return fmt.Errorf("container artifact needs a container descriptor and nothing else")
		}
		return c.Container.Validate()
	}
}

// MaxDescriptorBytes bounds any descriptor document read from outside.
const MaxDescriptorBytes = 64 << 10

// DecodeStrict decodes one JSON document into v, refusing unknown fields,
// trailing data and documents over MaxDescriptorBytes.
func DecodeStrict(data []byte, v any) error {
	if len(data) > MaxDescriptorBytes {
		return fmt.Errorf("descriptor is %d bytes, at most %d allowed", len(data), MaxDescriptorBytes)
	}
	dec := json.NewDecoder(strings.NewReader(string(data)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("decode descriptor: %w", err)
	}
	if dec.More() {
		return fmt.Errorf("decode descriptor: trailing data")
	}
	return nil
}

// targetCustom is the custom field of a TUF target. TUF signs canonical
// JSON, which has no floating-point numbers, while descriptors may carry
// them (model metrics such as 0.61). So the descriptor travels as one JSON
// string inside the signed metadata; the signature covers it all the same.
type targetCustom struct {
	Descriptor string `json:"meshanics_descriptor"`
}

// EncodeTargetCustom returns the TUF target custom metadata for c.
func EncodeTargetCustom(c Custom) (json.RawMessage, error) {
	d, err := json.Marshal(c)
	if err != nil {
		return nil, fmt.Errorf("encode descriptor: %w", err)
	}
	return json.Marshal(targetCustom{Descriptor: string(d)})
}

// DecodeTargetCustom parses and validates the custom metadata of a signed
// target (strict: unknown fields refused, bounded size).
func DecodeTargetCustom(raw []byte) (Custom, error) {
	var tc targetCustom
	if len(raw) > 2*MaxDescriptorBytes {
		return Custom{}, fmt.Errorf("target custom metadata is larger than %d bytes", 2*MaxDescriptorBytes)
	}
	dec := json.NewDecoder(strings.NewReader(string(raw)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&tc); err != nil || dec.More() {
		return Custom{}, fmt.Errorf("target custom metadata: want {\"meshanics_descriptor\":\"…\"}")
	}
	var c Custom
	if err := DecodeStrict([]byte(tc.Descriptor), &c); err != nil {
		return Custom{}, err
	}
	if err := c.Validate(); err != nil {
		return Custom{}, err
	}
	return c, nil
}
