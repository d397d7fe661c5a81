package rollout

import (
	"fmt"
	"math"
	"time"

	"github.com/meshanics/meshanics/internal/errdefs"
	"github.com/meshanics/meshanics/internal/states"
)

// WaveState is one wave as the core sees it.
type WaveState struct {
	Approval Approval
	// Devices is the number of devices the partition put in this wave.
	Devices int
	// Counts holds the devices of this wave by state; it always sums to
	// Devices.
	Counts map[states.Device]int
	// Open reports whether a live (not offline) device of this wave is not
	// yet terminal. It is an input from the runner, which derives liveness
	// from heartbeats; it must be accurate for the waves from Current up to
	// the first open one (the core never looks further).
	Open bool
}

// State is everything a rollout transition decides on. It holds counters,
// not device lists, so that one report costs the same for 10 devices and for
// 100,000.
type State struct {
	Phase          states.Rollout
	Current        int // highest wave reached (its devices are served)
	Waves          []WaveState
	MaxFailureRate float64
	Acknowledged   int
	Policy         Policy // set when aborted
	UpdatedAt      time.Time
}

// N is the number of targeted devices.
func (s State) N() int {
	n := 0
	for _, w := range s.Waves {
		n += w.Devices
	}
	return n
}

// Failures counts devices in failed or rolled_back over all waves.
func (s State) Failures() int {
	f := 0
	for _, w := range s.Waves {
		f += w.Counts[states.Failed] + w.Counts[states.RolledBack]
	}
	return f
}

// Tolerance is max_failure_rate × N, the figure of the halt rule, rounded to
// nine decimals so that the audit shows 0.3 for 0.1 × 3, not binary noise.
func (s State) Tolerance() float64 {
	return math.Round(s.MaxFailureRate*float64(s.N())*1e9) / 1e9
}

// OverTolerance is the halt rule: failures − acknowledged > rate × N.
func (s State) OverTolerance() bool {
	return s.Failures()-s.Acknowledged > AllowedFailures(s.MaxFailureRate, s.N())
}

// Initial is the state of a new rollout whose partition put sizes[i]
// devices in wave i: running, wave 0 reached, every device pending.
func Initial(st Strategy, sizes []int, now time.Time) State {
	s := State{Phase: states.Running, MaxFailureRate: st.MaxFailureRate, UpdatedAt: now}
	for i, w := range st.Waves {
		s.Waves = append(s.Waves, WaveState{
			Approval: w.Approval,
			Devices:  sizes[i],
			Counts:   map[states.Device]int{states.Pending: sizes[i]},
			Open:     sizes[i] > 0,
		})
	}
	return s
}

// Clone returns a deep copy, so a transition never mutates its input.
func (s State) Clone() State {
	c := s
	c.Waves = make([]WaveState, len(s.Waves))
	for i, w := range s.Waves {
		c.Waves[i] = w
		c.Waves[i].Counts = make(map[states.Device]int, len(w.Counts))
		for k, v := range w.Counts {
			c.Waves[i].Counts[k] = v
		}
	}
	return c
}

// Event is something that happened to a rollout.
type Event interface{ eventName() string }

// Moved is a device changing state: served (pending → assigned), a report
// from the agent, or a revert queued. Wave is the device's wave.
type Moved struct {
	Device   string
	Wave     int
	From, To states.Device
}

// Evaluate asks for a re-check: liveness changed (devices went offline) or
// the rollout was just created.
type Evaluate struct{}

// Approve starts the next wave of a rollout waiting for approval.
type Approve struct{}

// Halt stops a rollout by operator decision.
type Halt struct{}

// Resume acknowledges the current failures and re-evaluates at once.
type Resume struct{}

// Abort ends a rollout for good.
type Abort struct{ Policy Policy }

func (Moved) eventName() string    { return "moved" }
func (Evaluate) eventName() string { return "evaluate" }
func (Approve) eventName() string  { return "approve" }
func (Halt) eventName() string     { return "halt" }
func (Resume) eventName() string   { return "resume" }
func (Abort) eventName() string    { return "abort" }

