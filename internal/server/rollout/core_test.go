package rollout

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	devicev1 "github.com/meshanics/meshanics/proto/meshanics/device/v1"

	"github.com/meshanics/meshanics/internal/errdefs"
	"github.com/meshanics/meshanics/internal/states"
)

// sim keeps device-level truth the way the store does and feeds the core
// the way the runner does, so tests read as scripts of a fleet.
type sim struct {
	t      *testing.T
	s      State
	dev    map[string]*simDev
	events []string // audit event types in order
	acts   []Action
}

type simDev struct {
	wave    int
	state   states.Device
	action  string
	offline bool
}

var t0 = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

func newSim(t *testing.T, st Strategy, n int) *sim {
	t.Helper()
	names := make([]string, n)
	for i := range names {
		names[i] = fmt.Sprintf("dev-%04d", i)
	}
	waves := st.Partition(names)
	sizes := make([]int, len(waves))
	f := &sim{t: t, dev: map[string]*simDev{}}
	for i, w := range waves {
		sizes[i] = len(w)
		for _, d := range w {
			f.dev[d] = &simDev{wave: i, state: states.Pending, action: ActionApply}
		}
	}
	f.s = Initial(st, sizes, t0)
	return f
}

// inWave returns the devices of wave w in a stable order.
func (f *sim) inWave(w int) []string {
	var out []string
	for i := 0; i < len(f.dev); i++ {
		name := fmt.Sprintf("dev-%04d", i)
		if d, ok := f.dev[name]; ok && d.wave == w {
			out = append(out, name)
		}
	}
	return out
}

func (f *sim) refreshOpen() {
	for i := range f.s.Waves {
		f.s.Waves[i].Open = false
	}
	for _, d := range f.dev {
		if !d.offline && !d.state.Terminal() {
			f.s.Waves[d.wave].Open = true
		}
	}
}

func (f *sim) apply(ev Event) error {
	f.t.Helper()
	f.refreshOpen()
	next, acts, err := Transition(f.s, ev, t0.Add(time.Minute))
	if err != nil {
		return err
	}
	f.s = next
	f.acts = append(f.acts, acts...)
	for _, a := range acts {
		switch a := a.(type) {
		case Audit:
			if a.Type != EventDevice {
				f.events = append(f.events, a.Type)
			}
		case RevertApplied:
			for _, d := range f.dev {
				if d.state != states.Pending && !d.state.Failure() {
					f.move(d, states.Pending, ActionRevert)
				}
			}
		}
	}
	return nil
}

func (f *sim) must(ev Event) {
	f.t.Helper()
	if err := f.apply(ev); err != nil {
		f.t.Fatalf("Transition(%T) = %v", ev, err)
	}
}

// move changes a device's row the way the runner's RevertApplied does,
// keeping the counters in step (no audit, as in the store).
func (f *sim) move(d *simDev, to states.Device, action string) {
	f.s.Waves[d.wave].Counts[d.state]--
	f.s.Waves[d.wave].Counts[to]++
	d.state, d.action = to, action
}

// heartbeat serves the device like the runner does and reports whether it
// got an assignment.
func (f *sim) heartbeat(name string) bool {
	f.t.Helper()
	d := f.dev[name]
	d.offline = false
	serve, assign := Serve(f.s.Phase, f.s.Current, d.action, d.wave, d.state)
	if assign {
		f.must(Moved{Device: name, Wave: d.wave, From: d.state, To: states.Assigned})
		d.state = states.Assigned
	}
	return serve
}

func (f *sim) report(name string, to states.Device) {
	f.t.Helper()
	d := f.dev[name]
	changed, err := CheckReport(d.action, d.state, to)
	if err != nil {
		f.t.Fatalf("CheckReport(%s, %s, %s) = %v", d.action, d.state, to, err)
	}
	if changed {
		from := d.state
		d.state = to
		f.must(Moved{Device: name, Wave: d.wave, From: from, To: to})
	}
}

// finishWave serves and reports every device of wave w with state to.
func (f *sim) finishWave(w int, to states.Device) {
	f.t.Helper()
	for _, name := range f.inWave(w) {
		if !f.heartbeat(name) {
			f.t.Fatalf("device %s of wave %d not served (rollout %s, wave %d)", name, w, f.s.Phase, f.s.Current)
		}
		f.report(name, states.Downloading)
		f.report(name, to)
	}
}

func (f *sim) want(phase states.Rollout, current int) {
	f.t.Helper()
	if f.s.Phase != phase || f.s.Current != current {
		f.t.Fatalf("rollout = %s at wave %d, want %s at wave %d (events %v)", f.s.Phase, f.s.Current, phase, current, f.events)
	}
}

