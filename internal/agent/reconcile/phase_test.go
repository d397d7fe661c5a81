package reconcile

import (
	"testing"

	"github.com/meshanics/meshanics/internal/states"
)

func TestNext(t *testing.T) {
	for _, tc := range []struct {
		p, outcome Phase
		e          Event
		next, out  Phase
		ok         bool
	}{
		{Downloading, "", EvFetched, Verifying, "", true},
		{Downloading, "", EvTransient, Downloading, "", true},
		{Downloading, "", EvRejected, Failed, "", true},
		{Verifying, "", EvVerified, Applying, "", true},
		{Verifying, "", EvTransient, Downloading, "", true},
		{Verifying, "", EvRejected, Failed, "", true},
		{Applying, "", EvActivated, Probing, "", true},
		{Applying, "", EvActivateFailed, RollingBack, Failed, true},
		{Applying, "", EvRejected, Failed, "", true},
		{Probing, "", EvProbeOK, Healthy, "", true},
		{Probing, "", EvProbeFailed, RollingBack, RolledBack, true},
		{Probing, "", EvProbeRefused, RollingBack, Failed, true},
		{RollingBack, RolledBack, EvUndone, RolledBack, "", true},
		{RollingBack, Failed, EvUndone, Failed, "", true},
		{RollingBack, RolledBack, EvUndoFailed, Failed, "", true},
		{Reverting, "", EvRevertDone, Reverted, "", true},
		{Reverting, "", EvRevertFailed, RevertFailed, "", true},
		// Impossible events change nothing.
		{Downloading, "", EvProbeOK, Downloading, "", false},
		{Probing, "", EvTransient, Probing, "", false},
		{Healthy, "", EvFetched, Healthy, "", false},
		{Applying, "", EvTransient, Applying, "", false},
	} {
		next, out, ok := Next(tc.p, tc.outcome, tc.e)
		if next != tc.next || out != tc.out || ok != tc.ok {
			t.Errorf("Next(%s, %q, %s) = %s, %q, %v; want %s, %q, %v", tc.p, tc.outcome, tc.e, next, out, ok, tc.next, tc.out, tc.ok)
		}
	}
}

func TestRecover(t *testing.T) {
	for _, tc := range []struct {
		p, outcome Phase
		next, out  Phase
	}{
		{Downloading, "", Downloading, ""},
		{Verifying, "", Downloading, ""},
		{Applying, "", RollingBack, RolledBack},
		{Probing, "", RollingBack, RolledBack},
		{RollingBack, Failed, RollingBack, Failed},
		{RollingBack, "", RollingBack, RolledBack},
		{Reverting, "", Reverting, ""},
		{"bogus", "", RollingBack, Failed},
	} {
		next, out, _ := Recover(tc.p, tc.outcome)
		if next != tc.next || out != tc.out {
			t.Errorf("Recover(%s, %q) = %s, %q; want %s, %q", tc.p, tc.outcome, next, out, tc.next, tc.out)
		}
	}
}

func TestReportedStatesAreReportable(t *testing.T) {
	for _, p := range []Phase{Downloading, Verifying, Applying, Probing, RollingBack, Reverting, Healthy, RolledBack, Failed, Reverted, RevertFailed} {
		d := p.Reported()
		if !d.Reportable() {
			t.Errorf("%s.Reported() = %q, not reportable", p, d)
		}
		if p.Terminal() != d.Terminal() {
			t.Errorf("%s.Terminal() = %v but reported %s terminal=%v", p, p.Terminal(), d, d.Terminal())
		}
	}
	if Probing.Reported() != states.Applying {
		t.Errorf("Probing.Reported() = %s, want applying", Probing.Reported())
	}
}
