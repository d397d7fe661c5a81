package deviceapi

import (
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"path/filepath"
	"strings"
	"testing"
	"time"

	devicev1 "github.com/meshanics/meshanics/proto/meshanics/device/v1"

	"github.com/meshanics/meshanics/internal/server/ca"
	"github.com/meshanics/meshanics/internal/server/store"
	"github.com/meshanics/meshanics/internal/server/store/storetest"
)

// enrollIn records name as enrolled in db with a certificate from
// authority, as the enrollment service does.
func enrollIn(t testing.TB, db *store.DB, authority *ca.Authority, name string) identity {
	t.Helper()
	key := newKey(t)
	iss, err := authority.IssueDevice(name, &key.PublicKey, ca.DefaultDeviceTTL)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKIXPublicKey(&key.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(der)
	err = db.Tx(ctxT(t), func(tx *store.Tx) error {
		_, _, err := tx.EnrollDevice(ctxT(t), store.Enrollment{
			Name: name, Fleet: authority.Fleet(),
			Cert:              store.IssuedCert{Serial: iss.Serial, KeySHA256: hex.EncodeToString(sum[:]), NotAfter: iss.Cert.NotAfter},
			HeartbeatInterval: 30 * time.Second, Actor: "system",
		})
		return err
	})
	if err != nil {
		t.Fatalf("enroll %s: %v", name, err)
	}
	return identity{name: name, key: key, serial: iss.Serial, cert: tlsCert(iss.Cert, key)}
}

func decommissionIn(t *testing.T, db *store.DB, name string) {
	t.Helper()
	err := db.Tx(ctxT(t), func(tx *store.Tx) error {
		_, err := tx.DecommissionDevice(ctxT(t), "user:admin", name)
		return err
	})
	if err != nil {
		t.Fatalf("decommission %s: %v", name, err)
	}
}

// TestWithStore runs the device API against the real store on both
// engines: register, heartbeat flush, log upload, decommission.
func TestWithStore(t *testing.T) {
	storetest.ForEachEngine(t, func(t *testing.T, db *store.DB) {
		e := newEnv(t, envOpts{store: db, interval: 30 * time.Second, flush: 5 * time.Second})
		a, b := enrollIn(t, db, e.ca, "dev-a"), enrollIn(t, db, e.ca, "dev-b")
		ca, cb := e.dial(a), e.dial(b)
		ctx := ctxT(t)

		if _, err := ca.Register(ctx, &devicev1.RegisterRequest{AgentVersion: "1.2.3",
			Hardware: &devicev1.HardwareProfile{Model: "Jetson Orin", Accelerators: []string{"nvidia-gpu"}}}); err != nil {
			t.Fatalf("Register: %v", err)
		}
		d, err := db.DeviceByName(ctx, "dev-a")
		if err != nil {
			t.Fatal(err)
		}
		if d.AgentVersion != "1.2.3" || !strings.Contains(string(d.Hardware), "nvidia-gpu") {
			t.Errorf("stored dev-a = agent %q hardware %s, want the registered values", d.AgentVersion, d.Hardware)
		}

		if _, err := cb.Heartbeat(ctx, &devicev1.HeartbeatRequest{}); err != nil {
			t.Fatalf("Heartbeat(b): %v", err)
		}
		if d, _ := db.DeviceByName(ctx, "dev-b"); !d.LastSeen.IsZero() {
			t.Fatalf("dev-b last_seen written by the heartbeat itself (%v), want only by the flush", d.LastSeen)
		}
		if err := e.srv.presence.Flush(ctx); err != nil {
			t.Fatal(err)
		}
		if d, _ := db.DeviceByName(ctx, "dev-b"); d.Presence(time.Now()) != "online" {
			t.Errorf("dev-b after flush: last_seen %v, presence %s; want online", d.LastSeen, d.Presence(time.Now()))
		}

		var lr store.LogRequest
		err = db.Tx(ctx, func(tx *store.Tx) error {
			var err error
			lr, err = tx.CreateLogRequest(ctx, "user:admin", "dev-a", time.Now().Add(-time.Hour), 50)
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		if err := e.srv.pollLogs(ctx); err != nil {
			t.Fatal(err)
		}
		hb, err := ca.Heartbeat(ctx, &devicev1.HeartbeatRequest{})
		if err != nil || len(hb.LogRequests) != 1 || hb.LogRequests[0].RequestId != lr.ID {
			t.Fatalf("Heartbeat(a) = %v, %v; want log request %s", hb, err, lr.ID)
		}
		if _, err := upload(ctx, cb, lr.ID, gz(t, "b's lines")); err == nil {
			t.Error("dev-b uploaded for dev-a's log request")
		}
		data := gz(t, "a's journal\n")
		if _, err := upload(ctx, ca, lr.ID, data); err != nil {
			t.Fatalf("upload: %v", err)
		}
		if got, err := db.LogBundle(ctx, lr.ID); err != nil || string(got) != string(data) {
			t.Errorf("LogBundle = %d bytes, %v; want the upload", len(got), err)
		}

		decommissionIn(t, db, "dev-a")
		e.srv.Invalidate("dev-a")
		for rpc, err := range callEveryRPC(t, ca, a) {
			if !isDecommissionSignal(err) {
				t.Errorf("%s after decommission = %v, want the decommission signal", rpc, err)
			}
		}
		if _, err := cb.Heartbeat(ctx, &devicev1.HeartbeatRequest{}); err != nil {
			t.Errorf("dev-b after dev-a's decommission: %v", err)
		}
	})
}

// TestDecommissionReachesOtherReplica runs two device API replicas on one
// PostgreSQL database: a decommission committed through one reaches the
// other through the change poll, without Invalidate there.
func TestDecommissionReachesOtherReplica(t *testing.T) {
	dsn := storetest.PostgresDatabase(t)
	db1 := storetest.OpenDSN(t, dsn, storetest.Options{})
	db2 := storetest.OpenDSN(t, dsn, storetest.Options{})
	authority, err := ca.Create(filepath.Join(t.TempDir(), "pki"), "fleet.example", time.Now)
	if err != nil {
		t.Fatal(err)
	}
	replica2 := newEnvWithCA(t, authority, envOpts{store: db2, changes: db2, poll: 20 * time.Millisecond})
	a := enrollIn(t, db1, authority, "dev-a")
	c := replica2.dial(a)
	ctx := ctxT(t)
	if _, err := c.Heartbeat(ctx, &devicev1.HeartbeatRequest{}); err != nil {
		t.Fatalf("Heartbeat before decommission: %v", err) // cached as current on replica 2
	}
	decommissionIn(t, db1, "dev-a") // through replica 1
	for {
		_, err := c.Heartbeat(ctx, &devicev1.HeartbeatRequest{})
		if isDecommissionSignal(err) {
			return
		}
		if err != nil || ctx.Err() != nil {
			t.Fatalf("Heartbeat on replica 2 = %v, want success until the change poll, then the decommission signal", err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
