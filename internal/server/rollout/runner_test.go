package rollout

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	devicev1 "github.com/meshanics/meshanics/proto/meshanics/device/v1"

	"github.com/meshanics/meshanics/internal/errdefs"
	"github.com/meshanics/meshanics/internal/server/store"
	"github.com/meshanics/meshanics/internal/server/store/storetest"
	"github.com/meshanics/meshanics/internal/states"
)

// clock is a settable test clock.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

type env struct {
	t     *testing.T
	db    *store.DB
	r     *Runner
	clock *clock
	ctx   context.Context
}

func newEnv(t *testing.T, db *store.DB) *env {
	t.Helper()
	c := &clock{t: time.Now().Truncate(time.Millisecond)}
	r, err := New(Config{DB: db, Artifacts: db, Now: c.Now})
	if err != nil {
		t.Fatal(err)
	}
	e := &env{t: t, db: db, r: r, clock: c, ctx: context.Background()}
	e.artifact("app", "1.0")
	e.artifact("app", "2.0")
	return e
}

func (e *env) artifact(name, version string) {
	e.t.Helper()
	err := e.db.Tx(e.ctx, func(tx *store.Tx) error {
		return tx.InsertArtifact(e.ctx, store.Artifact{
			Name: name, Version: version, Kind: "model",
			TargetPath: fmt.Sprintf("artifacts/model/%s/%s/model.onnx", name, version),
			SHA256:     strings.Repeat("ab", 32), Length: 42, PublishedBy: "user:ann",
		})
	})
	if err != nil && !errors.Is(err, errdefs.ErrConflict) {
		e.t.Fatalf("insert artifact: %v", err)
	}
}

// devices inserts n live devices named dev-000… and a group holding them.
func (e *env) devices(group string, n int) []string {
	e.t.Helper()
	var names []string
	err := e.db.Tx(e.ctx, func(tx *store.Tx) error {
		for i := 0; i < n; i++ {
			name := fmt.Sprintf("%s-%03d", group, i)
			names = append(names, name)
			if _, err := tx.Exec(e.ctx, `INSERT INTO devices (name, id, life, fleet, status, cert_serial, cert_key_sha256, cert_not_after, hardware,
				agent_version, tags, installed, last_seen_at, heartbeat_interval_ms, enrolled_with, created_at, updated_at, decommissioned_at)
				VALUES (?, ?, 1, 'fleet.test', 'active', ?, 'k', 0, '{}', 'v', '{}', '[]', ?, 30000, 'tok', 1, 1, 0)`,
				name, store.NewID("dev"), store.NewID("serial"), e.clock.Now().UnixMilli()); err != nil {
				return err
			}
		}
		_, err := tx.CreateGroup(e.ctx, group, names, "user:ann")
		return err
	})
	if err != nil {
		e.t.Fatalf("add devices: %v", err)
	}
	return names
}

// offline makes a device look unheard of for 10 minutes.
func (e *env) offline(name string) {
	e.t.Helper()
	err := e.db.Tx(e.ctx, func(tx *store.Tx) error {
		_, err := tx.Exec(e.ctx, "UPDATE devices SET last_seen_at = ? WHERE name = ?", e.clock.Now().Add(-10*time.Minute).UnixMilli(), name)
		return err
	})
	if err != nil {
		e.t.Fatal(err)
	}
}

func (e *env) create(group, strategy string) View {
	e.t.Helper()
	v, err := e.r.Create(e.ctx, "user:ann", CreateRequest{Artifact: "app@2.0", Group: group,
		Probe: json.RawMessage(`{"type":"file","target":"/run/app/ok"}`), Strategy: json.RawMessage(strategy)})
	if err != nil {
		e.t.Fatalf("Create: %v", err)
	}
	return v
}

var installedV1 = []*devicev1.InstalledArtifact{{Kind: "model", Name: "app", Version: "1.0"}}

func (e *env) heartbeat(r *Runner, dev string) *devicev1.Assignment {
	e.t.Helper()
	as, err := r.Assignments(e.ctx, dev, installedV1, e.clock.Now())
	if err != nil {
		e.t.Fatalf("Assignments(%s): %v", dev, err)
	}
	if len(as) > 1 {
		e.t.Fatalf("Assignments(%s) = %d assignments, want at most 1", dev, len(as))
	}
	if len(as) == 0 {
		return nil
	}
	return as[0]
}

