package reconcile

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/meshanics/meshanics/internal/agent/statefile"
	"github.com/meshanics/meshanics/internal/healthprobe"
	devicev1 "github.com/meshanics/meshanics/proto/meshanics/device/v1"
)

// stuckApplier keeps the running version in memory; Activate can hang until
// its deadline and Undo can fail, to exercise those branches.
type stuckApplier struct {
	running  string
	hang     bool
	undoFail bool
}

func (s *stuckApplier) Check(*statefile.Artifact) error { return nil }

func (s *stuckApplier) Activate(ctx context.Context, next, _ *statefile.Artifact) error {
	s.running = next.Version
	if s.hang {
		<-ctx.Done()
		return ctx.Err()
	}
	return nil
}

func (s *stuckApplier) Undo(_ context.Context, _, prior *statefile.Artifact) error {
	if s.undoFail {
		return errors.New("runtime gone")
	}
	s.running = ""
	if prior != nil {
		s.running = prior.Version
	}
	return nil
}

func (s *stuckApplier) Remove(context.Context, *statefile.Artifact, string) error {
	s.running = ""
	return nil
}

func TestHungActivationHitsDeadlineAndRollsBack(t *testing.T) {
	e := newEnv(t)
	fake := &stuckApplier{}
	e.opts.Appliers["model"] = fake
	e.opts.Deadlines.Apply = 20 * time.Millisecond
	r := e.start(t)
	r.Reconcile(ctx, []*devicev1.Assignment{apply("a1", e.repo.model("det", "1", "w1"), nil)})
	fake.hang = true
	r.Reconcile(ctx, []*devicev1.Assignment{apply("a2", e.repo.model("det", "2", "w2"), nil)})
	last := e.rep.got[len(e.rep.got)-1]
	if !strings.HasPrefix(last, "a2 failed apply: context deadline exceeded") || fake.running != "1" {
		t.Errorf("hung activation: last report %q, running %q; want failed with the deadline, 1 running", last, fake.running)
	}
	if got := r.Installed()[0].Version; got != "1" {
		t.Errorf("Installed version = %q, want 1", got)
	}
}

func TestFailedRollbackIsRetriedThenEndsFailed(t *testing.T) {
	e := newEnv(t)
	fake := &stuckApplier{}
	e.opts.Appliers["model"] = fake
	r := e.start(t)
	r.Reconcile(ctx, []*devicev1.Assignment{apply("a1", e.repo.model("det", "1", "w1"), nil)})
	fake.undoFail = true
	a2 := apply("a2", e.repo.model("det", "2", "w2"), fileProbe("/nonexistent"))
	for i := 1; i < MaxUndoAttempts; i++ {
		r.Reconcile(ctx, []*devicev1.Assignment{a2})
		last := e.rep.got[len(e.rep.got)-1]
		if want := fmt.Sprintf("a2 applying probe failed after 2 attempts: file probe: stat /nonexistent: no such file or directory; rollback failed: runtime gone; retry %d of %d", i, MaxUndoAttempts-1); !strings.HasPrefix(last, want) {
			t.Fatalf("try %d: last report = %q, want %q…", i, last, want)
		}
		n := len(e.rep.got)
		r.Reconcile(ctx, []*devicev1.Assignment{a2}) // still in backoff: nothing happens
		if len(e.rep.got) != n {
			t.Fatalf("try %d: retried before the backoff: %v", i, e.rep.got[n:])
		}
		e.clock.Add(time.Hour)
	}
	r.Reconcile(ctx, []*devicev1.Assignment{a2})
	last := e.rep.got[len(e.rep.got)-1]
	if !strings.HasPrefix(last, "a2 failed probe failed") || !strings.Contains(last, "rollback failed: runtime gone") {
		t.Errorf("last report = %q, want failed saying the rollback failed", last)
	}
}

// The runtime comes back (after a reboot, the agent can start first): the
// retried rollback restores the previous version.
func TestRollbackSucceedsOnRetry(t *testing.T) {
	e := newEnv(t)
	fake := &stuckApplier{}
	e.opts.Appliers["model"] = fake
	r := e.start(t)
	r.Reconcile(ctx, []*devicev1.Assignment{apply("a1", e.repo.model("det", "1", "w1"), nil)})
	fake.undoFail = true
	a2 := apply("a2", e.repo.model("det", "2", "w2"), fileProbe("/nonexistent"))
	r.Reconcile(ctx, []*devicev1.Assignment{a2})
	if got := e.rep.last("a2"); got != "applying" || fake.running != "2" {
		t.Fatalf("after a failed rollback a2 = %q running %q, want applying (in flight) with 2 running", got, fake.running)
	}
	fake.undoFail = false
	e.clock.Add(time.Hour)
	e.start(t).Reconcile(ctx, []*devicev1.Assignment{a2}) // also across a restart
	last := e.rep.got[len(e.rep.got)-1]
	if !strings.HasPrefix(last, "a2 rolled_back probe failed") || !strings.HasSuffix(last, "restored 1") || fake.running != "1" {
		t.Errorf("last report = %q running %q, want rolled_back restoring 1", last, fake.running)
	}

	// Also when the server no longer sends the assignment.
	fake.undoFail = true
	r = e.start(t)
	r.Reconcile(ctx, []*devicev1.Assignment{apply("a3", e.repo.model("det", "3", "w3"), fileProbe("/nonexistent"))})
	fake.undoFail = false
	r.Reconcile(ctx, nil)
	if got := e.rep.last("a3"); got != "applying" {
		t.Errorf("a3 retried before its backoff: %q", got)
	}
	e.clock.Add(time.Hour)
	r.Reconcile(ctx, nil)
	if got := e.rep.last("a3"); got != "rolled_back" || fake.running != "1" {
		t.Errorf("withdrawn a3 = %q running %q, want rolled_back with 1 running", got, fake.running)
	}
}

// blockingProber stands in for a probe still running when the agent is
// stopped (SIGTERM cancels the context).
type blockingProber struct{ cancel context.CancelFunc }

func (blockingProber) Check(healthprobe.Spec) error { return nil }
func (b blockingProber) Run(ctx context.Context, _ healthprobe.Spec) error {
	b.cancel()
	<-ctx.Done()
	return ctx.Err()
}

func TestStopMidProbeRollsBackOnRestart(t *testing.T) {
	e := newEnv(t)
	r := e.start(t)
	r.Reconcile(ctx, []*devicev1.Assignment{apply("a1", e.repo.model("det", "1", "w1"), nil)})
	real := e.opts.Prober
	stop, cancel := context.WithCancel(ctx)
	e.opts.Prober = blockingProber{cancel}
	r2 := e.start(t)
	r2.Reconcile(stop, []*devicev1.Assignment{apply("a2", e.repo.model("det", "2", "w2"), fileProbe("/x"))})
	if got := e.rep.last("a2"); got != "applying" {
		t.Fatalf("a stop during the probe reported %q, want applying left in flight", got)
	}
	e.opts.Prober = real
	r3 := e.start(t)
	if err := r3.Reconcile(ctx, nil); err != nil {
		t.Fatal(err)
	}
	if got, cur := e.rep.last("a2"), e.current("det"); got != "rolled_back" || cur != "w1" {
		t.Errorf("after restart a2 = %q, current = %q; want rolled_back, w1", got, cur)
	}
}
