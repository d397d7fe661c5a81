package reconcile

import (
	"context"
	"errors"
	"strings"
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
	fail     error
}

func (s *stagingModel) Stage(ctx context.Context, _ *statefile.Artifact) error {
	s.deadline, _ = ctx.Deadline()
	s.pulls++
	return s.fail
}

func TestPullErrorIsTransient(t *testing.T) {
	e := newEnv(t)
	sm := &stagingModel{Model: e.opts.Appliers["model"].(file.Model), fail: errors.New("registry unreachable")}
	e.opts.Appliers["model"] = sm
	r := e.start(t)
	a := apply("a1", e.repo.model("det", "1", "w1"), nil)
	r.Reconcile(ctx, []*devicev1.Assignment{a})
	last := e.rep.got[len(e.rep.got)-1]
	if !strings.HasPrefix(last, "a1 verifying pull: registry unreachable; retry 1 in 30s") {
		t.Errorf("a failed pull reported %q, want verifying (non-terminal) with the reason and the retry", last)
	}
	sm.fail = nil
	e.clock.Add(31 * time.Second)
	r.Reconcile(ctx, []*devicev1.Assignment{a})
	if got := e.rep.last("a1"); got != "healthy" || sm.pulls != 2 {
		t.Errorf("after the backoff a1 ended %q after %d pulls, want healthy after 2", got, sm.pulls)
	}
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