func (e *env) report(dev string, a *devicev1.Assignment, s states.Device) {
	e.t.Helper()
	if err := e.r.ReportStatus(e.ctx, dev, Status{AssignmentID: a.GetId(), State: s, Detail: "step " + string(s)}); err != nil {
		e.t.Fatalf("ReportStatus(%s, %s): %v", dev, s, err)
	}
}

// runDevice serves dev and reports states in order.
func (e *env) runDevice(dev string, final states.Device) *devicev1.Assignment {
	e.t.Helper()
	a := e.heartbeat(e.r, dev)
	if a == nil {
		e.t.Fatalf("device %s got no assignment", dev)
	}
	for _, s := range []states.Device{states.Downloading, states.Verifying, states.Applying, final} {
		e.report(dev, a, s)
	}
	return a
}

func (e *env) devicesOf(id string, wave int) []string {
	e.t.Helper()
	ds, _, err := e.r.Devices(e.ctx, id, store.Page{Limit: 200})
	if err != nil {
		e.t.Fatal(err)
	}
	var out []string
	for _, d := range ds {
		if d.Wave == wave {
			out = append(out, d.Device)
		}
	}
	return out
}

func (e *env) want(id, state string) View {
	e.t.Helper()
	v, err := e.r.Get(e.ctx, id)
	if err != nil {
		e.t.Fatal(err)
	}
	if v.State != state {
		e.t.Fatalf("rollout state = %s, want %s (waves %+v)", v.State, state, v.Waves)
	}
	return v
}

func (e *env) auditTypes(id string) []string {
	e.t.Helper()
	evs, _, err := e.db.ListAudit(e.ctx, store.AuditFilter{Subject: id}, store.Page{Limit: 200})
	if err != nil {
		e.t.Fatal(err)
	}
	var out []string
	for i := len(evs) - 1; i >= 0; i-- {
		out = append(out, evs[i].Type)
	}
	return out
}

func TestCreateValidation(t *testing.T) {
	storetest.ForEachEngine(t, func(t *testing.T, db *store.DB) {
		e := newEnv(t, db)
		e.devices("g", 3)
		if err := db.Tx(e.ctx, func(tx *store.Tx) error { _, err := tx.CreateGroup(e.ctx, "empty", nil, "x"); return err }); err != nil {
			t.Fatal(err)
		}
		probe := json.RawMessage(`{"type":"file","target":"/ok"}`)
		tests := []struct {
			name string
			req  CreateRequest
			kind error
		}{
			{"bad ref", CreateRequest{Artifact: "app", Group: "g", Probe: probe}, errdefs.ErrInvalid},
			{"unknown artifact", CreateRequest{Artifact: "app@9", Group: "g", Probe: probe}, errdefs.ErrNotFound},
			{"unknown group", CreateRequest{Artifact: "app@2.0", Group: "nope", Probe: probe}, errdefs.ErrNotFound},
			{"empty group", CreateRequest{Artifact: "app@2.0", Group: "empty", Probe: probe}, errdefs.ErrInvalid},
			{"no probe", CreateRequest{Artifact: "app@2.0", Group: "g"}, errdefs.ErrInvalid},
			{"probe out of bounds", CreateRequest{Artifact: "app@2.0", Group: "g", Probe: json.RawMessage(`{"type":"file","target":"/ok","attempts":11}`)}, errdefs.ErrInvalid},
			{"probe not loopback", CreateRequest{Artifact: "app@2.0", Group: "g", Probe: json.RawMessage(`{"type":"http","target":"http://10.0.0.1/"}`)}, errdefs.ErrInvalid},
			{"bad strategy", CreateRequest{Artifact: "app@2.0", Group: "g", Probe: probe, Strategy: json.RawMessage(`{"waves":[{"percent":50}]}`)}, errdefs.ErrInvalid},
		}
		for _, tt := range tests {
			if _, err := e.r.Create(e.ctx, "user:ann", tt.req); !errors.Is(err, tt.kind) {
				t.Errorf("Create(%s) = %v, want %v", tt.name, err, tt.kind)
			}
		}
		if n, _, _ := e.r.List(e.ctx, "", store.Page{}); len(n) != 0 {
			t.Errorf("rejected creates left %d rollouts", len(n))
		}
	})
}

