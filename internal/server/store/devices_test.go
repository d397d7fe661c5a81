package store_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/meshanics/meshanics/internal/errdefs"
	"github.com/meshanics/meshanics/internal/server/store"
	"github.com/meshanics/meshanics/internal/server/store/storetest"
	"github.com/meshanics/meshanics/internal/states"
)

func TestEnrollNewDevice(t *testing.T) {
	t.Parallel()
	forEachEngine(t, func(t *testing.T, db *store.DB) {
		ctx := context.Background()
		d, out, err := enroll(t, db, "edge-1", "k1", false)
		if err != nil || out != store.EnrollNew {
			t.Fatalf("EnrollDevice = %v, %v; want new", out, err)
		}
		got, err := db.DeviceByName(ctx, "edge-1")
		if err != nil {
			t.Fatalf("DeviceByName: %v", err)
		}
		if diff := cmp.Diff(d, got); diff != "" {
			t.Errorf("DeviceByName differs from EnrollDevice result (-enroll +get):\n%s", diff)
		}
		if got.Status != store.DeviceActive || got.Life != 1 || got.Fleet != "fleet.example" || got.CertKeySHA256 != keySHA("k1") ||
			got.Tags["site"] != "a" || string(got.Installed) != "[]" || got.HeartbeatInterval != 30*time.Second || got.EnrolledWith != "tok_x" {
			t.Errorf("DeviceByName = %+v", got)
		}
		if st, err := db.CertAuth(ctx, "edge-1", got.CertSerial); err != nil || st != store.CertCurrent {
			t.Errorf("CertAuth(current) = %v, %v; want current", st, err)
		}
		if st, err := db.CertAuth(ctx, "other", got.CertSerial); err != nil || st != store.CertUnknown {
			t.Errorf("CertAuth(other name) = %v, %v; want unknown", st, err)
		}
		if _, err := db.DeviceByName(ctx, "nope"); !errors.Is(err, errdefs.ErrNotFound) {
			t.Errorf("DeviceByName(nope) = %v, want ErrNotFound", err)
		}
	})
}

func TestEnrollSameNameRules(t *testing.T) {
	t.Parallel()
	forEachEngine(t, func(t *testing.T, db *store.DB) {
		ctx := context.Background()
		first := mustEnroll(t, db, "edge-1", "k1")

		// Same key: upgrade, same record.
		d, out, err := enroll(t, db, "edge-1", "k1", false)
		if err != nil || out != store.EnrollSameKey || d.ID != first.ID || d.CertSerial == first.CertSerial {
			t.Fatalf("re-enroll same key = %+v, %v, %v; want same_key, same id, new serial", d, out, err)
		}
		// Other key without replace: conflict, nothing changes.
		if _, _, err := enroll(t, db, "edge-1", "k2", false); !errors.Is(err, errdefs.ErrConflict) {
			t.Fatalf("enroll other key = %v, want ErrConflict", err)
		}
		if o, err := db.CheckEnrollment(ctx, "edge-1", keySHA("k2"), false); !errors.Is(err, errdefs.ErrConflict) {
			t.Errorf("CheckEnrollment(other key) = %v, %v; want ErrConflict", o, err)
		}
		// Other key with replace: old certificates revoked, history kept.
		if o, err := db.CheckEnrollment(ctx, "edge-1", keySHA("k2"), true); err != nil || o != store.EnrollReplaced {
			t.Errorf("CheckEnrollment(replace) = %v, %v; want replaced", o, err)
		}
		r, out, err := enroll(t, db, "edge-1", "k2", true)
		if err != nil || out != store.EnrollReplaced || r.ID != first.ID || r.CertKeySHA256 != keySHA("k2") {
			t.Fatalf("replace = %+v, %v, %v", r, out, err)
		}
		for _, serial := range []string{first.CertSerial, d.CertSerial} {
			if st, _ := db.CertAuth(ctx, "edge-1", serial); st != store.CertRevoked {
				t.Errorf("CertAuth(old serial %s) = %v, want revoked", serial, st)
			}
		}
		if st, _ := db.CertAuth(ctx, "edge-1", r.CertSerial); st != store.CertCurrent {
			t.Errorf("CertAuth(new serial) = %v, want current", st)
		}
		certs, err := db.DeviceCertificates(ctx, "edge-1")
		if err != nil || len(certs) != 3 {
			t.Errorf("DeviceCertificates = %d, %v; want 3", len(certs), err)
		}
		events, _, err := db.ListAudit(ctx, store.AuditFilter{Type: "device.enroll", Subject: "edge-1"}, store.Page{})
		if err != nil || len(events) != 3 {
			t.Errorf("device.enroll events = %d, %v; want 3", len(events), err)
		}
	})
}

