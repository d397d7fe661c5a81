package reconcile

import (
	"context"
	"slices"
	"testing"

	"github.com/meshanics/meshanics/internal/agent/apply/file"
	"github.com/meshanics/meshanics/internal/agent/statefile"
	devicev1 "github.com/meshanics/meshanics/proto/meshanics/device/v1"
)

// forgettingModel is a model applier with a store of its own, like a
// container runtime's images.
type forgettingModel struct {
	file.Model
	forgot []string
}

func (f *forgettingModel) Forget(_ context.Context, a *statefile.Artifact) error {
	f.forgot = append(f.forgot, a.Version)
	return nil
}

func TestForgetIsJournaledAndFinishedAfterRestart(t *testing.T) {
	e := newEnv(t)
	fm := &forgettingModel{Model: e.opts.Appliers["model"].(file.Model)}
	e.opts.Appliers["model"] = fm
	r := e.start(t)
	for _, v := range []string{"1", "2", "3"} {
		r.Reconcile(ctx, []*devicev1.Assignment{apply("a"+v, e.repo.model("det", v, "w"+v), nil)})
	}
	if !slices.Equal(fm.forgot, []string{"1"}) {
		t.Fatalf("forgot %v, want [1] (3 current, 2 previous)", fm.forgot)
	}
	// A crash came between an outcome and its removal: the queue is in
	// the journal, with one version a slot uses again.
	path := r.journal
	j, err := statefile.LoadJournal(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(j.Forget) != 0 {
		t.Fatalf("queue not emptied: %+v", j.Forget)
	}
	j.Forget = []*statefile.Artifact{{Kind: "model", Name: "det", Version: "0.9"}, {Kind: "model", Name: "det", Version: "2"}}
	if err := statefile.SaveJSON(path, j); err != nil {
		t.Fatal(err)
	}
	fm.forgot = nil
	if err := e.start(t).Reconcile(ctx, nil); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(fm.forgot, []string{"0.9"}) {
		t.Errorf("after restart forgot %v, want [0.9] (2 is still previous)", fm.forgot)
	}
	if j, _ := statefile.LoadJournal(path); len(j.Forget) != 0 {
		t.Errorf("queue left after restart: %+v", j.Forget)
	}
}
