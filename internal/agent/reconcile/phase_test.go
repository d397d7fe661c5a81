package reconcile

import (
	"slices"
	"testing"

	"github.com/meshanics/meshanics/internal/agent/statefile"
	"github.com/meshanics/meshanics/internal/artifact"
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

func TestSettleSlotDropsWhatIsNoLongerKept(t *testing.T) {
	img := func(v, image string) *statefile.Artifact {
		return &statefile.Artifact{Kind: "container", Name: "web", Version: v, Container: &artifact.ContainerSpec{Image: image}}
	}
	versions := func(as []*statefile.Artifact) []string {
		var out []string
		for _, a := range as {
			out = append(out, a.Version)
		}
		return out
	}
	r := &Reconciler{}
	for _, tc := range []struct {
		name       string
		cur, prev  *statefile.Artifact
		task       *statefile.Task
		p          Phase
		wantDrop   []string
		wantCurVer string
	}{
		{"healthy drops the one before previous", img("2", "a"), img("1", "b"), &statefile.Task{Artifact: *img("3", "c"), Prior: img("2", "a")}, Healthy, []string{"1"}, "3"},
		{"healthy keeps an image previous still uses", img("2", "a"), img("1", "a"), &statefile.Task{Artifact: *img("3", "c"), Prior: img("2", "a")}, Healthy, nil, "3"},
		{"rolled back drops the failed version", img("2", "a"), img("1", "b"), &statefile.Task{Artifact: *img("3", "c"), Prior: img("2", "a")}, RolledBack, []string{"3"}, "2"},
		{"revert to nothing drops both", img("2", "a"), img("1", "b"), &statefile.Task{Action: "revert", Artifact: *img("2", "a"), Prior: img("2", "a")}, Reverted, []string{"2", "1"}, ""},
	} {
		j := statefile.NewJournal()
		j.Slot("web").Current, j.Slot("web").Previous = tc.cur, tc.prev
		got := versions(r.settleSlot(j, tc.task, tc.p))
		if !slices.Equal(got, tc.wantDrop) {
			t.Errorf("%s: dropped %v, want %v", tc.name, got, tc.wantDrop)
		}
		cur := ""
		if s := j.Slots["web"]; s != nil && s.Current != nil {
			cur = s.Current.Version
		}
		if cur != tc.wantCurVer {
			t.Errorf("%s: current %q, want %q", tc.name, cur, tc.wantCurVer)
		}
	}
}
