package reconcile

import (
	"strings"
	"testing"

	devicev1 "github.com/meshanics/meshanics/proto/meshanics/device/v1"
)

// A revert undoes its assignment's artifact only: when the slot runs
// something else (the apply never took, or another version came since),
// nothing changes, whether or not it names a version to go back to.
func TestRevertOfAnArtifactNotRunningChangesNothing(t *testing.T) {
	e := newEnv(t)
	r := e.start(t)
	a1, a2, a3 := e.repo.model("det", "1", "w1"), e.repo.model("det", "2", "w2"), e.repo.model("det", "3", "w3")
	r.Reconcile(ctx, []*devicev1.Assignment{apply("a1", a1, nil)})
	r.Reconcile(ctx, []*devicev1.Assignment{apply("a2", a2, nil)})
	for _, rv := range []*devicev1.Assignment{
		{Id: "rv-to-1", Action: "revert", Artifact: a3, RevertTo: a1},
		{Id: "rv-to-nothing", Action: "revert", Artifact: a3},
	} {
		r.Reconcile(ctx, []*devicev1.Assignment{rv})
		if got := e.rep.got[len(e.rep.got)-1]; got != rv.Id+" reverted not running 3; nothing to revert" {
			t.Errorf("%s: last report %q, want reverted with nothing to revert", rv.Id, got)
		}
		if cur := e.current("det"); cur != "w2" {
			t.Errorf("%s: current = %q, want w2 untouched", rv.Id, cur)
		}
	}
	if inst := r.Installed(); len(inst) != 1 || inst[0].Version != "2" || inst[0].PreviousVersion != "1" {
		t.Errorf("Installed = %v, want 2 with previous 1", inst)
	}
	if strings.Contains(strings.Join(e.rep.got, "\n"), "reverting") {
		t.Errorf("a no-op revert reported reverting: %v", e.rep.got)
	}
}