func documentedPlan() Strategy {
	return Strategy{Waves: []WaveSpec{{1, ApprovalAuto}, {10, ApprovalAuto}, {50, ApprovalManual}, {100, ApprovalAuto}}}
}

func TestDocumentedPlanWithManualGate(t *testing.T) {
	f := newSim(t, documentedPlan(), 200) // waves of 2, 18, 80, 100
	if got, want := f.s.Waves[0].Devices, 2; got != want {
		t.Fatalf("wave 0 size = %d, want %d", got, want)
	}
	f.must(Evaluate{})
	f.want(states.Running, 0)
	if f.heartbeat(f.inWave(1)[0]) {
		t.Fatal("wave 1 device served before wave 1 was reached")
	}
	f.finishWave(0, states.Healthy)
	f.want(states.Running, 1)
	f.finishWave(1, states.Healthy)
	f.want(states.WaitingForApproval, 1)
	if f.heartbeat(f.inWave(2)[0]) {
		t.Fatal("wave 2 device served while waiting for approval")
	}
	f.must(Approve{})
	f.want(states.Running, 2)
	f.finishWave(2, states.Healthy)
	f.want(states.Running, 3)
	f.finishWave(3, states.Healthy)
	f.want(states.Completed, 3)
	want := []string{EventAdvanced, EventWaiting, EventApproved, EventAdvanced, EventAdvanced, EventCompleted}
	if diff := cmp.Diff(want, f.events); diff != "" {
		t.Errorf("audit events (-want +got):\n%s", diff)
	}
}

func TestDefaultSingleWave(t *testing.T) {
	st, err := ParseStrategy(nil)
	if err != nil {
		t.Fatal(err)
	}
	f := newSim(t, st, 5)
	if len(f.s.Waves) != 1 || f.s.Waves[0].Devices != 5 {
		t.Fatalf("default strategy waves = %+v, want one wave of 5", f.s.Waves)
	}
	f.finishWave(0, states.Healthy)
	f.want(states.Completed, 0)
}

func TestHaltAtFirstFailureWithToleranceZero(t *testing.T) {
	f := newSim(t, Strategy{Waves: []WaveSpec{{50, ApprovalAuto}, {100, ApprovalAuto}}}, 10)
	w0 := f.inWave(0)
	f.heartbeat(w0[0])
	f.report(w0[0], states.Failed)
	f.want(states.Halted, 0)
	if f.heartbeat(w0[1]) {
		t.Error("new assignment served while halted")
	}
	last := f.acts[len(f.acts)-1].(Audit)
	wantData := map[string]any{"reason": "failure_rate", "wave": 0, "failures": 1, "acknowledged_failures": 0, "tolerance": 0.0, "max_failure_rate": 0.0, "devices": 10}
	if diff := cmp.Diff(wantData, last.Data); last.Type != EventHalted || diff != "" {
		t.Errorf("halt audit = %s (-want +got):\n%s", last.Type, diff)
	}
}

// TestHaltRecordsDecimalTolerance: rate 0.1 over 3 devices tolerates 0
// failures beyond the acknowledged (0.3 < 1) and the halt records the
// tolerance as 0.3, not 0.30000000000000004.
func TestHaltRecordsDecimalTolerance(t *testing.T) {
	f := newSim(t, Strategy{Waves: []WaveSpec{{100, ApprovalAuto}}, MaxFailureRate: 0.1}, 3)
	w0 := f.inWave(0)
	f.heartbeat(w0[0])
	f.report(w0[0], states.RolledBack)
	f.want(states.Halted, 0)
	last := f.acts[len(f.acts)-1].(Audit)
	if last.Type != EventHalted || last.Data["tolerance"] != 0.3 || last.Data["failures"] != 1 {
		t.Errorf("halt audit = %s %v, want tolerance 0.3 and failures 1", last.Type, last.Data)
	}
}

func TestHaltMidWaveFleetWide(t *testing.T) {
	// 100 devices, tolerance 0.05 × 100 = 5: the sixth failure halts,
	// while most of wave 1 is still in flight.
	f := newSim(t, Strategy{Waves: []WaveSpec{{10, ApprovalAuto}, {100, ApprovalAuto}}, MaxFailureRate: 0.05}, 100)
	f.finishWave(0, states.Healthy)
	f.want(states.Running, 1)
	w1 := f.inWave(1)
	for _, d := range w1[:20] {
		f.heartbeat(d)
		f.report(d, states.Downloading)
	}
	for i, d := range w1[:6] {
		f.report(d, states.RolledBack)
		if i < 5 {
			f.want(states.Running, 1)
		}
	}
	f.want(states.Halted, 1)
	if f.heartbeat(w1[30]) {
		t.Error("pending device of wave 1 served while halted")
	}
	if !f.heartbeat(w1[10]) {
		t.Error("in-flight device of wave 1 lost its assignment while halted")
	}
}