func TestRolloutLifecycle(t *testing.T) {
	storetest.ForEachEngine(t, func(t *testing.T, db *store.DB) {
		e := newEnv(t, db)
		e.devices("line", 10)
		// 10 devices: waves of 1, 4, 5; tolerance 0.2 × 10 = 2.
		v := e.create("line", `{"waves":[{"percent":10},{"percent":50,"approval":"manual"},{"percent":100}],"max_failure_rate":0.2}`)
		id := v.ID
		if got := []int{v.Waves[0].Devices, v.Waves[1].Devices, v.Waves[2].Devices}; fmt.Sprint(got) != "[1 4 5]" {
			t.Fatalf("wave sizes = %v, want [1 4 5]", got)
		}
		w0, w1, w2 := e.devicesOf(id, 0), e.devicesOf(id, 1), e.devicesOf(id, 2)
		if a := e.heartbeat(e.r, w1[0]); a != nil {
			t.Fatalf("wave 1 device served before its wave: %v", a)
		}
		a := e.runDevice(w0[0], states.Healthy)
		if a.GetAction() != ActionApply || a.GetArtifact().GetVersion() != "2.0" || a.GetArtifact().GetTargetPath() != "artifacts/model/app/2.0/model.onnx" ||
			a.GetProbe().GetAttempts() != 3 || a.GetRolloutId() != id {
			t.Errorf("assignment = %v", a)
		}
		e.want(id, "waiting_for_approval")
		if a := e.heartbeat(e.r, w1[0]); a != nil {
			t.Fatal("wave 1 device served while waiting for approval")
		}
		if _, err := e.r.Approve(e.ctx, "user:bob", id); err != nil {
			t.Fatal(err)
		}
		e.offline(w1[3]) // never heard of again: must not block wave 1
		e.runDevice(w1[0], states.Failed)
		e.runDevice(w1[1], states.RolledBack)
		e.want(id, "running") // 2 failures, tolerance 2
		e.runDevice(w1[2], states.Healthy)
		v = e.want(id, "running")
		if v.Failures != 2 || v.Waves[1].Counts["pending"] != 1 {
			t.Errorf("after wave 1: failures %d, wave 1 counts %v", v.Failures, v.Waves[1].Counts)
		}
		if a := e.heartbeat(e.r, w2[0]); a == nil {
			t.Fatal("wave 2 not started after wave 1 completed within tolerance")
		}
		e.runDevice(w2[1], states.Healthy)
		// The third failure crosses the tolerance: halt fleet-wide.
		e.runDevice(w2[2], states.Failed)
		v = e.want(id, "halted")
		if a := e.heartbeat(e.r, w2[3]); a != nil {
			t.Fatal("new assignment served while halted")
		}
		if a := e.heartbeat(e.r, w2[0]); a == nil {
			t.Fatal("in-flight assignment withdrawn while halted")
		}
		if _, err := e.r.Approve(e.ctx, "user:bob", id); !errors.Is(err, errdefs.ErrConflict) {
			t.Errorf("Approve(halted) = %v, want conflict", err)
		}
		v, err := e.r.Resume(e.ctx, "user:bob", id)
		if err != nil || v.State != "running" || v.AcknowledgedFailures != 3 {
			t.Fatalf("Resume = %+v, %v; want running with 3 acknowledged", v, err)
		}
		e.runDevice(w2[3], states.Healthy)
		e.offline(w2[3]) // applied, then went away
		v, err = e.r.Abort(e.ctx, "user:bob", id, "revert")
		if err != nil || v.State != "aborted" {
			t.Fatalf("Abort = %+v, %v", v, err)
		}
		// Healthy devices revert to 1.0; failed ones are already back.
		for _, d := range []string{w0[0], w1[2], w2[1], w2[3]} {
			a := e.heartbeat(e.r, d)
			if a.GetAction() != ActionRevert || a.GetRevertTo().GetVersion() != "1.0" || a.GetArtifact().GetVersion() != "2.0" {
				t.Fatalf("%s after abort revert: assignment %v, want revert to 1.0", d, a)
			}
			e.report(d, a, states.Reverting)
			e.report(d, a, states.Reverted)
		}
		for _, d := range []string{w1[0], w1[3], w2[4]} {
			if a := e.heartbeat(e.r, d); a != nil {
				t.Errorf("%s after abort revert: assignment %v, want none", d, a)
			}
		}
		v = e.want(id, "aborted")
		reverted := 0
		for _, w := range v.Waves {
			reverted += w.Counts["reverted"]
		}
		if reverted != 4 {
			t.Errorf("reverted devices = %d, want 4", reverted)
		}
		var kinds []string
		for _, typ := range e.auditTypes(id) {
			if typ != EventDevice {
				kinds = append(kinds, typ)
			}
		}
		want := "rollout.created rollout.waiting_for_approval rollout.approved rollout.wave_started rollout.wave_started rollout.halted rollout.resumed rollout.aborted rollout.revert_queued"
		if strings.Join(kinds, " ") != want {
			t.Errorf("audit events =\n%s\nwant\n%s", strings.Join(kinds, " "), want)
		}
		halts, _, err := db.ListAudit(e.ctx, store.AuditFilter{Type: EventHalted}, store.Page{})
		if err != nil || len(halts) != 1 {
			t.Fatalf("halt events = %d, %v", len(halts), err)
		}
		var hd map[string]any
		_ = json.Unmarshal(halts[0].Data, &hd)
		if hd["wave"] != 2.0 || hd["failures"] != 3.0 || hd["tolerance"] != 2.0 || hd["reason"] != "failure_rate" {
			t.Errorf("halt audit data = %v, want wave 2, failures 3, tolerance 2", hd)
		}
	})
}