// Action is a side effect the runner performs in the same transaction.
type Action interface{ actionName() string }

// Audit appends an audit event about the rollout.
type Audit struct {
	Type string
	Data map[string]any
}

// RevertApplied turns the assignment of every device that was served the
// artifact and did not fail (it may have applied) into a revert assignment,
// and releases every other device.
type RevertApplied struct{}

// ReleaseAll withdraws every assignment of the rollout.
type ReleaseAll struct{}

func (Audit) actionName() string         { return "audit" }
func (RevertApplied) actionName() string { return "revert_applied" }
func (ReleaseAll) actionName() string    { return "release_all" }

// Audit event types.
const (
	EventCreated   = "rollout.created"
	EventAdvanced  = "rollout.wave_started"
	EventWaiting   = "rollout.waiting_for_approval"
	EventApproved  = "rollout.approved"
	EventHalted    = "rollout.halted"
	EventResumed   = "rollout.resumed"
	EventCompleted = "rollout.completed"
	EventAborted   = "rollout.aborted"
	EventDevice    = "rollout.device_state"
)

// Transition applies ev to s at now and returns the new state and the side
// effects to perform. It is pure: s is not modified. An operator command
// that does not fit the current state returns an errdefs.ErrConflict error
// and no change.
func Transition(s State, ev Event, now time.Time) (State, []Action, error) {
	s = s.Clone()
	var acts []Action
	switch e := ev.(type) {
	case Moved:
		if e.Wave < 0 || e.Wave >= len(s.Waves) {
			return State{}, nil, fmt.Errorf("rollout core: wave %d out of range", e.Wave)
		}
		w := &s.Waves[e.Wave]
		if w.Counts[e.From] <= 0 {
			return State{}, nil, fmt.Errorf("rollout core: no device of wave %d in state %s", e.Wave, e.From)
		}
		w.Counts[e.From]--
		w.Counts[e.To]++
		acts = append(acts, Audit{EventDevice, map[string]any{"device": e.Device, "wave": e.Wave, "from": string(e.From), "to": string(e.To)}})
	case Evaluate:
	case Approve:
		if s.Phase != states.WaitingForApproval {
			return State{}, nil, errdefs.Conflict(fmt.Sprintf("rollout is %s, not waiting_for_approval", s.Phase))
		}
		s.Phase = states.Running
		s.Current++
		acts = append(acts, Audit{EventApproved, map[string]any{"wave": s.Current}})
		acts = append(acts, Audit{EventAdvanced, map[string]any{"wave": s.Current, "devices": s.Waves[s.Current].Devices}})
	case Halt:
		if s.Phase != states.Running && s.Phase != states.WaitingForApproval {
			return State{}, nil, errdefs.Conflict(fmt.Sprintf("rollout is %s; only a running rollout can be halted", s.Phase))
		}
		s.Phase = states.Halted
		acts = append(acts, haltAudit(s, "operator"))
	case Resume:
		if s.Phase != states.Halted {
			return State{}, nil, errdefs.Conflict(fmt.Sprintf("rollout is %s, not halted", s.Phase))
		}
		s.Phase = states.Running
		s.Acknowledged = s.Failures()
		acts = append(acts, Audit{EventResumed, map[string]any{"wave": s.Current, "acknowledged_failures": s.Acknowledged}})
	case Abort:
		if !s.Phase.Active() {
			return State{}, nil, errdefs.Conflict(fmt.Sprintf("rollout is %s; only a running or halted rollout can be aborted", s.Phase))
		}
		if e.Policy != PolicyKeep && e.Policy != PolicyRevert {
			return State{}, nil, errdefs.Invalid("abort policy must be keep or revert")
		}
		s.Phase, s.Policy = states.Aborted, e.Policy
		acts = append(acts, Audit{EventAborted, map[string]any{"wave": s.Current, "policy": string(e.Policy), "failures": s.Failures()}})
		if e.Policy == PolicyRevert {
			acts = append(acts, RevertApplied{})
		} else {
			acts = append(acts, ReleaseAll{})
		}
	default:
		return State{}, nil, fmt.Errorf("rollout core: unknown event %T", ev)
	}
	acts = append(acts, settle(&s)...)
	s.UpdatedAt = now
	return s, acts, nil
}

