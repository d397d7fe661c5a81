package reconcile

import (
	"context"
	"testing"
	"time"

	"github.com/meshanics/meshanics/internal/agent/apply/file"
	"github.com/meshanics/meshanics/internal/agent/statefile"
	devicev1 "github.com/meshanics/meshanics/proto/meshanics/device/v1"
)

// stagingModel is a model applier that also pulls, like a container
// runtime; it records the deadline it was given.
type stagingModel struct {
	file.Model
	deadline time.Time
	pulls    int
}

func (s *stagingModel) Stage(ctx context.Context, _ *statefile.Artifact) error {
	s.deadline, _ = ctx.Deadline()
	s.pulls++
	return nil
}

func TestPullGetsTheDownloadDeadlineAndComesAfterPolicy(t *testing.T) {
	e := newEnv(t)
	sm := &stagingModel{Model: e.opts.Appliers["model"].(file.Model)}
	e.opts.Appliers["model"] = sm
	e.opts.Deadlines.Download = 5 * time.Hour // a big image on a slow link
	r := e.start(t)
	r.Reconcile(ctx, []*devicev1.Assignment{apply("a1", e.repo.model("det", "1", "w1"), nil)})
	if got := e.rep.last("a1"); got != "healthy" {
		t.Fatalf("a1 ended %q: %v", got, e.rep.got)
	}
	if left := time.Until(sm.deadline); left < 4*time.Hour {
		t.Errorf("the pull had %v left, want the download deadline (5h)", left)
	}
	// A probe the device refuses fails the update before anything is pulled.
	r.Reconcile(ctx, []*devicev1.Assignment{apply("a2", e.repo.model("det", "2", "w2"), &devicev1.HealthProbe{Type: "exec", Target: "/usr/bin/true"})})
	if got := e.rep.last("a2"); got != "failed" || sm.pulls != 1 {
		t.Errorf("a2 with a refused probe ended %q after %d pulls, want failed after 1 (a1's)", got, sm.pulls)
	}
}