func TestReportsAreBoundToTheDeviceAndValidated(t *testing.T) {
	storetest.ForEachEngine(t, func(t *testing.T, db *store.DB) {
		e := newEnv(t, db)
		devs := e.devices("g", 2)
		e.create("g", "")
		a := e.heartbeat(e.r, devs[0])
		tests := []struct {
			dev  string
			st   Status
			kind error
		}{
			{devs[1], Status{AssignmentID: a.GetId(), State: states.Healthy}, errdefs.ErrNotFound},
			{devs[0], Status{AssignmentID: "asg_nope", State: states.Healthy}, errdefs.ErrNotFound},
			{devs[0], Status{AssignmentID: "", State: states.Healthy}, errdefs.ErrNotFound},
			{devs[0], Status{AssignmentID: a.GetId(), State: states.Reverted}, errdefs.ErrInvalid},
			{devs[0], Status{AssignmentID: a.GetId(), State: "pending"}, errdefs.ErrInvalid},
		}
		for _, tt := range tests {
			if err := e.r.ReportStatus(e.ctx, tt.dev, tt.st); !errors.Is(err, tt.kind) {
				t.Errorf("ReportStatus(%s, %+v) = %v, want %v", tt.dev, tt.st, err, tt.kind)
			}
		}
		e.report(devs[0], a, states.Healthy)
		e.report(devs[0], a, states.Healthy) // a retried report is harmless
		if err := e.r.ReportStatus(e.ctx, devs[0], Status{AssignmentID: a.GetId(), State: states.Failed}); !errors.Is(err, errdefs.ErrConflict) {
			t.Errorf("terminal state changed: %v, want conflict", err)
		}
		if a := e.heartbeat(e.r, devs[0]); a != nil {
			t.Errorf("finished assignment served again: %v", a)
		}
	})
}

func TestOneActiveRolloutPerDevice(t *testing.T) {
	storetest.ForEachEngine(t, func(t *testing.T, db *store.DB) {
		e := newEnv(t, db)
		devs := e.devices("g", 3)
		v1 := e.create("g", "")
		_, err := e.r.Create(e.ctx, "user:ann", CreateRequest{Artifact: "app@1.0", Group: "g", Probe: json.RawMessage(`{"type":"file","target":"/x"}`)})
		if !errors.Is(err, errdefs.ErrConflict) || !strings.Contains(errdefs.PublicMessage(err), v1.ID) {
			t.Fatalf("second rollout on the same devices = %v, want a conflict naming %s", err, v1.ID)
		}
		// Complete the first with one device offline and never served: a new
		// rollout supersedes its unfinished row.
		e.offline(devs[2])
		for _, d := range devs[:2] {
			e.runDevice(d, states.Healthy)
		}
		e.want(v1.ID, "completed")
		v2 := e.create("g", "")
		if a := e.heartbeat(e.r, devs[2]); a.GetRolloutId() != v2.ID {
			t.Errorf("returning device served %v, want the new rollout %s", a, v2.ID)
		}
	})
}