func TestResumeAcknowledgesThenHaltsOnOneMore(t *testing.T) {
	f := newSim(t, Strategy{Waves: []WaveSpec{{30, ApprovalAuto}, {100, ApprovalAuto}}}, 10)
	w0 := f.inWave(0)
	for _, d := range w0 {
		f.heartbeat(d)
	}
	f.report(w0[0], states.Failed)
	f.report(w0[1], states.RolledBack) // recorded while halted
	f.want(states.Halted, 0)
	if err := f.apply(Approve{}); !errors.Is(err, errdefs.ErrConflict) {
		t.Errorf("Approve on a halted rollout = %v, want conflict", err)
	}
	f.must(Resume{})
	f.want(states.Running, 0)
	if f.s.Acknowledged != 2 {
		t.Errorf("acknowledged = %d, want 2", f.s.Acknowledged)
	}
	f.report(w0[2], states.Failed)
	f.want(states.Halted, 0)
	f.must(Resume{})
	// Every wave-0 device is terminal: resume re-evaluates at once and
	// advances.
	f.want(states.Running, 1)
}

func TestResumeReevaluatesAtOnceToCompletion(t *testing.T) {
	f := newSim(t, DefaultStrategy(), 3)
	f.must(Halt{})
	for _, d := range f.inWave(0) {
		if f.heartbeat(d) {
			t.Fatal("served while halted")
		}
	}
	f.must(Resume{})
	f.finishWave(0, states.Healthy)
	f.want(states.Completed, 0)
	if err := f.apply(Halt{}); !errors.Is(err, errdefs.ErrConflict) {
		t.Errorf("Halt on a completed rollout = %v, want conflict", err)
	}
}

func TestOfflineDevicesDoNotBlockAndAreServedLater(t *testing.T) {
	f := newSim(t, Strategy{Waves: []WaveSpec{{50, ApprovalAuto}, {100, ApprovalAuto}}}, 4)
	w0, w1 := f.inWave(0), f.inWave(1)
	f.dev[w0[1]].offline = true
	f.dev[w1[0]].offline = true
	f.heartbeat(w0[0])
	f.report(w0[0], states.Healthy)
	f.want(states.Running, 1) // w0[1] is offline: wave 0 is complete
	f.heartbeat(w1[1])
	f.report(w1[1], states.Healthy)
	f.want(states.Completed, 1)
	// The offline devices come back and still get their assignment.
	for _, d := range []string{w0[1], w1[0]} {
		if !f.heartbeat(d) {
			t.Fatalf("returning device %s not served", d)
		}
		f.report(d, states.Healthy)
	}
	if got := f.s.Waves[0].Counts[states.Healthy] + f.s.Waves[1].Counts[states.Healthy]; got != 4 {
		t.Errorf("healthy = %d, want 4", got)
	}
}

func TestOfflineDeviceStillBlocksOnceItComesBack(t *testing.T) {
	f := newSim(t, Strategy{Waves: []WaveSpec{{50, ApprovalAuto}, {100, ApprovalAuto}}}, 4)
	w0 := f.inWave(0)
	f.heartbeat(w0[0])
	f.heartbeat(w0[1])
	f.report(w0[0], states.Healthy)
	f.want(states.Running, 0) // w0[1] is live and assigned
	f.dev[w0[1]].offline = true
	f.must(Evaluate{})
	f.want(states.Running, 1)
}

func TestAbortKeep(t *testing.T) {
	f := newSim(t, documentedPlan(), 10)
	f.finishWave(0, states.Healthy)
	f.must(Abort{Policy: PolicyKeep})
	f.want(states.Aborted, 1)
	if _, ok := f.acts[len(f.acts)-1].(ReleaseAll); !ok {
		t.Errorf("last action = %T, want ReleaseAll", f.acts[len(f.acts)-1])
	}
	if err := f.apply(Abort{Policy: PolicyKeep}); !errors.Is(err, errdefs.ErrConflict) {
		t.Errorf("second Abort = %v, want conflict", err)
	}
	if err := f.apply(Resume{}); !errors.Is(err, errdefs.ErrConflict) {
		t.Errorf("Resume after abort = %v, want conflict", err)
	}
}

