package deviceapi

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/meshanics/meshanics/internal/errdefs"
	devicev1 "github.com/meshanics/meshanics/proto/meshanics/device/v1"
)

func TestToStatusHidesInternalDetail(t *testing.T) {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	tests := []struct {
		err      error
		code     codes.Code
		wantMsg  string
		decommis bool
	}{
		{fmt.Errorf("register dev-a: %w", errors.New("pq: relation devices does not exist at 10.0.0.5")), codes.Internal, "internal error", false},
		{fmt.Errorf("lookup: %w", errdefs.Invalid("state must be one of …")), codes.InvalidArgument, "state must be one of …", false},
		{fmt.Errorf("store dev-a secret-path: %w", errdefs.ErrNotFound), codes.NotFound, "NotFound", false},
		{fmt.Errorf("x: %w", errdefs.Conflict("already fulfilled")), codes.FailedPrecondition, "already fulfilled", false},
		{fmt.Errorf("ca: %w", errdefs.ErrUnavailable), codes.Unavailable, "Unavailable", false},
		{fmt.Errorf("auth: %w", errdefs.ErrDecommissioned), codes.PermissionDenied, "device decommissioned", true},
		{status.Error(codes.Aborted, "from a dependency: db host 10.0.0.5"), codes.Internal, "internal error", false},
		{resourceExhausted("too big"), codes.ResourceExhausted, "too big", false},
	}
	for _, tt := range tests {
		got := toStatus(log, "Heartbeat", tt.err)
		st := status.Convert(got)
		if st.Code() != tt.code || st.Message() != tt.wantMsg || isDecommissionSignal(got) != tt.decommis {
			t.Errorf("toStatus(%v) = %v %q (decommission %v), want %v %q (%v)", tt.err, st.Code(), st.Message(), isDecommissionSignal(got), tt.code, tt.wantMsg, tt.decommis)
		}
	}
}

func TestAdaptiveInterval(t *testing.T) {
	base := 30 * time.Second
	limit := WidenCap(base, 5*time.Second)
	if limit != 75*time.Second {
		t.Fatalf("WidenCap(30s, 5s) = %v, want 75s ((90s-5s)/1.1 rounded down to 5 s)", limit)
	}
	tests := []struct {
		online int
		budget float64
		want   time.Duration
	}{
		{100000, 0, base},                // off
		{1000, 3300, base},               // well under budget
		{99000, 3300, base},              // exactly base
		{200000, 3300, 65 * time.Second}, // 60.6 s rounded up to 5 s
		{100_000_000, 1000, limit},       // capped
		{0, 3300, base},
	}
	for _, tt := range tests {
		if got := AdaptiveInterval(base, tt.online, tt.budget, limit); got != tt.want {
			t.Errorf("AdaptiveInterval(30s, %d, %v, 75s) = %v, want %v", tt.online, tt.budget, got, tt.want)
		}
	}
	if got := WidenCap(10*time.Second, 5*time.Second); got != 20*time.Second {
		t.Errorf("WidenCap(10s, 5s) = %v, want 20s", got)
	}
	if got := WidenCap(2*time.Second, time.Second); got != 2*time.Second {
		t.Errorf("WidenCap(2s, 1s) = %v, want the base (no widening)", got)
	}
}

func gzipOf(b []byte) []byte {
	var buf bytes.Buffer
	w := gzip.NewWriter(&buf)
	w.Write(b)
	w.Close()
	return buf.Bytes()
}

