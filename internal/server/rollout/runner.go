package rollout

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"sync"
	"time"

	devicev1 "github.com/meshanics/meshanics/proto/meshanics/device/v1"

	"github.com/meshanics/meshanics/internal/errdefs"
	"github.com/meshanics/meshanics/internal/server/store"
	"github.com/meshanics/meshanics/internal/states"
)

// ArtifactLookup finds a published artifact; publishing signs it at once
// (SPEC §6), so a found artifact is a signed one. *store.DB implements it.
type ArtifactLookup interface {
	Artifact(ctx context.Context, name, version string) (store.Artifact, error)
}

// Config is everything a Runner needs.
type Config struct {
	// DB is the store; the rollout engine is its groups/rollouts domain.
	DB        *store.DB
	Artifacts ArtifactLookup
	Log       *slog.Logger
	// Now is the clock for liveness and transitions; nil = time.Now.
	Now func() time.Time
	// EvaluateEvery is how often Run re-checks running rollouts for
	// devices that went offline (default 10 s).
	EvaluateEvery time.Duration
	// EpochEvery bounds how stale a replica's assignment cache may be after
	// another replica changed a rollout (default 1 s).
	EpochEvery time.Duration
	// CacheTTL bounds how long a device's cached answer is reused without
	// a database read (default 2 min).
	CacheTTL time.Duration
}

// Runner is the rollout engine: it wraps the pure core with the store,
// serves assignments on heartbeats, takes device reports and operator
// commands, and re-evaluates running rollouts. Safe for concurrent use;
// several Runners (replicas) may share one PostgreSQL database.
type Runner struct {
	db        *store.DB
	artifacts ArtifactLookup
	log       *slog.Logger
	now       func() time.Time
	every     time.Duration
	epochTTL  time.Duration
	cacheTTL  time.Duration

	// mu guards the assignment cache below.
	mu      sync.Mutex
	epoch   int64
	epochAt time.Time
	sweptAt time.Time
	cache   map[string]cacheEntry

	// artMu guards arts, a cache of immutable artifact records.
	artMu sync.Mutex
	arts  map[string]store.Artifact
}

// New builds a Runner.
func New(cfg Config) (*Runner, error) {
	if cfg.DB == nil || cfg.Artifacts == nil {
		return nil, errors.New("rollout: DB and Artifacts are required")
	}
	r := &Runner{
		db: cfg.DB, artifacts: cfg.Artifacts, log: cfg.Log, now: cfg.Now,
		every: cfg.EvaluateEvery, epochTTL: cfg.EpochEvery, cacheTTL: cfg.CacheTTL,
		cache: map[string]cacheEntry{}, arts: map[string]store.Artifact{},
	}
	if r.log == nil {
		r.log = slog.New(slog.DiscardHandler)
	}
	r.log = r.log.With("component", "rollout")
	if r.now == nil {
		r.now = time.Now
	}
	if r.every <= 0 {
		r.every = 10 * time.Second
	}
	if r.epochTTL <= 0 {
		r.epochTTL = time.Second
	}
	if r.cacheTTL <= 0 {
		r.cacheTTL = 2 * time.Minute
	}
	return r, nil
}

// step runs one event through the core inside tx, whose rollout row is
// locked (rec came from LockRollout), performs the actions and stores the
// new state. It returns the updated record.
func (r *Runner) step(ctx context.Context, tx *store.Tx, rec store.Rollout, ev Event, actor string) (store.Rollout, error) {
	s, plan, err := decodeState(rec)
	if err != nil {
		return store.Rollout{}, err
	}
	now := r.now()
	if err := r.fillOpen(ctx, tx, rec.ID, &s, now); err != nil {
		return store.Rollout{}, err
	}
	next, acts, err := Transition(s, ev, now)
	if err != nil {
		return store.Rollout{}, err
	}
	rolloutLevel := next.Phase != s.Phase || next.Current != s.Current
	var audits []Audit
	for _, a := range acts {
		switch a := a.(type) {
		case Audit:
			audits = append(audits, a)
		case RevertApplied:
			n, unavailable, err := tx.RevertApplied(ctx, rec.ID)
			if err != nil {
				return store.Rollout{}, err
			}
			if err := r.recount(ctx, tx, rec.ID, &next); err != nil {
				return store.Rollout{}, err
			}
			audits = append(audits, Audit{"rollout.revert_queued", map[string]any{"devices": n, "without_previous_version": unavailable}})
		case ReleaseAll:
			if err := tx.ReleaseRollout(ctx, rec.ID); err != nil {
				return store.Rollout{}, err
			}
		}
	}
	if rolloutLevel {
		if err := tx.BumpRolloutEpoch(ctx); err != nil {
			return store.Rollout{}, err
		}
		r.recheckEpoch()
	}
	out, err := encodeState(rec, next, plan)
	if err != nil {
		return store.Rollout{}, err
	}
	if err := tx.UpdateRollout(ctx, out); err != nil {
		return store.Rollout{}, err
	}
	for _, a := range audits {
		data := maps.Clone(a.Data)
		data["rollout"] = rec.ID
		data["artifact"] = rec.ArtifactName + "@" + rec.ArtifactVersion
		subject := rec.ID
		if a.Type == EventDevice {
			subject = fmt.Sprint(a.Data["device"])
		}
		if _, err := tx.AppendAudit(ctx, store.Event{Actor: actor, Type: a.Type, Subject: subject, Data: data}); err != nil {
			return store.Rollout{}, err
		}
	}
	out.UpdatedAt = tx.Now()
	return out, nil
}