func TestEvaluateAllAdvancesPastDevicesThatWentOffline(t *testing.T) {
	storetest.ForEachEngine(t, func(t *testing.T, db *store.DB) {
		e := newEnv(t, db)
		e.devices("g", 4)
		v := e.create("g", `{"waves":[{"percent":50},{"percent":100}]}`)
		w0 := e.devicesOf(v.ID, 0)
		e.runDevice(w0[0], states.Healthy)
		a := e.heartbeat(e.r, w0[1])
		e.report(w0[1], a, states.Downloading)
		if err := e.r.EvaluateAll(e.ctx); err != nil {
			t.Fatal(err)
		}
		e.want(v.ID, "running")
		if got := e.devicesOf(v.ID, 1); e.heartbeat(e.r, got[0]) != nil {
			t.Fatal("wave 1 started while a live wave-0 device is in flight")
		}
		e.offline(w0[1])
		if err := e.r.EvaluateAll(e.ctx); err != nil {
			t.Fatal(err)
		}
		if got := e.devicesOf(v.ID, 1); e.heartbeat(e.r, got[0]) == nil {
			t.Fatal("wave 1 not started after the in-flight device went offline")
		}
	})
}

func TestAllOfflineGroupCompletesAtOnceAndServesLater(t *testing.T) {
	storetest.ForEachEngine(t, func(t *testing.T, db *store.DB) {
		e := newEnv(t, db)
		devs := e.devices("g", 2)
		e.offline(devs[0])
		e.offline(devs[1])
		v := e.create("g", `{"waves":[{"percent":50},{"percent":100,"approval":"auto"}]}`)
		e.want(v.ID, "completed")
		e.runDevice(devs[1], states.Healthy)
		v = e.want(v.ID, "completed")
		if v.Waves[0].Counts["healthy"]+v.Waves[1].Counts["healthy"] != 1 {
			t.Errorf("counts after late device = %+v", v.Waves)
		}
	})
}

func TestLargeGroupIsAuditedWithinBounds(t *testing.T) {
	db := storetest.SQLite(t)
	e := newEnv(t, db)
	// 1,200 names of 63 characters: more than the 64 KiB an audit event
	// may carry.
	var long []string
	for i := 0; i < 1200; i++ {
		long = append(long, fmt.Sprintf("%s-%04d", strings.Repeat("d", 58), i))
	}
	names := seedDevices(t, db, long, e.clock.Now())
	g, unresolved, err := e.r.CreateGroup(e.ctx, "user:ann", "copy", append(names, "ghost-1"))
	if err != nil || g.Size != 1200 || len(unresolved) != 1 {
		t.Fatalf("CreateGroup(1201 names) = size %d, unresolved %v, %v", g.Size, unresolved, err)
	}
	evs, _, err := db.ListAudit(e.ctx, store.AuditFilter{Type: "group.created", Subject: "copy"}, store.Page{})
	if err != nil || len(evs) != 1 {
		t.Fatalf("group.created events = %d, %v", len(evs), err)
	}
	var data struct {
		Devices    map[string]any `json:"devices"`
		Unresolved map[string]any `json:"unresolved"`
	}
	if err := json.Unmarshal(evs[0].Data, &data); err != nil || data.Devices["count"] != 1200.0 || data.Devices["sha256"] == nil ||
		fmt.Sprint(data.Unresolved["names"]) != "[ghost-1]" {
		t.Errorf("group.created data = %s", evs[0].Data)
	}
}

func TestCacheForgetsIdleDevicesAndSeesOtherReplicas(t *testing.T) {
	db := storetest.SQLite(t)
	e := newEnv(t, db)
	devs := e.devices("g", 2)
	other, err := New(Config{DB: db, Artifacts: db, Now: e.clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	if a := e.heartbeat(e.r, devs[0]); a != nil {
		t.Fatal("served before any rollout")
	}
	// Another replica creates a rollout: this one sees it once its epoch
	// check is due, without any local change.
	if _, err := other.Create(e.ctx, "user:ann", CreateRequest{Artifact: "app@2.0", Group: "g",
		Probe: json.RawMessage(`{"type":"file","target":"/ok"}`)}); err != nil {
		t.Fatal(err)
	}
	e.clock.Add(2 * time.Second)
	if a := e.heartbeat(e.r, devs[0]); a == nil {
		t.Fatal("rollout created on another replica not seen after the epoch interval")
	}
	e.clock.Add(3 * time.Minute)
	e.heartbeat(e.r, devs[1])
	e.r.mu.Lock()
	_, stale := e.r.cache[devs[0]]
	n := len(e.r.cache)
	e.r.mu.Unlock()
	if stale || n != 1 {
		t.Errorf("cache after the TTL holds %d entries (idle device kept: %v), want only the device just seen", n, stale)
	}
}
