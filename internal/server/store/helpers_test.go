package store_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meshanics/meshanics/internal/server/store"
)

// mustTx runs fn in a write transaction and fails the test on error.
func mustTx(t *testing.T, db *store.DB, fn func(tx *store.Tx) error) {
	t.Helper()
	if err := db.Tx(context.Background(), fn); err != nil {
		t.Fatalf("Tx: %v", err)
	}
}

func keySHA(seed string) string {
	s := sha256.Sum256([]byte("key:" + seed))
	return hex.EncodeToString(s[:])
}

var serialN atomic.Int64

func newCert(seedKey string) store.IssuedCert {
	return store.IssuedCert{Serial: fmt.Sprintf("%x", 0x1000+serialN.Add(1)), KeySHA256: keySHA(seedKey), NotAfter: time.Now().Add(90 * 24 * time.Hour)}
}

func enroll(t *testing.T, db *store.DB, name, key string, replace bool) (store.Device, store.EnrollOutcome, error) {
	t.Helper()
	var d store.Device
	var out store.EnrollOutcome
	err := db.Tx(context.Background(), func(tx *store.Tx) error {
		var err error
		d, out, err = tx.EnrollDevice(context.Background(), store.Enrollment{
			Name: name, Fleet: "fleet.example", Cert: newCert(key), HeartbeatInterval: 30 * time.Second,
			TokenID: "tok_x", AllowReplace: replace, Tags: map[string]string{"site": "a"},
			Hardware: []byte(`{"arch":"arm64"}`), AgentVersion: "1.0.0",
		})
		return err
	})
	return d, out, err
}

func mustEnroll(t *testing.T, db *store.DB, name, key string) store.Device {
	t.Helper()
	d, _, err := enroll(t, db, name, key, false)
	if err != nil {
		t.Fatalf("EnrollDevice(%s): %v", name, err)
	}
	return d
}

// fakeClock is a settable store clock.
type fakeClock struct{ t time.Time }

func (c *fakeClock) Now() time.Time      { return c.t }
func (c *fakeClock) Add(d time.Duration) { c.t = c.t.Add(d) }
func newClock() *fakeClock               { return &fakeClock{t: time.Date(2026, 11, 27, 3, 0, 0, 0, time.UTC)} }
