package agent

import (
	"context"
	"log/slog"
	"sync"

	"github.com/meshanics/meshanics/internal/states"
	devicev1 "github.com/meshanics/meshanics/proto/meshanics/device/v1"
)

// mailbox holds the newest heartbeat's assignments for the reconcile
// worker: a slow reconcile never delays heartbeats, and it always works on
// the latest desired state.
type mailbox struct {
	mu     sync.Mutex
	latest []*devicev1.Assignment
	notify chan struct{} // capacity 1
}

func (m *mailbox) init() { m.notify = make(chan struct{}, 1) }

func (m *mailbox) put(as []*devicev1.Assignment) {
	m.mu.Lock()
	m.latest = as
	m.mu.Unlock()
	select {
	case m.notify <- struct{}{}:
	default:
	}
}

func (m *mailbox) take() []*devicev1.Assignment {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.latest
}

// reconcileWorker is the one goroutine that calls the reconciler.
func (a *Agent) reconcileWorker(ctx context.Context) {
	if r, ok := a.rec.(resumer); ok {
		if err := r.Resume(ctx); err != nil && ctx.Err() == nil {
			a.log.Error("resume interrupted update", "err", err)
		}
	}
	for {
		select {
		case <-ctx.Done():
			return
		case <-a.pending.notify:
		}
		if ctx.Err() != nil {
			return // both were ready: do not start work while stopping
		}
		if err := a.rec.Reconcile(ctx, a.pending.take()); err != nil && ctx.Err() == nil {
			a.log.Warn("reconcile", "err", err)
		}
	}
}

// otaUnconfigured stands in for the reconciler when -artifact-server and
// -tuf-root are not set: the agent heartbeats but applies nothing, and
// says so once per assignment (SPEC §4.1).
type otaUnconfigured struct {
	rep *Reporter
	log *slog.Logger
	// reported is touched by the reconcile worker only.
	reported map[string]bool
}

const detailOTANotConfigured = "OTA not configured"

func (o *otaUnconfigured) Reconcile(ctx context.Context, desired []*devicev1.Assignment) error {
	seen := make(map[string]bool, len(desired))
	for _, as := range desired {
		id := as.GetId()
		seen[id] = true
		if o.reported[id] {
			continue
		}
		state := states.Failed
		if as.GetAction() == "revert" {
			state = states.RevertFailed
		}
		if err := o.rep.Report(ctx, id, state.String(), detailOTANotConfigured); err != nil {
			return err // retried with the next heartbeat
		}
		o.reported[id] = true
		o.log.Warn("assignment refused: OTA not configured (set -artifact-server and -tuf-root)", "assignment", id)
	}
	for id := range o.reported {
		if !seen[id] {
			delete(o.reported, id)
		}
	}
	return nil
}

func (o *otaUnconfigured) Installed() []*devicev1.InstalledArtifact { return nil }