func TestDecommissionThenEnrollNewLife(t *testing.T) {
	t.Parallel()
	forEachEngine(t, func(t *testing.T, db *store.DB) {
		ctx := context.Background()
		first := mustEnroll(t, db, "edge-1", "k1")
		var dec store.Device
		mustTx(t, db, func(tx *store.Tx) error {
			var err error
			dec, err = tx.DecommissionDevice(ctx, "user:admin", "edge-1")
			return err
		})
		if dec.Status != store.DeviceDecommissioned || dec.DecommissionedAt.IsZero() || dec.Presence(time.Now()) != states.Decommissioned {
			t.Fatalf("DecommissionDevice = %+v", dec)
		}
		if st, _ := db.CertAuth(ctx, "edge-1", first.CertSerial); st != store.CertDecommissioned {
			t.Errorf("CertAuth after decommission = %v, want decommissioned", st)
		}
		err := db.Tx(ctx, func(tx *store.Tx) error { _, err := tx.DecommissionDevice(ctx, "user:admin", "edge-1"); return err })
		if !errors.Is(err, errdefs.ErrConflict) {
			t.Errorf("second decommission = %v, want ErrConflict", err)
		}
		err = db.RegisterDevice(ctx, "edge-1", store.Registration{AgentVersion: "2", Now: time.Now()})
		if !errors.Is(err, errdefs.ErrDecommissioned) {
			t.Errorf("RegisterDevice(decommissioned) = %v, want ErrDecommissioned", err)
		}

		// A new device (new key) takes the name as a new life.
		d, out, err := enroll(t, db, "edge-1", "k9", false)
		if err != nil || out != store.EnrollNewLife || d.Life != 2 || d.ID == first.ID || d.Status != store.DeviceActive {
			t.Fatalf("enroll after decommission = %+v, %v, %v; want new life 2", d, out, err)
		}
		// The old life's certificate still gets the decommission signal.
		if st, _ := db.CertAuth(ctx, "edge-1", first.CertSerial); st != store.CertDecommissioned {
			t.Errorf("CertAuth(old life) = %v, want decommissioned", st)
		}
		if st, _ := db.CertAuth(ctx, "edge-1", d.CertSerial); st != store.CertCurrent {
			t.Errorf("CertAuth(new life) = %v, want current", st)
		}
		lives, err := db.DeviceLives(ctx, "edge-1")
		if err != nil || len(lives) != 1 || lives[0].ID != first.ID || lives[0].Life != 1 || lives[0].DecommissionedAt.IsZero() {
			t.Fatalf("DeviceLives = %+v, %v", lives, err)
		}
	})
}

func TestDecommissionUnknownDevice(t *testing.T) {
	t.Parallel()
	forEachEngine(t, func(t *testing.T, db *store.DB) {
		ctx := context.Background()
		err := db.Tx(ctx, func(tx *store.Tx) error { _, err := tx.DecommissionDevice(ctx, "user:a", "ghost"); return err })
		if !errors.Is(err, errdefs.ErrNotFound) {
			t.Errorf("DecommissionDevice(ghost) = %v, want ErrNotFound", err)
		}
	})
}

func TestEnrollDuplicateSerialConflicts(t *testing.T) {
	t.Parallel()
	forEachEngine(t, func(t *testing.T, db *store.DB) {
		ctx := context.Background()
		d := mustEnroll(t, db, "edge-1", "k1")
		err := db.Tx(ctx, func(tx *store.Tx) error {
			_, _, err := tx.EnrollDevice(ctx, store.Enrollment{Name: "edge-2", Fleet: "f", HeartbeatInterval: time.Second,
				Cert: store.IssuedCert{Serial: d.CertSerial, KeySHA256: keySHA("k2"), NotAfter: time.Now()}})
			return err
		})
		if !errors.Is(err, errdefs.ErrConflict) {
			t.Fatalf("enroll with reused serial = %v, want ErrConflict", err)
		}
		if _, err := db.DeviceByName(ctx, "edge-2"); !errors.Is(err, errdefs.ErrNotFound) {
			t.Errorf("edge-2 exists after failed enrollment: %v", err)
		}
	})
}

