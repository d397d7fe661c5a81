package reconcile

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/meshanics/meshanics/internal/errdefs"
	"github.com/meshanics/meshanics/internal/healthprobe"
	devicev1 "github.com/meshanics/meshanics/proto/meshanics/device/v1"
)

// refusingProber passes Check but is refused while running (a name that
// resolves off the device, a binary swapped for a shell).
type refusingProber struct{}

func (refusingProber) Check(healthprobe.Spec) error { return nil }
func (refusingProber) Run(context.Context, healthprobe.Spec) error {
	return fmt.Errorf("probe refused: %w: not loopback", errdefs.ErrPermission)
}

func TestProbeRefusedWhileRunningFailsAndRestoresPrevious(t *testing.T) {
	e := newEnv(t)
	r := e.start(t)
	r.Reconcile(ctx, []*devicev1.Assignment{apply("a1", e.repo.model("det", "1", "w1"), nil)})
	e.opts.Prober = refusingProber{}
	r = e.start(t)
	r.Reconcile(ctx, []*devicev1.Assignment{apply("a2", e.repo.model("det", "2", "w2"), fileProbe("/x"))})
	got := e.rep.states("a2")
	if len(got) == 0 || got[len(got)-1] != "failed" || !strings.Contains(e.rep.got[len(e.rep.got)-1], "restored 1") {
		t.Errorf("a2 reports %v (last %q), want failed saying 1 was restored", got, e.rep.got[len(e.rep.got)-1])
	}
	if cur := e.current("det"); cur != "w1" {
		t.Errorf("current = %q, want w1", cur)
	}
	if inst := r.Installed(); len(inst) != 1 || inst[0].Version != "1" {
		t.Errorf("Installed = %v, want det 1", inst)
	}
}
