package rollout

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	devicev1 "github.com/meshanics/meshanics/proto/meshanics/device/v1"

	"github.com/meshanics/meshanics/internal/errdefs"
	"github.com/meshanics/meshanics/internal/healthprobe"
	"github.com/meshanics/meshanics/internal/names"
	"github.com/meshanics/meshanics/internal/server/store"
	"github.com/meshanics/meshanics/internal/states"
)

// cacheEntry is what a heartbeat of one device was last answered from.
type cacheEntry struct {
	found bool
	held  store.HeldAssignment
	asg   *devicev1.Assignment // nil when nothing is served
	at    time.Time
}

// dropCache forgets every cached answer (after a rollout-level change made
// here; other replicas notice through the epoch).
func (r *Runner) dropCache() {
	r.mu.Lock()
	clear(r.cache)
	r.mu.Unlock()
}

// recheckEpoch makes the next heartbeat read the epoch.
func (r *Runner) recheckEpoch() {
	r.mu.Lock()
	r.epochAt = time.Time{}
	r.mu.Unlock()
}

func (r *Runner) forget(device string) {
	r.mu.Lock()
	delete(r.cache, device)
	r.mu.Unlock()
}

// cached returns the cached answer for device if it is still good. At most
// once per EpochEvery it reads the rollout epoch and drops the whole cache
// when another replica changed a rollout.
func (r *Runner) cached(ctx context.Context, device string, now time.Time) (cacheEntry, bool, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if now.Sub(r.epochAt) >= r.epochTTL || now.Before(r.epochAt) {
		e, err := r.db.RolloutEpoch(ctx)
		if err != nil {
			return cacheEntry{}, false, err
		}
		if e != r.epoch {
			clear(r.cache)
			r.epoch = e
		}
		r.epochAt = now
		if now.Sub(r.sweptAt) >= r.cacheTTL {
			// Forget devices not heard from within the TTL (gone to
			// another replica, or offline), so the map tracks live devices.
			for d, c := range r.cache {
				if now.Sub(c.at) >= r.cacheTTL {
					delete(r.cache, d)
				}
			}
			r.sweptAt = now
		}
	}
	c, ok := r.cache[device]
	if !ok || now.Sub(c.at) >= r.cacheTTL || now.Before(c.at) {
		return cacheEntry{}, false, nil
	}
	return c, true, nil
}

func (r *Runner) remember(device string, c cacheEntry) {
	r.mu.Lock()
	r.cache[device] = c
	r.mu.Unlock()
}