func TestRegisterDevice(t *testing.T) {
	t.Parallel()
	forEachEngine(t, func(t *testing.T, db *store.DB) {
		ctx := context.Background()
		mustEnroll(t, db, "edge-1", "k1")
		now := time.Now().UTC().Truncate(time.Millisecond)
		reg := store.Registration{Hardware: []byte(`{"arch":"amd64","cpu_cores":4}`), AgentVersion: "1.2.0",
			Tags: map[string]string{"role": "cam"}, Installed: []byte(`[{"name":"m","version":"1"}]`), Now: now}
		for i := 0; i < 2; i++ { // idempotent: the second call changes nothing but last_seen
			if err := db.RegisterDevice(ctx, "edge-1", reg); err != nil {
				t.Fatalf("RegisterDevice #%d: %v", i+1, err)
			}
		}
		d, _ := db.DeviceByName(ctx, "edge-1")
		want := map[string]string{"site": "a", "role": "cam"}
		if d.AgentVersion != "1.2.0" || !cmp.Equal(d.Tags, want) || !d.LastSeen.Equal(now) || string(d.Installed) != `[{"name":"m","version":"1"}]` {
			t.Errorf("after RegisterDevice: %+v", d)
		}
		events, total, _ := db.ListAudit(ctx, store.AuditFilter{Type: "device.register"}, store.Page{})
		if total != 1 || events[0].Actor != "device:edge-1" {
			t.Errorf("device.register events = %d (%+v), want exactly 1 by device:edge-1", total, events)
		}
		// The tag index follows: filter by the registered tag.
		items, n, err := db.ListDevices(ctx, store.DeviceFilter{Tags: map[string]string{"role": "cam"}}, store.Page{})
		if err != nil || n != 1 || items[0].Name != "edge-1" {
			t.Errorf("ListDevices(role=cam) = %d, %v", n, err)
		}
		if err := db.RegisterDevice(ctx, "edge-1", store.Registration{Hardware: []byte(`{bad`)}); !errors.Is(err, errdefs.ErrInvalid) {
			t.Errorf("RegisterDevice(bad JSON) = %v, want ErrInvalid", err)
		}
		if err := db.RegisterDevice(ctx, "ghost", reg); !errors.Is(err, errdefs.ErrNotFound) {
			t.Errorf("RegisterDevice(ghost) = %v, want ErrNotFound", err)
		}
	})
}

// A device's declared tags never override its enrollment token's: the
// token's tags are the operator's word, at Register as at enrollment.
func TestRegisterKeepsTheTokensTags(t *testing.T) {
	t.Parallel()
	forEachEngine(t, func(t *testing.T, db *store.DB) {
		ctx := context.Background()
		var tok store.EnrollmentToken
		mustTx(t, db, func(tx *store.Tx) error {
			var err error
			tok, err = tx.CreateEnrollmentToken(ctx, "user:admin", store.NewEnrollmentToken{Hash: store.HashSecret("mst_tags"),
				ExpiresAt: time.Now().Add(time.Hour), Uses: 1, Tags: map[string]string{"group": "canary"}})
			if err != nil {
				return err
			}
			_, _, err = tx.EnrollDevice(ctx, store.Enrollment{Name: "edge-1", Fleet: "f", Cert: newCert("k1"),
				HeartbeatInterval: 30 * time.Second, TokenID: tok.ID, Tags: map[string]string{"group": "canary"}})
			return err
		})
		reg := store.Registration{Hardware: []byte(`{}`), Tags: map[string]string{"group": "stable", "role": "cam"}, Now: time.Now()}
		if err := db.RegisterDevice(ctx, "edge-1", reg); err != nil {
			t.Fatal(err)
		}
		d, _ := db.DeviceByName(ctx, "edge-1")
		if want := map[string]string{"group": "canary", "role": "cam"}; !cmp.Equal(d.Tags, want) {
			t.Errorf("tags after a Register declaring group=stable = %v, want %v (the token's group stays)", d.Tags, want)
		}
		items, n, err := db.ListDevices(ctx, store.DeviceFilter{Tags: map[string]string{"group": "stable"}}, store.Page{})
		if err != nil || n != 0 {
			t.Errorf("ListDevices(group=stable) = %v (%d), %v; want none", items, n, err)
		}
	})
}

