// Package states names the rollout and device-in-rollout states of SPEC §7
// and the assignment states the agent reports (SPEC §4.2). Stdlib-only leaf.
package states

// Rollout is the state of a rollout.
type Rollout string

const (
	Running            Rollout = "running"
	WaitingForApproval Rollout = "waiting_for_approval"
	Halted             Rollout = "halted"
	Completed          Rollout = "completed"
	Aborted            Rollout = "aborted"
)

func (r Rollout) String() string { return string(r) }

// Active reports whether a rollout still holds its devices (one active
// rollout per device).
func (r Rollout) Active() bool {
	return r == Running || r == WaitingForApproval || r == Halted
}

// Device is the state of one device in a rollout; the agent reports the
// states from Downloading on.
type Device string

const (
	Pending      Device = "pending"
	Assigned     Device = "assigned"
	Downloading  Device = "downloading"
	Verifying    Device = "verifying"
	Applying     Device = "applying"
	Healthy      Device = "healthy"
	RolledBack   Device = "rolled_back"
	Failed       Device = "failed"
	Reverting    Device = "reverting"
	Reverted     Device = "reverted"
	RevertFailed Device = "revert_failed"
)

func (d Device) String() string { return string(d) }

// AllDevice lists every device state in lifecycle order.
var AllDevice = []Device{Pending, Assigned, Downloading, Verifying, Applying, Healthy, RolledBack, Failed, Reverting, Reverted, RevertFailed}

// Terminal reports whether no further report is expected for an apply
// (healthy, rolled_back, failed) or a revert (reverted, revert_failed).
func (d Device) Terminal() bool {
	switch d {
	case Healthy, RolledBack, Failed, Reverted, RevertFailed:
		return true
	}
	return false
}

// Failure reports whether the state counts against the halt rule.
func (d Device) Failure() bool { return d == Failed || d == RolledBack }

// Reportable reports whether an agent may report this state.
func (d Device) Reportable() bool {
	switch d {
	case Downloading, Verifying, Applying, Healthy, RolledBack, Failed, Reverting, Reverted, RevertFailed:
		return true
	}
	return false
}

// ParseDevice returns the device state named s.
func ParseDevice(s string) (Device, bool) {
	for _, d := range AllDevice {
		if string(d) == s {
			return d, true
		}
	}
	return "", false
}

// Device presence as shown by the operator API.
const (
	Online         = "online"
	Offline        = "offline"
	Decommissioned = "decommissioned"
)
