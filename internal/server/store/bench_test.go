package store_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/meshanics/meshanics/internal/server/store"
	"github.com/meshanics/meshanics/internal/server/store/storetest"
)

// seedDevices inserts n active devices d-000000… directly.
func seedDevices(b *testing.B, db *store.DB, n int) {
	b.Helper()
	ctx := context.Background()
	err := db.Tx(ctx, func(tx *store.Tx) error {
		for i := 0; i < n; i++ {
			if _, err := tx.Exec(ctx, `INSERT INTO devices (name, id, life, fleet, status, cert_serial, cert_key_sha256,
				cert_not_after, hardware, agent_version, tags, installed, last_seen_at, heartbeat_interval_ms,
				enrolled_with, created_at, updated_at, decommissioned_at)
				VALUES (?, ?, 1, 'f', 'active', ?, '', 0, '{}', '', '{}', '[]', 0, 30000, '', 0, 0, 0)`,
				fmt.Sprintf("d-%06d", i), fmt.Sprintf("id%d", i), fmt.Sprintf("s%d", i)); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		b.Fatal(err)
	}
}

// BenchmarkTouchDevices flushes 5 s of heartbeats of a 100,000-device fleet
// at 30 s intervals (≈16,700 devices) per op (SPEC §12).
func BenchmarkTouchDevices(b *testing.B) {
	db := storetest.SQLite(b)
	const fleet, batch = 100000, 16700
	seedDevices(b, db, fleet)
	ctx := context.Background()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		seen := make(map[string]time.Time, batch)
		now := time.Now()
		for j := 0; j < batch; j++ {
			seen[fmt.Sprintf("d-%06d", (i*batch+j)%fleet)] = now
		}
		if err := db.TouchDevices(ctx, seen); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(batch), "devices/op")
}

// BenchmarkDeviceByName is the cheap lookup on a 100,000-device fleet.
func BenchmarkDeviceByName(b *testing.B) {
	db := storetest.SQLite(b)
	const fleet = 100000
	seedDevices(b, db, fleet)
	ctx := context.Background()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			if _, err := db.DeviceByName(ctx, fmt.Sprintf("d-%06d", i%fleet)); err != nil {
				b.Error(err)
				return
			}
			i += 7919
		}
	})
}

// BenchmarkEnroll is the store's share of one enrollment: spend a token
// use, then record the device (two transactions, SPEC §2, §12).
func BenchmarkEnroll(b *testing.B) {
	db := storetest.SQLite(b)
	ctx := context.Background()
	err := db.Tx(ctx, func(tx *store.Tx) error {
		_, err := tx.CreateEnrollmentToken(ctx, "system", store.NewEnrollmentToken{Hash: store.HashSecret("mst_b"),
			ExpiresAt: time.Now().Add(time.Hour), Uses: b.N + 1})
		return err
	})
	if err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		var tok store.EnrollmentToken
		if err := db.Tx(ctx, func(tx *store.Tx) error {
			var err error
			tok, err = tx.SpendEnrollmentToken(ctx, store.HashSecret("mst_b"), time.Now())
			return err
		}); err != nil {
			b.Fatal(err)
		}
		if err := db.Tx(ctx, func(tx *store.Tx) error {
			_, _, err := tx.EnrollDevice(ctx, store.Enrollment{Name: fmt.Sprintf("d-%d", i), Fleet: "f", HeartbeatInterval: time.Minute,
				TokenID: tok.ID, Cert: store.IssuedCert{Serial: fmt.Sprintf("s%d", i), KeySHA256: keySHA(fmt.Sprint(i)), NotAfter: time.Now()}})
			return err
		}); err != nil {
			b.Fatal(err)
		}
	}
}