func TestRenewDeviceCert(t *testing.T) {
	t.Parallel()
	forEachEngine(t, func(t *testing.T, db *store.DB) {
		ctx := context.Background()
		d := mustEnroll(t, db, "edge-1", "k1")
		renewed := newCert("k1")
		var got store.Device
		mustTx(t, db, func(tx *store.Tx) error {
			var err error
			got, err = tx.RenewDeviceCert(ctx, "edge-1", d.CertSerial, renewed)
			return err
		})
		if got.CertSerial != renewed.Serial || got.ID != d.ID {
			t.Errorf("RenewDeviceCert = %+v", got)
		}
		for _, s := range []string{d.CertSerial, renewed.Serial} {
			if st, _ := db.CertAuth(ctx, "edge-1", s); st != store.CertCurrent {
				t.Errorf("CertAuth(%s) after renewal = %v, want current (same key)", s, st)
			}
		}
		// A different key cannot renew.
		err := db.Tx(ctx, func(tx *store.Tx) error {
			_, err := tx.RenewDeviceCert(ctx, "edge-1", renewed.Serial, newCert("evil"))
			return err
		})
		if !errors.Is(err, errdefs.ErrPermission) {
			t.Errorf("renew with other key = %v, want ErrPermission", err)
		}
	})
}

func TestListDevicesPaginationAndFilters(t *testing.T) {
	t.Parallel()
	clock := newClock()
	storetest.ForEachEngineWith(t, storetest.Options{Now: clock.Now}, func(t *testing.T, db *store.DB) {
		ctx := context.Background()
		names := []string{"e-05", "e-01", "e-04", "e-02", "e-03", "e-06", "e-07"}
		for _, n := range names {
			mustEnroll(t, db, n, n)
		}
		now := clock.Now()
		if err := db.TouchDevices(ctx, map[string]time.Time{"e-01": now, "e-02": now.Add(-2 * time.Minute), "ghost": now}); err != nil {
			t.Fatalf("TouchDevices: %v", err)
		}
		mustTx(t, db, func(tx *store.Tx) error { _, err := tx.DecommissionDevice(ctx, "user:a", "e-07"); return err })

		var seen []string
		for off := 0; ; off += 3 {
			items, total, err := db.ListDevices(ctx, store.DeviceFilter{}, store.Page{Limit: 3, Offset: off})
			if err != nil || total != 7 {
				t.Fatalf("ListDevices(offset %d) = total %d, %v", off, total, err)
			}
			if len(items) == 0 {
				break
			}
			for _, d := range items {
				seen = append(seen, d.Name)
			}
		}
		want := []string{"e-01", "e-02", "e-03", "e-04", "e-05", "e-06", "e-07"}
		if !cmp.Equal(seen, want) {
			t.Errorf("paged names = %v, want %v", seen, want)
		}
		for status, want := range map[string][]string{
			"online":         {"e-01"},
			"offline":        {"e-02", "e-03", "e-04", "e-05", "e-06"},
			"decommissioned": {"e-07"},
			"active":         {"e-01", "e-02", "e-03", "e-04", "e-05", "e-06"},
		} {
			items, total, err := db.ListDevices(ctx, store.DeviceFilter{Status: status, Now: now}, store.Page{})
			var got []string
			for _, d := range items {
				got = append(got, d.Name)
			}
			if err != nil || total != len(want) || !cmp.Equal(got, want) {
				t.Errorf("ListDevices(status=%s) = %v (total %d), %v; want %v", status, got, total, err, want)
			}
		}
		if _, _, err := db.ListDevices(ctx, store.DeviceFilter{Status: "bogus"}, store.Page{}); !errors.Is(err, errdefs.ErrInvalid) {
			t.Errorf("ListDevices(status=bogus) = %v, want ErrInvalid", err)
		}
		items, total, _ := db.ListDevices(ctx, store.DeviceFilter{Tags: map[string]string{"site": "b"}}, store.Page{})
		if total != 0 || len(items) != 0 {
			t.Errorf("ListDevices(site=b) = %d, want 0", total)
		}
		c, err := db.CountDevices(ctx, now)
		if err != nil || c != (store.DeviceCounts{Active: 6, Online: 1, Decommissioned: 1}) {
			t.Errorf("CountDevices = %+v, %v", c, err)
		}
	})
}

