package agent

import (
	"context"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/meshanics/meshanics/internal/agent/identity/testca"
	devicev1 "github.com/meshanics/meshanics/proto/meshanics/device/v1"
)

// slowReconciler takes 10 minutes per call, like a large download.
type slowReconciler struct {
	rep *Reporter

	mu      sync.Mutex
	resumed bool
	calls   [][]string // assignment ids of each call
}

func (s *slowReconciler) Resume(context.Context) error {
	s.mu.Lock()
	s.resumed = true
	s.mu.Unlock()
	return nil
}

func (s *slowReconciler) Reconcile(ctx context.Context, desired []*devicev1.Assignment) error {
	var ids []string
	for _, a := range desired {
		ids = append(ids, a.GetId())
	}
	s.mu.Lock()
	s.calls = append(s.calls, ids)
	s.mu.Unlock()
	for _, id := range ids {
		if err := s.rep.Report(ctx, id, "downloading", "fetching"); err != nil {
			return err
		}
	}
	select {
	case <-time.After(10 * time.Minute):
	case <-ctx.Done():
	}
	return nil
}

func (s *slowReconciler) Installed() []*devicev1.InstalledArtifact {
	return []*devicev1.InstalledArtifact{{Kind: "model", Name: "m", Version: "1"}}
}

func TestSlowReconcileNeverDelaysHeartbeats(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ca := testca.New(t)
		f := newFakeCP(ca)
		f.assignments = []*devicev1.Assignment{{Id: "as1", Action: "apply"}}
		dev := newDevice(t, ca, time.Now().Add(-time.Hour), 90*24*time.Hour)
		d := testDeps(f, new(int), nil)
		var rec *slowReconciler
		d.NewReconciler = func(s *Session, rep *Reporter) (Reconciler, error) {
			if s.Identity == nil || s.Roots == nil {
				t.Error("NewReconciler got a session without identity or roots")
			}
			rec = &slowReconciler{rep: rep}
			return rec, nil
		}
		stop, _ := start(New(dev.cfg, d))
		time.Sleep(5 * time.Minute)
		f.mu.Lock()
		f.assignments = []*devicev1.Assignment{{Id: "as2", Action: "apply"}}
		beatsDuringApply := len(f.beats)
		f.mu.Unlock()
		time.Sleep(10 * time.Minute)
		stop()

		if beatsDuringApply < 25 {
			t.Errorf("%d heartbeats in the first 5 minutes of a 10-minute apply, want ~30", beatsDuringApply)
		}
		rec.mu.Lock()
		defer rec.mu.Unlock()
		if !rec.resumed {
			t.Error("Resume was not called before reconciling")
		}
		if len(rec.calls) != 2 || rec.calls[0][0] != "as1" || rec.calls[1][0] != "as2" {
			t.Errorf("Reconcile calls = %v, want [as1] then the newest [as2] (older sets coalesced)", rec.calls)
		}
		f.mu.Lock()
		defer f.mu.Unlock()
		if len(f.reports) == 0 || f.reports[0].GetState() != "downloading" {
			t.Errorf("reports = %v, want the reconciler's reports through the agent's Reporter", f.reports)
		}
		if got := f.lastReg.GetInstalled(); len(got) != 1 || got[0].GetName() != "m" {
			t.Errorf("Register installed = %v, want the reconciler's", got)
		}
	})
}
