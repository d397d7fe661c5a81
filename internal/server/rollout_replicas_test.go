package server

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/meshanics/meshanics/internal/server/store"
	"github.com/meshanics/meshanics/internal/server/store/storetest"
	devicev1 "github.com/meshanics/meshanics/proto/meshanics/device/v1"
)

// TestRolloutAcrossReplicas runs one rollout through two wired replicas on
// one PostgreSQL (SPEC §11): devices heartbeat and report on either
// replica, operator commands go to either, and two concurrent approvals on
// the two replicas start the gated wave exactly once.
func TestRolloutAcrossReplicas(t *testing.T) {
	pg := freshPostgres(t)
	cfgA := testConfig(t, t.TempDir())
	cfgA.Database = pg
	cfgA.HeartbeatInterval = time.Minute // scripted devices: nobody goes offline
	key, err := Initialize(context.Background(), cfgA, quietLog())
	if err != nil {
		t.Fatal(err)
	}
	cfgB := testConfig(t, t.TempDir())
	cfgB.Database, cfgB.HeartbeatInterval = pg, cfgA.HeartbeatInterval
	copyPKI(t, cfgA.DataDir, cfgB.DataDir)
	a, b := start(t, cfgA), start(t, cfgB)
	a.key, b.key = key, key
	replicas := []*running{a, b}

	// The artifacts are records in the shared database (publishing and
	// signing have their own tests; here only the rollout engine matters).
	db := storetest.OpenDSN(t, pg, storetest.Options{})
	ctx := context.Background()
	err = db.Tx(ctx, func(tx *store.Tx) error {
		for _, v := range []string{"1.0", "2.0"} {
			if err := tx.InsertArtifact(ctx, store.Artifact{Name: "det", Version: v, Kind: "model",
				TargetPath: "artifacts/model/det/" + v + "/m.onnx", SHA256: strings.Repeat("ab", 32), Length: 42, PublishedBy: "user:admin"}); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}

	// Four devices enrolled on A; device i talks to replica i%2 only.
	var devs []*e2eDevice
	var names []string
	home := map[*e2eDevice]int{} // the replica a device talks to
	for i := range 4 {
		name := fmt.Sprintf("rep-%d", i)
		d := enrollDeviceOn(t, a, replicas[i%2], name, map[string]string{"det": "1.0"})
		devs, names, home[d] = append(devs, d), append(names, name), i%2
	}
	b.mustAPI(t, 201, "POST", "/api/v1/groups", map[string]any{"name": "fleet", "devices": names}, nil)

	// 50 % canary, then a manual gate; tolerance 0.
	var ro e2eRollout
	a.mustAPI(t, 201, "POST", "/api/v1/rollouts", map[string]any{"artifact": "det@2.0", "group": "fleet",
		"probe":    map[string]any{"type": "file", "target": "/var/lib/det/ready"},
		"strategy": map[string]any{"waves": []map[string]any{{"percent": 50}, {"percent": 100, "approval": "manual"}}}}, &ro)
	// served polls a device's heartbeat until it is given an assignment:
	// a replica sees another's wave change within its epoch interval.
	served := func(d *e2eDevice) *devicev1.Assignment {
		t.Helper()
		for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
			if as := d.heartbeat(t); as != nil {
				return as
			}
		}
		t.Fatalf("%s was never served", d.name)
		return nil
	}
	var canary, rest []*e2eDevice
	for _, d := range devs {
		if as := d.heartbeat(t); as != nil {
			d.run(t, as, "healthy")
			canary = append(canary, d)
		} else {
			rest = append(rest, d)
		}
	}
	if len(canary) != 2 {
		t.Fatalf("canary = %d devices, want 2", len(canary))
	}
	for _, r := range replicas {
		r.rolloutState(t, ro.ID, "waiting_for_approval")
	}

	// Approve on both replicas at once: one starts the wave, the other is
	// refused (the rollout no longer waits).
	codes := make(chan int, 2)
	for _, r := range replicas {
		go func() {
			code, _ := r.api(t, "POST", "/api/v1/rollouts/"+ro.ID+"/approve", nil)
			codes <- code
		}()
	}
	if c1, c2 := <-codes, <-codes; c1+c2 != 200+409 {
		t.Fatalf("concurrent approvals = %d and %d, want one 200 and one 409", c1, c2)
	}
	a.rolloutState(t, ro.ID, "running")

	// The first wave-1 device fails: halted, seen by both replicas, and the
	// other wave-1 device is not served.
	served(rest[0]) // may take a moment on the replica that did not approve
	rest[0].run(t, rest[0].heartbeat(t), "failed")
	for _, r := range replicas {
		v := r.rolloutState(t, ro.ID, "halted")
		if v.Failures != 1 {
			t.Errorf("failures = %d, want 1", v.Failures)
		}
	}
	if as := rest[1].heartbeat(t); as != nil {
		t.Fatalf("%s served %v while halted", rest[1].name, as)
	}

	// Resume on the replica rest[1] does not talk to; it is served there.
	replicas[1-home[rest[1]]].mustAPI(t, 200, "POST", "/api/v1/rollouts/"+ro.ID+"/resume", nil, nil)
	rest[1].run(t, served(rest[1]), "healthy")
	v := b.rolloutState(t, ro.ID, "completed")
	if v.AcknowledgedFailures != 1 || v.Waves[0].Counts["healthy"] != 2 || v.Waves[1].Counts["healthy"] != 1 || v.Waves[1].Counts["failed"] != 1 {
		t.Errorf("completed rollout = %+v", v)
	}

	// Exactly one of each rollout transition, and the chain verifies.
	got := a.auditTypes(t, ro.ID)
	want := "rollout.created rollout.waiting_for_approval rollout.approved rollout.wave_started rollout.halted rollout.resumed rollout.completed"
	if got != want {
		t.Errorf("audit of the rollout =\n%s\nwant\n%s", got, want)
	}
	code, out := b.do(t, "GET", "/api/v1/audit/export", "", map[string]string{"Authorization": "Bearer " + key})
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	if code != 200 || !strings.Contains(lines[len(lines)-1], `"verified":true`) {
		t.Errorf("audit export = %d, trailer %s", code, lines[len(lines)-1])
	}
}
