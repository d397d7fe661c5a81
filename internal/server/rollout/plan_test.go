package rollout

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"sort"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/meshanics/meshanics/internal/errdefs"
)

func TestCutsRounding(t *testing.T) {
	plan := documentedPlan() // 1, 10, 50, 100
	tests := []struct {
		n    int
		want []int
	}{
		{1, []int{1, 1, 1, 1}},
		{3, []int{1, 1, 2, 3}},
		{7, []int{1, 1, 4, 7}},
		{1000, []int{10, 100, 500, 1000}},
		{101, []int{2, 11, 51, 101}},
		{0, []int{0, 0, 0, 0}},
	}
	for _, tt := range tests {
		if diff := cmp.Diff(tt.want, plan.Cuts(tt.n)); diff != "" {
			t.Errorf("Cuts(%d) (-want +got):\n%s", tt.n, diff)
		}
	}
}

func TestPartitionOrdersBySHA256AndIsStable(t *testing.T) {
	var names []string
	for i := 0; i < 7; i++ {
		names = append(names, fmt.Sprintf("edge-%d", i))
	}
	st := Strategy{Waves: []WaveSpec{{20, ApprovalAuto}, {100, ApprovalAuto}}}
	got := st.Partition(names)

	sorted := append([]string(nil), names...)
	sort.Slice(sorted, func(i, j int) bool {
		a, b := sha256.Sum256([]byte(sorted[i])), sha256.Sum256([]byte(sorted[j]))
		return hex.EncodeToString(a[:]) < hex.EncodeToString(b[:])
	})
	want := [][]string{sorted[:2], sorted[2:]} // ceil(20 × 7 / 100) = 2
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("Partition (-want +got):\n%s", diff)
	}
	reversed := make([]string, len(names))
	for i, n := range names {
		reversed[len(names)-1-i] = n
	}
	if diff := cmp.Diff(got, st.Partition(append(reversed, names[0]))); diff != "" {
		t.Errorf("Partition depends on input order or duplicates (-first +second):\n%s", diff)
	}
}

func TestPartitionAtLeastOneInWaveZero(t *testing.T) {
	st := Strategy{Waves: []WaveSpec{{1, ApprovalAuto}, {100, ApprovalAuto}}}
	for _, n := range []int{1, 3, 7, 99} {
		names := make([]string, n)
		for i := range names {
			names[i] = fmt.Sprintf("d%d", i)
		}
		p := st.Partition(names)
		if len(p[0]) != 1 || len(p[0])+len(p[1]) != n {
			t.Errorf("Partition(%d devices) sizes = %d, %d; want 1, %d", n, len(p[0]), len(p[1]), n-1)
		}
	}
}

func TestParseStrategy(t *testing.T) {
	ok := []struct {
		in   string
		want Strategy
	}{
		{``, DefaultStrategy()},
		{`null`, DefaultStrategy()},
		{`{}`, DefaultStrategy()},
		{`{"max_failure_rate":0.05}`, Strategy{Waves: DefaultStrategy().Waves, MaxFailureRate: 0.05}},
		{`{"waves":[{"percent":10},{"percent":100,"approval":"manual"}]}`, Strategy{Waves: []WaveSpec{{10, ApprovalAuto}, {100, ApprovalManual}}}},
	}
	for _, tt := range ok {
		got, err := ParseStrategy([]byte(tt.in))
		if err != nil {
			t.Errorf("ParseStrategy(%q) = %v", tt.in, err)
			continue
		}
		if diff := cmp.Diff(tt.want, got); diff != "" {
			t.Errorf("ParseStrategy(%q) (-want +got):\n%s", tt.in, diff)
		}
	}
	bad := []string{
		`{"waves":[{"percent":50},{"percent":50},{"percent":100}]}`,
		`{"waves":[{"percent":50},{"percent":90}]}`,
		`{"waves":[{"percent":0},{"percent":100}]}`,
		`{"waves":[{"percent":101}]}`,
		`{"waves":[{"percent":100,"approval":"later"}]}`,
		`{"waves":[{"percent":0.5},{"percent":100}]}`,
		`{"max_failure_rate":1}`,
		`{"max_failure_rate":-0.1}`,
		`{"wave":[]}`,
		`{"waves":[{"percent":100}]} {}`,
		`[`,
	}
	for _, in := range bad {
		if _, err := ParseStrategy([]byte(in)); !errors.Is(err, errdefs.ErrInvalid) {
			t.Errorf("ParseStrategy(%q) = %v, want invalid", in, err)
		}
	}
}

