package enrollment

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"regexp"
	"unicode/utf8"

	"github.com/meshanics/meshanics/internal/errdefs"
	"github.com/meshanics/meshanics/internal/names"
	"github.com/meshanics/meshanics/internal/server/ca"
)

// Bounds of an enrollment request (SPEC §13).
const (
	MaxRequestBytes  = 64 << 10
	maxHardwareBytes = 16 << 10
	maxAgentVersion  = 128
	maxTags          = 64
)

// Request is the body of POST /api/v1/enroll (SPEC §2).
type Request struct {
	Token        string            `json:"token"`
	Name         string            `json:"name"`
	CSRPEM       string            `json:"csr_pem"`
	Hardware     json.RawMessage   `json:"hardware,omitempty"`
	Tags         map[string]string `json:"tags,omitempty"`
	AgentVersion string            `json:"agent_version,omitempty"`
}

// LogValue keeps the token and the CSR out of every log line.
func (r Request) LogValue() slog.Value {
	return slog.GroupValue(slog.String("name", r.Name), slog.String("agent_version", r.AgentVersion), slog.String("token", "[redacted]"))
}

var (
	tokenRE      = regexp.MustCompile(`^mst_[a-z2-7]{52}$`)
	tagKeyRE     = regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9._/-]{0,61}[A-Za-z0-9])?$`)
	tagValueRE   = regexp.MustCompile(`^[A-Za-z0-9._:/@+-]{0,128}$`)
	agentVerRE   = regexp.MustCompile(`^[A-Za-z0-9._+:~() -]*$`)
	errMalformed = errdefs.Invalid("request body must be one JSON object {token, name, csr_pem, hardware, tags, agent_version}")
)

// ParseRequest decodes and validates an enrollment request: at most
// MaxRequestBytes, one JSON object with known fields only, a valid device
// name, a CSR within ca.MaxCSRBytes, a hardware object, bounded tags and
// agent version. The token's format is checked too, but whether it is
// valid is the store's business. Errors wrap errdefs.ErrInvalid with a
// message safe for the client.
func ParseRequest(data []byte) (Request, error) {
	if len(data) > MaxRequestBytes {
		return Request{}, errdefs.Invalid(fmt.Sprintf("request body larger than %d bytes", MaxRequestBytes))
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	var r Request
	if err := dec.Decode(&r); err != nil {
		return Request{}, errMalformed
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return Request{}, errMalformed
	}
	if err := r.Validate(); err != nil {
		return Request{}, err
	}
	return r, nil
}

// Validate checks every field (see ParseRequest).
func (r Request) Validate() error {
	if r.Token == "" {
		return errdefs.Invalid("token is required")
	}
	if err := names.ValidateDevice(r.Name); err != nil {
		return errdefs.Invalid(err.Error())
	}
	if r.CSRPEM == "" {
		return errdefs.Invalid("csr_pem is required")
	}
	if len(r.CSRPEM) > ca.MaxCSRBytes {
		return errdefs.Invalid(fmt.Sprintf("csr_pem is larger than %d bytes", ca.MaxCSRBytes))
	}
	if err := validateHardware(r.Hardware); err != nil {
		return err
	}
	if err := ValidateTags(r.Tags); err != nil {
		return err
	}
	if len(r.AgentVersion) > maxAgentVersion || !agentVerRE.MatchString(r.AgentVersion) {
		return errdefs.Invalid(fmt.Sprintf("agent_version must be at most %d printable characters", maxAgentVersion))
	}
	return nil
}

// wellFormedToken reports whether s looks like an enrollment token. A
// malformed token is answered exactly like an unknown one.
func wellFormedToken(s string) bool { return tokenRE.MatchString(s) }

func validateHardware(raw json.RawMessage) error {
	if len(raw) == 0 || string(raw) == "null" {
		return nil
	}
	if len(raw) > maxHardwareBytes {
		return errdefs.Invalid(fmt.Sprintf("hardware is larger than %d bytes", maxHardwareBytes))
	}
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(raw, &obj); err != nil {
		return errdefs.Invalid("hardware must be a JSON object")
	}
	if !utf8.Valid(raw) {
		return errdefs.Invalid("hardware must be UTF-8")
	}
	return nil
}

// ValidateTags checks device tags: at most 64, keys like "site" or
// "example.com/role", values of safe characters up to 128 bytes.
func ValidateTags(tags map[string]string) error {
	if len(tags) > maxTags {
		return errdefs.Invalid(fmt.Sprintf("at most %d tags", maxTags))
	}
	for k, v := range tags {
		if !tagKeyRE.MatchString(k) {
			return errdefs.Invalid(fmt.Sprintf("tag key %q: want letters, digits, '.', '_', '/', '-', 1-63 characters", truncate(k)))
		}
		if !tagValueRE.MatchString(v) {
			return errdefs.Invalid(fmt.Sprintf("tag %q: value must be at most 128 characters of letters, digits and ._:/@+-", k))
		}
	}
	return nil
}

func truncate(s string) string {
	if len(s) > 64 {
		return s[:64] + "…"
	}
	return s
}
