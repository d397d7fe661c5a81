package probe

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meshanics/meshanics/internal/agent/execx"
	"github.com/meshanics/meshanics/internal/errdefs"
	"github.com/meshanics/meshanics/internal/healthprobe"
)

func newTest(allow ...string) (*Prober, *[]time.Duration) {
	p := New(allow)
	var slept []time.Duration
	p.Sleep = func(ctx context.Context, d time.Duration) error { slept = append(slept, d); return ctx.Err() }
	return p, &slept
}

func TestHTTPHealthyAfterRetries(t *testing.T) {
	var calls atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if calls.Add(1) < 3 {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
	}))
	defer srv.Close()
	p, slept := newTest()
	err := p.Run(context.Background(), healthprobe.Spec{Type: "http", Target: srv.URL + "/healthz", Attempts: 3, InitialDelaySeconds: 7, IntervalSeconds: 2})
	if err != nil {
		t.Fatalf("Run = %v, want healthy on the third attempt", err)
	}
	want := []time.Duration{7 * time.Second, 2 * time.Second, 2 * time.Second}
	if len(*slept) != 3 || (*slept)[0] != want[0] || (*slept)[2] != want[2] {
		t.Errorf("slept %v, want %v", *slept, want)
	}
}

func TestHTTPFailsAfterEveryAttempt(t *testing.T) {
	var calls atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		http.Redirect(w, r, "http://192.0.2.1/", http.StatusFound)
	}))
	defer srv.Close()
	p, _ := newTest()
	if err := p.Run(context.Background(), healthprobe.Spec{Type: "http", Target: srv.URL, Attempts: 4}); err == nil {
		t.Fatal("Run(redirecting endpoint) = nil, want failure (redirects are not followed)")
	}
	if calls.Load() != 4 {
		t.Errorf("attempts = %d, want 4", calls.Load())
	}
}

func TestHTTPRefusesNonLoopback(t *testing.T) {
	p, _ := newTest()
	err := p.Run(context.Background(), healthprobe.Spec{Type: "http", Target: "http://192.0.2.1/"})
	if !errors.Is(err, errdefs.ErrInvalid) {
		t.Errorf("Run(non-loopback) = %v, want ErrInvalid", err)
	}
	_, err = loopbackClient().Get("http://[::ffff:192.0.2.1]:1/")
	if !errors.Is(err, errdefs.ErrPermission) {
		t.Errorf("loopback client dialing a non-loopback address = %v, want ErrPermission (a refusal, not a failure)", err)
	}
}

func TestFileProbe(t *testing.T) {
	dir := t.TempDir()
	full, empty := filepath.Join(dir, "full"), filepath.Join(dir, "empty")
	os.WriteFile(full, []byte("x"), 0o644)
	os.WriteFile(empty, nil, 0o644)
	p, _ := newTest()
	for _, tc := range []struct {
		target string
		ok     bool
	}{{full, true}, {empty, false}, {dir, false}, {filepath.Join(dir, "missing"), false}} {
		err := p.Run(context.Background(), healthprobe.Spec{Type: "file", Target: tc.target, Attempts: 1})
		if (err == nil) != tc.ok {
			t.Errorf("file probe %s = %v, want ok=%v", tc.target, err, tc.ok)
		}
	}
}

func TestExecProbe(t *testing.T) {
	trueBin, err := execx.Find("true")
	if err != nil {
		t.Skip(err)
	}
	falseBin, _ := execx.Find("false")
	p, _ := newTest(trueBin, falseBin)
	if err := p.Run(context.Background(), healthprobe.Spec{Type: "exec", Target: trueBin}); err != nil {
		t.Errorf("exec probe true = %v", err)
	}
	if err := p.Run(context.Background(), healthprobe.Spec{Type: "exec", Target: falseBin, Attempts: 2}); err == nil || errors.Is(err, errdefs.ErrPermission) {
		t.Errorf("exec probe false = %v, want plain failure", err)
	}
	strict, _ := newTest()
	if err := strict.Run(context.Background(), healthprobe.Spec{Type: "exec", Target: trueBin}); !errors.Is(err, errdefs.ErrPermission) {
		t.Errorf("exec probe with empty allowlist = %v, want ErrPermission", err)
	}
}