func TestValidGzip(t *testing.T) {
	ok := gzipOf([]byte("line\n"))
	const limit = 1 << 20
	bomb := gzipOf(make([]byte, limit+1))
	tests := []struct {
		name string
		in   []byte
		want bool
	}{
		{"valid", ok, true},
		{"two members", append(append([]byte{}, ok...), ok...), true},
		{"empty", nil, false},
		{"not gzip", []byte("plain text"), false},
		{"truncated", ok[:len(ok)-4], false},
		{"expands too far", bomb, false},
	}
	for _, tt := range tests {
		err := validGzip(tt.in, limit)
		if (err == nil) != tt.want {
			t.Errorf("validGzip(%s) = %v, want ok=%v", tt.name, err, tt.want)
		}
		if err != nil && !errors.Is(err, errdefs.ErrInvalid) {
			t.Errorf("validGzip(%s) error %v is not ErrInvalid", tt.name, err)
		}
	}
}

func FuzzValidGzip(f *testing.F) {
	f.Add(gzipOf([]byte("hello\n")))
	f.Add([]byte{0x1f, 0x8b})
	f.Fuzz(func(t *testing.T, b []byte) {
		if err := validGzip(b, 1<<20); err != nil && !errors.Is(err, errdefs.ErrInvalid) {
			t.Fatalf("validGzip: error of the wrong kind: %v", err)
		}
	})
}

func TestWriteLimiter(t *testing.T) {
	l := newWriteLimiter(3, 1)
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for i := range 3 {
		if !l.allow("a", t0) {
			t.Fatalf("call %d within the burst refused", i+1)
		}
	}
	if l.allow("a", t0) {
		t.Error("call beyond the burst allowed")
	}
	if !l.allow("b", t0) {
		t.Error("another device shares a's bucket")
	}
	if !l.allow("a", t0.Add(time.Second)) {
		t.Error("no token after one second at 1/s")
	}
	l.prune(t0.Add(time.Hour))
	l.mu.Lock()
	n := len(l.buckets)
	l.mu.Unlock()
	if n != 0 {
		t.Errorf("after an hour %d buckets remain, want 0 (all full)", n)
	}
}

// FuzzValidateReport: whatever a device sends, a report is either refused
// as invalid or comes out bounded, with a reportable state.
func FuzzValidateReport(f *testing.F) {
	f.Add("asg_1", "healthy", "ok", int64(0), int64(0))
	f.Add("asg_1", "failed", "probe: http 503\n", int64(1700000000000), int64(1700000001000))
	f.Add("", "pending", "\x00", int64(-1), int64(0))
	f.Fuzz(func(t *testing.T, id, state, detail string, started, reported int64) {
		r, err := validateReport(&devicev1.ReportArtifactStatusRequest{
			AssignmentId: id, State: state, Detail: detail, StartedUnixMs: started, ReportedUnixMs: reported,
		}, time.Unix(0, 0))
		if err != nil {
			if !errors.Is(err, errdefs.ErrInvalid) {
				t.Fatalf("validateReport error of the wrong kind: %v", err)
			}
			return
		}
		if !r.State.Reportable() || len(r.Detail) > MaxDetailBytes || !utf8.ValidString(r.Detail) || r.AssignmentID == "" || len(r.AssignmentID) > maxIDBytes {
			t.Fatalf("validateReport accepted %+v", r)
		}
	})
}

// FuzzValidateInstalled: a Register or Heartbeat body is refused as invalid
// or encodes to JSON the store accepts.
func FuzzValidateInstalled(f *testing.F) {
	f.Add("model", "detector", "1.0", "", "0.9")
	f.Add("container", "web", "2.0+build.1", strings.Repeat("a", 64), "")
	f.Add("shell", "../etc", "", "zz", "-1")
	f.Fuzz(func(t *testing.T, kind, name, version, sha, prev string) {
		in := []*devicev1.InstalledArtifact{{Kind: kind, Name: name, Version: version, Sha256: sha, PreviousVersion: prev}}
		if err := validateInstalled(in); err != nil {
			if !errors.Is(err, errdefs.ErrInvalid) {
				t.Fatalf("validateInstalled error of the wrong kind: %v", err)
			}
			return
		}
		b, err := installedToJSON(in)
		if err != nil || !json.Valid(b) {
			t.Fatalf("installedToJSON(%v) = %s, %v", in, b, err)
		}
	})
}
