package rollout

import (
	"context"
	"time"

	"github.com/meshanics/meshanics/internal/server/store"
	"github.com/meshanics/meshanics/internal/states"
)

// Run re-evaluates running rollouts every EvaluateEvery until ctx ends, so
// that devices going offline stop blocking their wave. Every replica may run
// it: the row lock makes concurrent evaluations apply once.
func (r *Runner) Run(ctx context.Context) error {
	t := time.NewTicker(r.every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			if err := r.EvaluateAll(ctx); err != nil && ctx.Err() == nil {
				r.log.Warn("re-evaluate rollouts", "err", err)
			}
		}
	}
}

// EvaluateAll re-checks every running rollout once. A rollout whose state
// would not change costs reads only.
func (r *Runner) EvaluateAll(ctx context.Context) error {
	var ids []string
	err := r.db.Read(ctx, func(tx *store.Tx) (err error) {
		ids, err = tx.RolloutIDs(ctx, string(states.Running))
		return err
	})
	if err != nil {
		return err
	}
	for _, id := range ids {
		if err := r.evaluate(ctx, id); err != nil {
			return err
		}
	}
	return nil
}

func (r *Runner) evaluate(ctx context.Context, id string) error {
	changes := false
	err := r.db.Read(ctx, func(tx *store.Tx) error {
		rec, err := tx.GetRollout(ctx, id)
		if err != nil {
			return err
		}
		s, _, err := decodeState(rec)
		if err != nil {
			return err
		}
		if err := r.fillOpen(ctx, tx, id, &s, r.now()); err != nil {
			return err
		}
		next, _, err := Transition(s, Evaluate{}, r.now())
		changes = err == nil && (next.Phase != s.Phase || next.Current != s.Current)
		return err
	})
	if err != nil || !changes {
		return err
	}
	err = r.db.Tx(ctx, func(tx *store.Tx) error {
		rec, err := tx.LockRollout(ctx, id)
		if err != nil {
			return err
		}
		_, err = r.step(ctx, tx, rec, Evaluate{}, store.ActorSystem)
		return err
	})
	if err == nil {
		r.dropCache()
	}
	return err
}
