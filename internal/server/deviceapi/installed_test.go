package deviceapi

import (
	"path/filepath"
	"testing"
	"time"

	devicev1 "github.com/meshanics/meshanics/proto/meshanics/device/v1"

	"github.com/meshanics/meshanics/internal/server/ca"
	"github.com/meshanics/meshanics/internal/server/store"
	"github.com/meshanics/meshanics/internal/server/store/storetest"
)

// TestHeartbeatRecordsInstalledChanges: what a device runs reaches its
// record when it changes between registrations (an apply finished), with
// one write and one audit event per change, none for an unchanged list.
func TestHeartbeatRecordsInstalledChanges(t *testing.T) {
	storetest.ForEachEngine(t, func(t *testing.T, db *store.DB) {
		e := newEnv(t, envOpts{store: db, interval: 30 * time.Second, flush: 5 * time.Second})
		c := e.dial(enrollIn(t, db, e.ca, "dev-a"))
		ctx := ctxT(t)
		v1 := []*devicev1.InstalledArtifact{{Kind: "model", Name: "detector", Version: "1.0"}}
		if _, err := c.Register(ctx, &devicev1.RegisterRequest{AgentVersion: "1.0.0", Installed: v1}); err != nil {
			t.Fatalf("Register: %v", err)
		}
		v2 := []*devicev1.InstalledArtifact{{Kind: "model", Name: "detector", Version: "2.0", PreviousVersion: "1.0"}}
		for _, in := range [][]*devicev1.InstalledArtifact{v1, v2, v2, v2} {
			if _, err := c.Heartbeat(ctx, &devicev1.HeartbeatRequest{Installed: in}); err != nil {
				t.Fatalf("Heartbeat: %v", err)
			}
		}
		d, err := db.DeviceByName(ctx, "dev-a")
		if err != nil {
			t.Fatal(err)
		}
		if want := `[{"kind":"model","name":"detector","version":"2.0","previous_version":"1.0"}]`; string(d.Installed) != want {
			t.Errorf("installed after heartbeats = %s, want %s", d.Installed, want)
		}
		if _, n, _ := db.ListAudit(ctx, store.AuditFilter{Type: "device.installed"}, store.Page{}); n != 1 {
			t.Errorf("device.installed events = %d, want 1 (the change to 2.0 only)", n)
		}
	})
}

// TestHeartbeatInstalledSteadyStateWritesNothing: with the fakes, an
// unchanged list after Register costs no write, a change one, and a
// server that has not seen the device's Register (restart, another
// replica) writes only through the sink's own comparison.
func TestHeartbeatInstalledSteadyStateWritesNothing(t *testing.T) {
	e := newEnv(t, envOpts{interval: 30 * time.Second, flush: 5 * time.Second})
	c := e.dial(e.enroll("dev-a"))
	ctx := ctxT(t)
	v1 := []*devicev1.InstalledArtifact{{Kind: "config", Name: "app", Version: "1"}}
	if _, err := c.Register(ctx, &devicev1.RegisterRequest{Installed: v1}); err != nil {
		t.Fatal(err)
	}
	writes := func() int {
		e.devices.mu.Lock()
		defer e.devices.mu.Unlock()
		return e.devices.installedWrites
	}
	for range 3 {
		if _, err := c.Heartbeat(ctx, &devicev1.HeartbeatRequest{Installed: v1}); err != nil {
			t.Fatal(err)
		}
	}
	if w := writes(); w != 0 {
		t.Errorf("SetInstalled calls after unchanged heartbeats = %d, want 0", w)
	}
	v2 := []*devicev1.InstalledArtifact{{Kind: "config", Name: "app", Version: "2", PreviousVersion: "1"}}
	for range 3 {
		if _, err := c.Heartbeat(ctx, &devicev1.HeartbeatRequest{Installed: v2}); err != nil {
			t.Fatal(err)
		}
	}
	if w := writes(); w != 1 {
		t.Errorf("SetInstalled writes after a change = %d, want 1", w)
	}
	// Invalidate (decommission or replacement committed here) forgets what
	// was stored, so the next heartbeat checks again.
	e.srv.Invalidate("dev-a")
	if e.srv.installedSeen.same("dev-a", installedDigest(v2)) {
		t.Error("Invalidate kept the installed digest of dev-a")
	}
}

// TestRunRecordsTheBaseInterval: devices enrolled under another
// -heartbeat-interval take the server's interval when it starts, so a
// raised interval does not show them offline between heartbeats.
func TestRunRecordsTheBaseInterval(t *testing.T) {
	storetest.ForEachEngine(t, func(t *testing.T, db *store.DB) {
		authority, err := ca.Create(filepath.Join(t.TempDir(), "pki"), "fleet.example", time.Now)
		if err != nil {
			t.Fatal(err)
		}
		enrollIn(t, db, authority, "dev-a") // recorded with 30 s
		e := newEnvWithCA(t, authority, envOpts{store: db, interval: 2 * time.Minute, flush: 5 * time.Second})
		if err := e.stop(); err != nil {
			t.Fatalf("Serve = %v", err)
		}
		d, err := db.DeviceByName(ctxT(t), "dev-a")
		if err != nil {
			t.Fatal(err)
		}
		if d.HeartbeatInterval != 2*time.Minute {
			t.Errorf("recorded heartbeat interval after the server started = %v, want 2m0s", d.HeartbeatInterval)
		}
		seen := time.Now()
		d.LastSeen = seen
		if got := d.Presence(seen.Add(100 * time.Second)); got != "online" {
			t.Errorf("Presence 100 s after a heartbeat with a 2 min interval = %s, want online", got)
		}
	})
}