// TestDecodeErrorsNameNoGoTypes: a wrongly typed strategy or probe gets an
// error naming the field, never a Go type (no internal detail in bodies); a
// probe bound written as 0 is refused, not replaced by its default.
func TestDecodeErrorsNameNoGoTypes(t *testing.T) {
	for _, tt := range []struct {
		in, want string
		parse    func([]byte) error
	}{
		{`{"waves":[{"percent":1.5},{"percent":100}]}`, `field "waves.percent" cannot be number 1.5`, func(b []byte) error { _, err := ParseStrategy(b); return err }},
		{`{"waves":"x"}`, `field "waves" cannot be string`, func(b []byte) error { _, err := ParseStrategy(b); return err }},
		{`[]`, `want a JSON object, not array`, func(b []byte) error { _, err := ParseStrategy(b); return err }},
		{`{"type":"file","target":"/x","attempts":"3"}`, `field "attempts" cannot be string`, func(b []byte) error { _, err := ParseProbe(b); return err }},
		{`{"type":"file",`, `not valid JSON`, func(b []byte) error { _, err := ParseProbe(b); return err }},
		{`{"type":"file","target":"/x","attempts":0}`, `probe attempts must be in [1, 10], got 0`, func(b []byte) error { _, err := ParseProbe(b); return err }},
		{`{"type":"file","target":"/x","timeout_seconds":0}`, `probe timeout_seconds must be in [1, 300], got 0`, func(b []byte) error { _, err := ParseProbe(b); return err }},
		{`{"type":"file","target":"/x","interval_seconds":0}`, `probe interval_seconds must be in [1, 300], got 0`, func(b []byte) error { _, err := ParseProbe(b); return err }},
	} {
		err := tt.parse([]byte(tt.in))
		if !errors.Is(err, errdefs.ErrInvalid) || !strings.Contains(err.Error(), tt.want) || strings.Contains(err.Error(), "Go ") ||
			strings.Contains(err.Error(), "rollout.") || strings.Contains(err.Error(), "Spec") {
			t.Errorf("parse %s = %v, want invalid naming %q and no Go type", tt.in, err, tt.want)
		}
	}
}

func TestAllowedFailures(t *testing.T) {
	tests := []struct {
		rate float64
		n    int
		want int
	}{
		{0, 1000, 0},
		{0.05, 100, 5},
		{0.29, 100, 29},
		{0.05, 10, 0},
		{0.999, 1000, 999},
	}
	for _, tt := range tests {
		if got := AllowedFailures(tt.rate, tt.n); got != tt.want {
			t.Errorf("AllowedFailures(%v, %d) = %d, want %d", tt.rate, tt.n, got, tt.want)
		}
	}
}

func FuzzParseStrategy(f *testing.F) {
	f.Add([]byte(`{"waves":[{"percent":1,"approval":"auto"},{"percent":100}],"max_failure_rate":0.05}`))
	f.Add([]byte(`{"waves":[]}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		st, err := ParseStrategy(data)
		if err != nil {
			return
		}
		if err := st.Validate(); err != nil {
			t.Fatalf("ParseStrategy accepted an invalid strategy: %v", err)
		}
		cuts := st.Cuts(1000)
		if cuts[len(cuts)-1] != 1000 || cuts[0] < 1 {
			t.Fatalf("Cuts(1000) = %v", cuts)
		}
	})
}

func FuzzParseProbe(f *testing.F) {
	f.Add([]byte(`{"type":"http","target":"http://127.0.0.1:8080/healthz","timeout_seconds":5}`))
	f.Add([]byte(`{"type":"exec","target":"/usr/bin/true","args":["-x"]}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		p, err := ParseProbe(data)
		if err != nil {
			return
		}
		if err := p.Validate(); err != nil || p.Attempts == 0 || p.TimeoutSeconds == 0 {
			t.Fatalf("ParseProbe accepted %+v (%v)", p, err)
		}
	})
}
