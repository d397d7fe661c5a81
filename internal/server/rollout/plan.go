// Package rollout is the rollout engine of SPEC §7: the strategy and its
// deterministic wave partition, a pure transition core (Transition) that
// decides every rollout state change, and the Runner that wraps it with the
// store, serves assignments on heartbeats and handles device reports.
//
// Imported by the server composition root, deviceapi (through its own
// interface) and operatorapi. The pure core (plan.go, core.go) does no I/O.
package rollout

import (
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"sort"

	"github.com/meshanics/meshanics/internal/errdefs"
)

// Approval gates the start of a wave.
type Approval string

const (
	ApprovalAuto   Approval = "auto"
	ApprovalManual Approval = "manual"
)

// Policy is what abort does to devices that already applied the artifact.
type Policy string

const (
	PolicyKeep   Policy = "keep"
	PolicyRevert Policy = "revert"
)

// ParsePolicy accepts "keep" (also the empty string, the default) and "revert".
func ParsePolicy(s string) (Policy, error) {
	switch s {
	case "", string(PolicyKeep):
		return PolicyKeep, nil
	case string(PolicyRevert):
		return PolicyRevert, nil
	}
	return "", errdefs.Invalid(fmt.Sprintf("abort policy must be keep or revert, not %q", truncate(s)))
}

// WaveSpec is one wave of a strategy: the cumulative percentage of the group
// it brings the rollout to, and how it is started.
type WaveSpec struct {
	Percent  int      `json:"percent"`
	Approval Approval `json:"approval"`
}

// Strategy is the wave plan and failure tolerance of SPEC §7.
type Strategy struct {
	Waves          []WaveSpec `json:"waves"`
	MaxFailureRate float64    `json:"max_failure_rate"`
}

// maxWaves bounds a strategy; nobody needs more stages than percent points.
const maxWaves = 100

// DefaultStrategy is one automatic wave of 100 % with tolerance 0.
func DefaultStrategy() Strategy {
	return Strategy{Waves: []WaveSpec{{Percent: 100, Approval: ApprovalAuto}}}
}

// ParseStrategy decodes a strategy document (nil or empty = the default),
// fills defaults and validates it. Percents are whole numbers: the cut of a
// wave must be exact integer arithmetic to be reproducible.
func ParseStrategy(raw json.RawMessage) (Strategy, error) {
	if len(bytes.TrimSpace(raw)) == 0 || bytes.Equal(bytes.TrimSpace(raw), []byte("null")) {
		return DefaultStrategy(), nil
	}
	var s Strategy
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&s); err != nil {
		return Strategy{}, errdefs.Invalid(fmt.Sprintf("strategy: %s (waves[].percent is a whole number 1-100, approval auto|manual, max_failure_rate a number in [0,1))", decodeProblem(err)))
	}
	if dec.More() {
		return Strategy{}, errdefs.Invalid("strategy: trailing data")
	}
	if len(s.Waves) == 0 {
		s.Waves = DefaultStrategy().Waves
	}
	for i := range s.Waves {
		if s.Waves[i].Approval == "" {
			s.Waves[i].Approval = ApprovalAuto
		}
	}
	return s, s.Validate()
}

// Validate checks the rules of SPEC §7.
func (s Strategy) Validate() error {
	if len(s.Waves) == 0 || len(s.Waves) > maxWaves {
		return errdefs.Invalid(fmt.Sprintf("strategy needs 1-%d waves", maxWaves))
	}
	prev := 0
	for i, w := range s.Waves {
		if w.Percent <= prev || w.Percent > 100 {
			return errdefs.Invalid(fmt.Sprintf("wave %d: percents must strictly increase within 1-100, got %d after %d", i, w.Percent, prev))
		}
		if w.Approval != ApprovalAuto && w.Approval != ApprovalManual {
			return errdefs.Invalid(fmt.Sprintf("wave %d: approval must be auto or manual, not %q", i, truncate(string(w.Approval))))
		}
		prev = w.Percent
	}
	if prev != 100 {
		return errdefs.Invalid(fmt.Sprintf("the last wave must be 100 percent, got %d", prev))
	}
	if math.IsNaN(s.MaxFailureRate) || s.MaxFailureRate < 0 || s.MaxFailureRate >= 1 {
		return errdefs.Invalid("max_failure_rate must be in [0, 1)")
	}
	return nil
}

// Cuts returns, for a group of n devices, the end (exclusive) of each wave in
// the ordered device list: ceil(percent_i × n / 100), at least 1 for wave 0.
func (s Strategy) Cuts(n int) []int {
	cuts := make([]int, len(s.Waves))
	for i, w := range s.Waves {
		cuts[i] = (w.Percent*n + 99) / 100
	}
	if n > 0 && cuts[0] < 1 {
		cuts[0] = 1
	}
	return cuts
}

// Partition orders devices by the sha256 of their name (so the same group
// always gives the same canary cohort) and splits them at Cuts. Duplicate
// names are kept once. The result has one slice per wave, possibly empty.
func (s Strategy) Partition(devices []string) [][]string {
	type keyed struct {
		sum  [sha256.Size]byte
		name string
	}
	seen := make(map[string]bool, len(devices))
	ks := make([]keyed, 0, len(devices))
	for _, d := range devices {
		if seen[d] {
			continue
		}
		seen[d] = true
		ks = append(ks, keyed{sha256.Sum256([]byte(d)), d})
	}
	sort.Slice(ks, func(i, j int) bool {
		if c := bytes.Compare(ks[i].sum[:], ks[j].sum[:]); c != 0 {
			return c < 0
		}
		return ks[i].name < ks[j].name
	})
	cuts := s.Cuts(len(ks))
	out := make([][]string, len(cuts))
	start := 0
	for i, end := range cuts {
		wave := make([]string, 0, end-start)
		for _, k := range ks[start:end] {
			wave = append(wave, k.name)
		}
		out[i] = wave
		start = end
	}
	return out
}

// AllowedFailures is the largest failures − acknowledged that does not halt:
// floor(max_failure_rate × n). The epsilon absorbs binary rounding of the
// rate (0.29 × 100 is 28.999999999999996 in float64) so that a rate stated in
// decimal means what the operator wrote.
func AllowedFailures(rate float64, n int) int {
	return int(math.Floor(rate*float64(n) + 1e-9))
}

// decodeProblem describes a decoding error of a nested document without the
// Go type names the decoder puts in its messages (no internal detail in
// error bodies).
func decodeProblem(err error) string {
	var te *json.UnmarshalTypeError
	var se *json.SyntaxError
	switch {
	case errors.As(err, &te) && te.Field != "":
		return fmt.Sprintf("field %q cannot be %s", te.Field, truncate(te.Value))
	case errors.As(err, &te):
		return fmt.Sprintf("want a JSON object, not %s", truncate(te.Value))
	case errors.As(err, &se), errors.Is(err, io.ErrUnexpectedEOF):
		return "not valid JSON"
	}
	return truncate(err.Error()) // "json: unknown field \"x\"" names nothing internal
}

func truncate(s string) string {
	if len(s) > 64 {
		return s[:64] + "…"
	}
	return s
}
