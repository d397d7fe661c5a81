package reconcile

import "github.com/meshanics/meshanics/internal/states"

// Phase is the persisted phase of an assignment in flight, finer than the
// reported state: Probing and RollingBack are both reported as applying.
type Phase string

const (
	Downloading  Phase = "downloading"   // bytes stream into a partial file
	Verifying    Phase = "verifying"     // bytes staged; digest and descriptor being checked
	Applying     Phase = "applying"      // activation may have begun; Prior is what to go back to
	Probing      Phase = "probing"       // activation done; health probe running
	RollingBack  Phase = "rolling_back"  // undoing an activation; Outcome says how it ends
	Reverting    Phase = "reverting"     // a revert assignment in progress
	Healthy      Phase = "healthy"       // terminal
	RolledBack   Phase = "rolled_back"   // terminal
	Failed       Phase = "failed"        // terminal
	Reverted     Phase = "reverted"      // terminal
	RevertFailed Phase = "revert_failed" // terminal
)

func (p Phase) String() string { return string(p) }

// Terminal reports whether p ends the assignment.
func (p Phase) Terminal() bool {
	switch p {
	case Healthy, RolledBack, Failed, Reverted, RevertFailed:
		return true
	}
	return false
}

// Reported is the SPEC §4.2 state the server sees for p.
func (p Phase) Reported() states.Device {
	switch p {
	case Probing, RollingBack:
		return states.Applying
	}
	d, _ := states.ParseDevice(string(p))
	return d
}

// Event is what a step of the loop observed.
type Event int

const (
	EvFetched        Event = iota // bytes streamed into the partial file
	EvTransient                   // download or verification problem: retry later
	EvRejected                    // permanent refusal before any side effect (shape, policy, not configured)
	EvVerified                    // digest, length and descriptor match
	EvActivated                   // activation completed
	EvActivateFailed              // activation failed or timed out
	EvProbeOK                     // probe healthy
	EvProbeFailed                 // every probe attempt failed
	EvProbeRefused                // probe refused by policy
	EvUndone                      // rollback completed
	EvUndoFailed                  // rollback failed
	EvRevertDone                  // revert completed
	EvRevertFailed                // revert impossible or failed
)

var eventNames = [...]string{"fetched", "transient", "rejected", "verified", "activated", "activate_failed",
	"probe_ok", "probe_failed", "probe_refused", "undone", "undo_failed", "revert_done", "revert_failed"}

func (e Event) String() string {
	if int(e) < len(eventNames) {
		return eventNames[e]
	}
	return "unknown"
}

// Next is the pure transition function of the update lifecycle. outcome is
// the terminal phase a RollingBack phase will end in (it is carried in the
// journal as Task.Outcome); for any other next phase it is "". ok is false
// for an event that cannot happen in p; the loop treats that as a bug and
// fails the assignment.
func Next(p Phase, outcome Phase, e Event) (next, nextOutcome Phase, ok bool) {
	switch {
	case p == Downloading && e == EvFetched:
		return Verifying, "", true
	case (p == Downloading || p == Verifying) && e == EvTransient:
		return Downloading, "", true
	case (p == Downloading || p == Verifying || p == Applying) && e == EvRejected:
		return Failed, "", true
	case p == Verifying && e == EvVerified:
		return Applying, "", true
	case p == Applying && e == EvActivated:
		return Probing, "", true
	case p == Applying && e == EvActivateFailed:
		return RollingBack, Failed, true
	case p == Probing && e == EvProbeOK:
		return Healthy, "", true
	case p == Probing && e == EvProbeFailed:
		return RollingBack, RolledBack, true
	case p == Probing && e == EvProbeRefused:
		return RollingBack, Failed, true
	case p == RollingBack && e == EvUndone:
		if outcome == Failed {
			return Failed, "", true
		}
		return RolledBack, "", true
	case p == RollingBack && e == EvUndoFailed:
		return Failed, "", true
	case p == Reverting && e == EvRevertDone:
		return Reverted, "", true
	case p == Reverting && e == EvRevertFailed:
		return RevertFailed, "", true
	}
	return p, outcome, false
}

// Recover maps a phase persisted before a crash (or a stop) to the safe
// next step: before activation the work is redone from the download; from
// activation on, the slot goes back to what it ran before, because a
// half-probed version has not earned trust; rollbacks and reverts are
// idempotent and simply run again.
func Recover(p Phase, outcome Phase) (next, nextOutcome Phase, detail string) {
	switch p {
	case Downloading, Verifying:
		return Downloading, "", ""
	case Applying, Probing:
		return RollingBack, RolledBack, "agent restarted while applying; rolled back to the previous version"
	case RollingBack:
		if outcome == "" {
			outcome = RolledBack
		}
		return RollingBack, outcome, ""
	case Reverting:
		return Reverting, "", ""
	}
	// Terminal phases are never left in a task; an unknown phase is a
	// journal from the future or a corrupt one: roll back to be safe.
	return RollingBack, Failed, "unknown persisted phase " + string(p) + "; rolled back"
}