// fillOpen sets Open for the current wave and for the following waves up
// to the first open one: all the core may look at, even after an approval.
func (r *Runner) fillOpen(ctx context.Context, tx *store.Tx, id string, s *State, now time.Time) error {
	for w := s.Current; w < len(s.Waves); w++ {
		open, err := tx.WaveOpen(ctx, id, w, now)
		if err != nil {
			return err
		}
		s.Waves[w].Open = open
		if open && w > s.Current {
			break
		}
	}
	return nil
}

// recount replaces the core's counters with a fresh count of the rows
// (after a bulk change such as queuing reverts).
func (r *Runner) recount(ctx context.Context, tx *store.Tx, id string, s *State) error {
	counts, err := tx.RolloutCounts(ctx, id)
	if err != nil {
		return err
	}
	for i := range s.Waves {
		c := map[states.Device]int{}
		for k, v := range counts[i] {
			c[states.Device(k)] = v
		}
		s.Waves[i].Counts = c
	}
	return nil
}

// command runs an operator command on rollout id.
func (r *Runner) command(ctx context.Context, actor, id string, ev Event) (View, error) {
	var out store.Rollout
	err := r.db.Tx(ctx, func(tx *store.Tx) error {
		rec, err := tx.LockRollout(ctx, id)
		if err != nil {
			return err
		}
		out, err = r.step(ctx, tx, rec, ev, actor)
		return err
	})
	if err != nil {
		return View{}, err
	}
	r.dropCache()
	return viewOf(out)
}

// Approve starts the next wave of a rollout waiting for approval.
func (r *Runner) Approve(ctx context.Context, actor, id string) (View, error) {
	return r.command(ctx, actor, id, Approve{})
}

// Halt stops a running rollout.
func (r *Runner) Halt(ctx context.Context, actor, id string) (View, error) {
	return r.command(ctx, actor, id, Halt{})
}

// Resume acknowledges the current failures of a halted rollout and
// re-evaluates it at once.
func (r *Runner) Resume(ctx context.Context, actor, id string) (View, error) {
	return r.command(ctx, actor, id, Resume{})
}

// Abort ends a rollout with policy keep or revert.
func (r *Runner) Abort(ctx context.Context, actor, id, policy string) (View, error) {
	p, err := ParsePolicy(policy)
	if err != nil {
		return View{}, err
	}
	return r.command(ctx, actor, id, Abort{Policy: p})
}

// Get returns one rollout.
func (r *Runner) Get(ctx context.Context, id string) (View, error) {
	var rec store.Rollout
	err := r.db.Read(ctx, func(tx *store.Tx) (err error) {
		rec, err = tx.GetRollout(ctx, id)
		return err
	})
	if err != nil {
		return View{}, err
	}
	return viewOf(rec)
}

// List returns one page of rollouts (newest first), optionally of one state.
func (r *Runner) List(ctx context.Context, state string, p store.Page) ([]View, int, error) {
	var recs []store.Rollout
	var total int
	err := r.db.Read(ctx, func(tx *store.Tx) (err error) {
		recs, total, err = tx.ListRollouts(ctx, state, p)
		return err
	})
	if err != nil {
		return nil, 0, err
	}
	out := make([]View, 0, len(recs))
	for _, rec := range recs {
		v, err := viewOf(rec)
		if err != nil {
			return nil, 0, err
		}
		out = append(out, v)
	}
	return out, total, nil
}

// Devices returns one page of a rollout's devices in partition order.
func (r *Runner) Devices(ctx context.Context, id string, p store.Page) ([]DeviceView, int, error) {
	var rows []store.RolloutDevice
	var total int
	err := r.db.Read(ctx, func(tx *store.Tx) error {
		if _, err := tx.GetRollout(ctx, id); err != nil {
			return err
		}
		var err error
		rows, total, err = tx.ListRolloutDevices(ctx, id, p)
		return err
	})
	if err != nil {
		return nil, 0, err
	}
	out := make([]DeviceView, len(rows))
	for i, d := range rows {
		out[i] = deviceViewOf(d)
	}
	return out, total, nil
}

// artifact returns name@version, cached (published artifacts never change).
func (r *Runner) artifact(ctx context.Context, name, version string) (store.Artifact, error) {
	key := name + "@" + version
	r.artMu.Lock()
	a, ok := r.arts[key]
	r.artMu.Unlock()
	if ok {
		return a, nil
	}
	a, err := r.artifacts.Artifact(ctx, name, version)
	if err != nil {
		if errors.Is(err, errdefs.ErrNotFound) {
			return store.Artifact{}, errdefs.NotFound(fmt.Sprintf("artifact %s not found", key))
		}
		return store.Artifact{}, fmt.Errorf("look up artifact: %w", err)
	}
	r.artMu.Lock()
	r.arts[key] = a
	r.artMu.Unlock()
	return a, nil
}

func protoArtifact(a store.Artifact) *devicev1.Artifact {
	return &devicev1.Artifact{Kind: a.Kind, Name: a.Name, Version: a.Version, TargetPath: a.TargetPath, Sha256: a.SHA256, Length: a.Length}
}