// Assignments returns the desired state of device for a heartbeat: at most
// one assignment, from the rollout that holds the device. In the steady
// state it answers from memory; it writes only when it moves the device
// from pending to assigned.
func (r *Runner) Assignments(ctx context.Context, device string, installed []*devicev1.InstalledArtifact, now time.Time) ([]*devicev1.Assignment, error) {
	if c, ok, err := r.cached(ctx, device, now); err != nil {
		return nil, err
	} else if ok {
		return one(c.asg), nil
	}
	h, err := r.db.HeldAssignment(ctx, device)
	if errors.Is(err, errdefs.ErrNotFound) {
		r.remember(device, cacheEntry{at: now})
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	serve, assign := Serve(states.Rollout(h.State), h.CurrentWave, h.Device.Action, h.Device.Wave, states.Device(h.Device.State))
	if assign {
		h, err = r.assign(ctx, h, installed)
		if err != nil {
			return nil, err
		}
		serve, _ = Serve(states.Rollout(h.State), h.CurrentWave, h.Device.Action, h.Device.Wave, states.Device(h.Device.State))
	}
	var asg *devicev1.Assignment
	if serve {
		if asg, err = r.build(ctx, h); err != nil {
			return nil, err
		}
	}
	r.remember(device, cacheEntry{found: true, held: h, asg: asg, at: now})
	return one(asg), nil
}

func one(a *devicev1.Assignment) []*devicev1.Assignment {
	if a == nil {
		return nil
	}
	return []*devicev1.Assignment{a}
}

// assign moves the device's held row from pending to assigned under the
// rollout lock, recording the version to revert to from what the device
// reports as installed. It returns the row as it is now (another replica
// may have assigned it first, or the rollout may have changed).
func (r *Runner) assign(ctx context.Context, h store.HeldAssignment, installed []*devicev1.InstalledArtifact) (store.HeldAssignment, error) {
	err := r.db.Tx(ctx, func(tx *store.Tx) error {
		rec, err := tx.LockRollout(ctx, h.Device.RolloutID)
		if err != nil {
			return err
		}
		row, err := tx.RolloutDevice(ctx, rec.ID, h.Device.Device)
		if err != nil {
			return err
		}
		h.State, h.CurrentWave, h.Device = rec.State, rec.CurrentWave, row
		_, assign := Serve(states.Rollout(rec.State), rec.CurrentWave, row.Action, row.Wave, states.Device(row.State))
		if !assign || !row.Held {
			return nil
		}
		next := row
		next.State, next.AssignmentID = string(states.Assigned), store.NewID("asg")
		if row.Action == ActionApply {
			next.PreviousVersion = previousVersion(installed, rec.ArtifactName, rec.ArtifactVersion)
			next.Detail = ""
		} else if _, err := r.artifact(ctx, rec.ArtifactName, row.PreviousVersion); err != nil {
			if !errors.Is(err, errdefs.ErrNotFound) {
				return err
			}
			next.State, next.Held = string(states.RevertFailed), false
			next.Detail = fmt.Sprintf("previous version %s@%s is not known to this server", rec.ArtifactName, row.PreviousVersion)
		}
		ok, err := tx.MoveRolloutDevice(ctx, next, row.State, row.AssignmentID)
		if err != nil || !ok {
			return err
		}
		if _, err := r.step(ctx, tx, rec, Moved{Device: row.Device, Wave: row.Wave, From: states.Device(row.State), To: states.Device(next.State)}, store.ActorSystem); err != nil {
			return err
		}
		h.Device = next
		return nil
	})
	if err == nil {
		r.recheckEpoch()
	}
	return h, err
}

// previousVersion is the version of artifact name the device runs before
// this rollout: what it reports as installed, or that entry's previous
// version when it already runs the target.
func previousVersion(installed []*devicev1.InstalledArtifact, name, target string) string {
	for _, ia := range installed {
		if ia.GetName() != name {
			continue
		}
		v := ia.GetVersion()
		if v == target {
			v = ia.GetPreviousVersion()
		}
		if names.ValidateVersion(v) != nil || v == target {
			return "" // device-reported text: keep only a well-formed other version
		}
		return v
	}
	return ""
}

// build turns a held row into the assignment message.
func (r *Runner) build(ctx context.Context, h store.HeldAssignment) (*devicev1.Assignment, error) {
	a, err := r.artifact(ctx, h.ArtifactName, h.ArtifactVersion)
	if err != nil {
		return nil, err
	}
	var spec healthprobe.Spec
	if err := json.Unmarshal(h.Probe, &spec); err != nil {
		return nil, fmt.Errorf("decode rollout probe: %w", err)
	}
	asg := &devicev1.Assignment{
		Id: h.Device.AssignmentID, RolloutId: h.Device.RolloutID, Action: h.Device.Action, Artifact: protoArtifact(a),
		Probe: &devicev1.HealthProbe{
			Type: spec.Type, Target: spec.Target, Args: spec.Args,
			TimeoutSeconds: uint32(spec.TimeoutSeconds), Attempts: uint32(spec.Attempts),
			InitialDelaySeconds: uint32(spec.InitialDelaySeconds), IntervalSeconds: uint32(spec.IntervalSeconds),
		},
	}
	if h.Device.Action == ActionRevert {
		prev, err := r.artifact(ctx, h.ArtifactName, h.Device.PreviousVersion)
		if err != nil {
			return nil, err
		}
		asg.RevertTo = protoArtifact(prev)
	}
	return asg, nil
}

// Status is one validated ReportArtifactStatus call.
type Status struct {
	AssignmentID string
	State        states.Device
	Detail       string
}

// ReportStatus applies a device's ReportArtifactStatus: only for the device's own
// current assignment, with a state valid for it; the rollout is then
// re-evaluated in the same transaction (halt rule, wave completion).
func (r *Runner) ReportStatus(ctx context.Context, device string, rep Status) error {
	to := rep.State
	err := r.db.Tx(ctx, func(tx *store.Tx) error {
		if rep.AssignmentID == "" {
			return errdefs.NotFound("unknown assignment")
		}
		row, err := tx.RolloutDeviceByAssignment(ctx, rep.AssignmentID)
		if err != nil && !errors.Is(err, errdefs.ErrNotFound) {
			return err
		}
		if err != nil || row.Device != device {
			return errdefs.NotFound("unknown assignment")
		}
		rec, err := tx.LockRollout(ctx, row.RolloutID)
		if err != nil {
			return err
		}
		if row, err = tx.RolloutDevice(ctx, rec.ID, device); err != nil {
			return err
		}
		if row.AssignmentID != rep.AssignmentID {
			return errdefs.NotFound("assignment was replaced")
		}
		from := states.Device(row.State)
		changed, err := CheckReport(row.Action, from, to)
		if err != nil {
			return err
		}
		if !changed && (from.Terminal() || row.Detail == rep.Detail) {
			return nil
		}
		next := row
		next.State, next.Detail = string(to), rep.Detail
		ok, err := tx.MoveRolloutDevice(ctx, next, row.State, row.AssignmentID)
		if err != nil {
			return err
		}
		if !ok {
			return errdefs.Conflict("assignment changed concurrently; report again")
		}
		if !changed {
			return nil
		}
		_, err = r.step(ctx, tx, rec, Moved{Device: device, Wave: row.Wave, From: from, To: to}, store.DeviceActor(device))
		return err
	})
	r.forget(device)
	if err == nil {
		r.recheckEpoch() // the rollout may have moved on: see it on the next heartbeat
	}
	return err
}
