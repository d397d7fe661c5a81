package server

import (
	"crypto/tls"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/meshanics/meshanics/internal/server/ca"
)

type testClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *testClock) now() time.Time  { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *testClock) set(t time.Time) { c.mu.Lock(); c.t = t; c.mu.Unlock() }

func TestServingCertRenewedInPlace(t *testing.T) {
	clock := &testClock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	auth, err := ca.Create(filepath.Join(t.TempDir(), "pki"), "fleet.test", clock.now)
	if err != nil {
		t.Fatal(err)
	}
	sc, err := newServingCert(auth, []string{"127.0.0.1"}, quietLog())
	if err != nil {
		t.Fatal(err)
	}
	cfg := sc.use(auth.WebTLSConfig(sc.current()))
	first, _ := cfg.GetCertificate(&tls.ClientHelloInfo{})
	sc.refresh() // not due: same certificate
	if got, _ := cfg.GetCertificate(&tls.ClientHelloInfo{}); got.Leaf.SerialNumber.Cmp(first.Leaf.SerialNumber) != 0 {
		t.Error("serving certificate re-issued before it was due")
	}
	clock.set(first.Leaf.NotAfter.Add(-10 * 24 * time.Hour))
	sc.refresh()
	got, _ := cfg.GetCertificate(&tls.ClientHelloInfo{})
	if got.Leaf.SerialNumber.Cmp(first.Leaf.SerialNumber) == 0 || !got.Leaf.NotAfter.After(first.Leaf.NotAfter) {
		t.Error("serving certificate close to expiry was not renewed in place")
	}
	// The chain the config builder set up (leaf, then the fleet CA for
	// pinning clients) survives renewal.
	if n := len(got.Certificate); n != len(first.Certificate) || n < 2 || string(got.Certificate[n-1]) != string(auth.Certificate().Raw) {
		t.Errorf("renewed chain has %d certificates, want the leaf and the fleet CA", n)
	}
}