func TestAbortRevertWithOfflineDevice(t *testing.T) {
	f := newSim(t, Strategy{Waves: []WaveSpec{{50, ApprovalAuto}, {100, ApprovalManual}}, MaxFailureRate: 0.5}, 6)
	w0 := f.inWave(0) // 3 devices
	f.heartbeat(w0[0])
	f.report(w0[0], states.Healthy)
	f.heartbeat(w0[1])
	f.report(w0[1], states.Failed)
	f.heartbeat(w0[2])
	f.report(w0[2], states.Healthy)
	f.want(states.WaitingForApproval, 0)
	f.dev[w0[2]].offline = true
	f.must(Abort{Policy: PolicyRevert})
	f.want(states.Aborted, 0)
	// The two healthy devices get revert assignments; the failed one
	// (already back on its previous artifact) does not.
	if !f.heartbeat(w0[0]) || f.heartbeat(w0[1]) {
		t.Fatal("revert served to the wrong devices")
	}
	f.report(w0[0], states.Reverting)
	f.report(w0[0], states.Reverted)
	// The offline device reverts when it next checks in; abort did not
	// wait for it.
	if !f.heartbeat(w0[2]) {
		t.Fatal("returning device did not get its revert assignment")
	}
	f.report(w0[2], states.Reverted)
	if got := f.s.Waves[0].Counts[states.Reverted]; got != 2 {
		t.Errorf("reverted = %d, want 2", got)
	}
	f.want(states.Aborted, 0)
}

func TestEmptyWavesAndAllOfflineWavesPassThrough(t *testing.T) {
	// N = 3 with 1/10/50/100: cuts 1, 1, 2, 3 → wave 1 is empty.
	f := newSim(t, Strategy{Waves: []WaveSpec{{1, ApprovalAuto}, {10, ApprovalAuto}, {50, ApprovalAuto}, {100, ApprovalAuto}}}, 3)
	f.dev[f.inWave(2)[0]].offline = true
	f.finishWave(0, states.Healthy)
	f.want(states.Running, 3)
}

func TestCheckReport(t *testing.T) {
	tests := []struct {
		action   string
		from, to states.Device
		changed  bool
		err      error
	}{
		{ActionApply, states.Assigned, states.Downloading, true, nil},
		{ActionApply, states.Verifying, states.Downloading, true, nil},
		{ActionApply, states.Downloading, states.Downloading, false, nil},
		{ActionApply, states.Applying, states.Healthy, true, nil},
		{ActionApply, states.Healthy, states.Healthy, false, nil},
		{ActionApply, states.Healthy, states.Failed, false, errdefs.ErrConflict},
		{ActionApply, states.Pending, states.Healthy, false, errdefs.ErrConflict},
		{ActionApply, states.Assigned, states.Reverted, false, errdefs.ErrInvalid},
		{ActionApply, states.Assigned, states.Assigned, false, errdefs.ErrInvalid},
		{ActionApply, states.Assigned, "exploded", false, errdefs.ErrInvalid},
		{ActionRevert, states.Assigned, states.Reverting, true, nil},
		{ActionRevert, states.Assigned, states.Healthy, false, errdefs.ErrInvalid},
		{ActionRevert, states.Reverted, states.RevertFailed, false, errdefs.ErrConflict},
	}
	for _, tt := range tests {
		changed, err := CheckReport(tt.action, tt.from, tt.to)
		if changed != tt.changed || !errors.Is(err, tt.err) || (tt.err == nil) != (err == nil) {
			t.Errorf("CheckReport(%s, %s, %s) = %v, %v; want %v, %v", tt.action, tt.from, tt.to, changed, err, tt.changed, tt.err)
		}
	}
}

func TestTransitionDoesNotMutateInput(t *testing.T) {
	s := Initial(DefaultStrategy(), []int{2}, t0)
	before := s.Clone()
	if _, _, err := Transition(s, Moved{Device: "a", Wave: 0, From: states.Pending, To: states.Assigned}, t0); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(before, s); diff != "" {
		t.Errorf("input state changed (-before +after):\n%s", diff)
	}
	if _, _, err := Transition(s, Moved{Wave: 0, From: states.Healthy, To: states.Failed}, t0); err == nil {
		t.Error("Moved from a state with no device: want an error")
	}
}

func TestPreviousVersion(t *testing.T) {
	inst := func(v, prev string) []*devicev1.InstalledArtifact {
		return []*devicev1.InstalledArtifact{{Name: "other", Version: "9"}, {Name: "app", Version: v, PreviousVersion: prev}}
	}
	tests := []struct {
		installed []*devicev1.InstalledArtifact
		want      string
	}{
		{nil, ""},
		{inst("1.0", ""), "1.0"},
		{inst("2.0", "1.0"), "1.0"}, // already on the target: its previous
		{inst("2.0", ""), ""},
		{inst("../../etc", ""), ""},
		{inst("2.0", "2.0"), ""},
	}
	for _, tt := range tests {
		if got := previousVersion(tt.installed, "app", "2.0"); got != tt.want {
			t.Errorf("previousVersion(%v) = %q, want %q", tt.installed, got, tt.want)
		}
	}
}