// settle applies the automatic rules until nothing changes: the halt rule
// first (it holds even mid-wave and at an approval gate), then completion of
// the current wave, which advances, parks at a manual gate, or completes.
func settle(s *State) []Action {
	var acts []Action
	for {
		if s.Phase != states.Running && s.Phase != states.WaitingForApproval {
			return acts
		}
		if s.OverTolerance() {
			s.Phase = states.Halted
			return append(acts, haltAudit(*s, "failure_rate"))
		}
		if s.Phase != states.Running || s.Waves[s.Current].Open {
			return acts
		}
		if s.Current == len(s.Waves)-1 {
			s.Phase = states.Completed
			return append(acts, Audit{EventCompleted, map[string]any{"failures": s.Failures(), "devices": s.N()}})
		}
		next := s.Current + 1
		if s.Waves[next].Approval == ApprovalManual {
			s.Phase = states.WaitingForApproval
			return append(acts, Audit{EventWaiting, map[string]any{"completed_wave": s.Current, "next_wave": next}})
		}
		s.Current = next
		acts = append(acts, Audit{EventAdvanced, map[string]any{"wave": next, "devices": s.Waves[next].Devices}})
	}
}

func haltAudit(s State, reason string) Audit {
	return Audit{EventHalted, map[string]any{
		"reason":                reason,
		"wave":                  s.Current,
		"failures":              s.Failures(),
		"acknowledged_failures": s.Acknowledged,
		"tolerance":             s.Tolerance(),
		"max_failure_rate":      s.MaxFailureRate,
		"devices":               s.N(),
	}}
}

// CheckReport validates a device report against the device's row: the state
// must be one the agent may report for the assignment's action, and a
// terminal state is final. A repeat of the same terminal state returns
// (false, nil): nothing to do.
func CheckReport(action string, from, to states.Device) (changed bool, err error) {
	if !to.Reportable() {
		return false, errdefs.Invalid(fmt.Sprintf("state %q cannot be reported", truncate(string(to))))
	}
	revertState := to == states.Reverting || to == states.Reverted || to == states.RevertFailed
	if (action == ActionRevert) != revertState {
		return false, errdefs.Invalid(fmt.Sprintf("state %s does not belong to an %s assignment", to, action))
	}
	if from == states.Pending {
		return false, errdefs.Conflict("assignment was not served yet")
	}
	if from.Terminal() {
		if from == to {
			return false, nil
		}
		return false, errdefs.Conflict(fmt.Sprintf("assignment already ended in %s", from))
	}
	return from != to, nil
}

// Assignment actions.
const (
	ActionApply  = "apply"
	ActionRevert = "revert"
)

// Serve decides what a heartbeat gets from a device's row in a rollout:
// whether its assignment is served, and whether serving it moves the device
// from pending to assigned. Apply assignments are served for waves reached,
// not while halted (in-flight ones continue), and still after completion
// (a device that was offline converges when it returns). Revert assignments
// are served until they end.
func Serve(phase states.Rollout, current int, action string, wave int, state states.Device) (serve, assign bool) {
	if state.Terminal() {
		return false, false
	}
	if action == ActionRevert {
		return true, state == states.Pending
	}
	switch phase {
	case states.Running, states.WaitingForApproval, states.Completed:
		if state == states.Pending {
			return wave <= current, wave <= current
		}
		return true, false
	case states.Halted:
		return state != states.Pending, false
	}
	return false, false
}