func TestTouchDevicesOnlyMovesForward(t *testing.T) {
	t.Parallel()
	forEachEngine(t, func(t *testing.T, db *store.DB) {
		ctx := context.Background()
		mustEnroll(t, db, "edge-1", "k1")
		t1 := time.Now().UTC().Truncate(time.Millisecond)
		if err := db.TouchDevices(ctx, map[string]time.Time{"edge-1": t1}); err != nil {
			t.Fatal(err)
		}
		if err := db.TouchDevices(ctx, map[string]time.Time{"edge-1": t1.Add(-time.Hour)}); err != nil {
			t.Fatal(err)
		}
		d, _ := db.DeviceByName(ctx, "edge-1")
		if !d.LastSeen.Equal(t1) {
			t.Errorf("LastSeen = %v, want %v", d.LastSeen, t1)
		}
	})
}

func TestTouchDevicesLargeBatch(t *testing.T) {
	t.Parallel()
	forEachEngine(t, func(t *testing.T, db *store.DB) {
		ctx := context.Background()
		const n = 1200 // more than one statement's worth
		mustTx(t, db, func(tx *store.Tx) error {
			// Raw rows: enrolling 1200 devices one by one is slow under -race.
			for i := 0; i < n; i++ {
				_, err := tx.Exec(ctx, `INSERT INTO devices (name, id, life, fleet, status, cert_serial, cert_key_sha256,
					cert_not_after, hardware, agent_version, tags, installed, last_seen_at, heartbeat_interval_ms,
					enrolled_with, created_at, updated_at, decommissioned_at)
					VALUES (?, ?, 1, 'f', 'active', ?, '', 0, '{}', '', '{}', '[]', 0, 60000, '', 0, 0, 0)`,
					fmt.Sprintf("d-%04d", i), fmt.Sprintf("id%d", i), fmt.Sprintf("s%d", i))
				if err != nil {
					return err
				}
			}
			return nil
		})
		now := db.Now()
		seen := map[string]time.Time{}
		for i := 0; i < n; i++ {
			seen[fmt.Sprintf("d-%04d", i)] = now
		}
		if err := db.TouchDevices(ctx, seen); err != nil {
			t.Fatalf("TouchDevices: %v", err)
		}
		c, _ := db.CountDevices(ctx, now)
		if c.Online != n {
			t.Errorf("online after TouchDevices = %d, want %d", c.Online, n)
		}
	})
}

func TestDevicesChangedSince(t *testing.T) {
	t.Parallel()
	clock := newClock()
	storetest.ForEachEngineWith(t, storetest.Options{Now: clock.Now}, func(t *testing.T, db *store.DB) {
		ctx := context.Background()
		mustEnroll(t, db, "old", "k1")
		clock.Add(time.Minute)
		since := clock.Now()
		mustEnroll(t, db, "new", "k2")
		if err := db.TouchDevices(ctx, map[string]time.Time{"old": clock.Now()}); err != nil {
			t.Fatal(err)
		}
		got, err := db.DevicesChangedSince(ctx, since)
		if err != nil || !cmp.Equal(got, []string{"new"}) {
			t.Errorf("DevicesChangedSince = %v, %v; want [new] (touch is not a change)", got, err)
		}
	})
}

func TestDevicePresence(t *testing.T) {
	t.Parallel()
	now := time.Now()
	d := store.Device{Status: store.DeviceActive, HeartbeatInterval: 30 * time.Second}
	if p := d.Presence(now); p != states.Offline {
		t.Errorf("never seen: Presence = %s, want offline", p)
	}
	d.LastSeen = now.Add(-89 * time.Second)
	if p := d.Presence(now); p != states.Online {
		t.Errorf("seen 89s ago: Presence = %s, want online", p)
	}
	d.LastSeen = now.Add(-91 * time.Second)
	if p := d.Presence(now); p != states.Offline {
		t.Errorf("seen 91s ago: Presence = %s, want offline", p)
	}
}

func TestSetHeartbeatInterval(t *testing.T) {
	t.Parallel()
	forEachEngine(t, func(t *testing.T, db *store.DB) {
		ctx := context.Background()
		mustEnroll(t, db, "a", "ka")
		mustEnroll(t, db, "b", "kb")
		if err := db.SetHeartbeatInterval(ctx, 2*time.Minute, "a"); err != nil {
			t.Fatal(err)
		}
		a, _ := db.DeviceByName(ctx, "a")
		b, _ := db.DeviceByName(ctx, "b")
		if a.HeartbeatInterval != 2*time.Minute || b.HeartbeatInterval != 30*time.Second {
			t.Errorf("after SetHeartbeatInterval(a) = %v, %v", a.HeartbeatInterval, b.HeartbeatInterval)
		}
		if err := db.SetHeartbeatInterval(ctx, time.Minute); err != nil {
			t.Fatal(err)
		}
		b, _ = db.DeviceByName(ctx, "b")
		if b.HeartbeatInterval != time.Minute {
			t.Errorf("after SetHeartbeatInterval(all): b = %v", b.HeartbeatInterval)
		}
		if err := db.SetHeartbeatInterval(ctx, 0); !errors.Is(err, errdefs.ErrInvalid) {
			t.Errorf("SetHeartbeatInterval(0) = %v, want ErrInvalid", err)
		}
	})
}

func TestDeviceCertificate(t *testing.T) {
	t.Parallel()
	forEachEngine(t, func(t *testing.T, db *store.DB) {
		ctx := context.Background()
		d := mustEnroll(t, db, "edge-1", "k1")
		c, err := db.DeviceCertificate(ctx, d.CertSerial)
		if err != nil || c.DeviceID != d.ID || c.DeviceName != "edge-1" || c.KeySHA256 != keySHA("k1") || !c.RevokedAt.IsZero() {
			t.Errorf("DeviceCertificate = %+v, %v", c, err)
		}
		mustTx(t, db, func(tx *store.Tx) error { _, err := tx.DecommissionDevice(ctx, "user:a", "edge-1"); return err })
		c, _ = db.DeviceCertificate(ctx, d.CertSerial)
		if c.RevokedAt.IsZero() || c.RevokeReason != store.RevokedDecommissioned {
			t.Errorf("DeviceCertificate after decommission = %+v", c)
		}
		if _, err := db.DeviceCertificate(ctx, "ffff"); !errors.Is(err, errdefs.ErrNotFound) {
			t.Errorf("DeviceCertificate(unknown) = %v, want ErrNotFound", err)
		}
	})
}

func TestSetInstalled(t *testing.T) {
	t.Parallel()
	forEachEngine(t, func(t *testing.T, db *store.DB) {
		ctx := context.Background()
		mustEnroll(t, db, "edge-1", "k1")
		list := []byte(`[{"kind":"model","name":"m","version":"2","previous_version":"1"}]`)
		if changed, err := db.SetInstalled(ctx, "edge-1", list); err != nil || !changed {
			t.Fatalf("SetInstalled(new list) = %v, %v; want changed", changed, err)
		}
		// The same list again (other spacing) changes nothing and audits nothing.
		if changed, err := db.SetInstalled(ctx, "edge-1", []byte(`[ {"kind":"model", "name":"m","version":"2","previous_version":"1"} ]`)); err != nil || changed {
			t.Errorf("SetInstalled(same list) = %v, %v; want unchanged", changed, err)
		}
		d, _ := db.DeviceByName(ctx, "edge-1")
		if string(d.Installed) != string(list) {
			t.Errorf("installed = %s, want %s", d.Installed, list)
		}
		events, total, _ := db.ListAudit(ctx, store.AuditFilter{Type: "device.installed"}, store.Page{})
		if total != 1 || events[0].Actor != "device:edge-1" {
			t.Errorf("device.installed events = %d (%+v), want exactly 1 by device:edge-1", total, events)
		}
		if _, err := db.SetInstalled(ctx, "edge-1", []byte(`{bad`)); !errors.Is(err, errdefs.ErrInvalid) {
			t.Errorf("SetInstalled(bad JSON) = %v, want ErrInvalid", err)
		}
		if _, err := db.SetInstalled(ctx, "ghost", list); !errors.Is(err, errdefs.ErrNotFound) {
			t.Errorf("SetInstalled(ghost) = %v, want ErrNotFound", err)
		}
		mustTx(t, db, func(tx *store.Tx) error {
			_, err := tx.DecommissionDevice(ctx, "user:admin", "edge-1")
			return err
		})
		if _, err := db.SetInstalled(ctx, "edge-1", []byte(`[]`)); !errors.Is(err, errdefs.ErrDecommissioned) {
			t.Errorf("SetInstalled(decommissioned) = %v, want ErrDecommissioned", err)
		}
	})
}
