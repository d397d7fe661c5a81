package rollout

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"regexp"

	"github.com/meshanics/meshanics/internal/errdefs"
	"github.com/meshanics/meshanics/internal/healthprobe"
	"github.com/meshanics/meshanics/internal/names"
	"github.com/meshanics/meshanics/internal/server/store"
)

// CreateRequest is the body of POST /api/v1/rollouts (SPEC §7).
type CreateRequest struct {
	Artifact string          `json:"artifact"`
	Group    string          `json:"group"`
	Probe    json.RawMessage `json:"probe"`
	Strategy json.RawMessage `json:"strategy"`
}

var groupRE = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,62}$`)

// ValidateGroupName accepts the same shape as artifact names.
func ValidateGroupName(s string) error {
	if !groupRE.MatchString(s) {
		return errdefs.Invalid(fmt.Sprintf("invalid group name %q: want [a-z0-9][a-z0-9._-]{0,62}", truncate(s)))
	}
	return nil
}

// ParseProbe decodes a probe strictly, fills the SPEC §4.4 defaults and
// validates the bounds.
func ParseProbe(raw json.RawMessage) (healthprobe.Spec, error) {
	if len(bytes.TrimSpace(raw)) == 0 || bytes.Equal(bytes.TrimSpace(raw), []byte("null")) {
		return healthprobe.Spec{}, errdefs.Invalid("probe is required")
	}
	var p healthprobe.Spec
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&p); err != nil {
		return healthprobe.Spec{}, errdefs.Invalid("probe: " + decodeProblem(err))
	}
	if dec.More() {
		return healthprobe.Spec{}, errdefs.Invalid("probe: trailing data")
	}
	// An absent field takes its default; one written as 0 is out of the
	// SPEC §4.4 bounds and is refused rather than silently replaced.
	var explicit struct {
		TimeoutSeconds  *int `json:"timeout_seconds"`
		Attempts        *int `json:"attempts"`
		IntervalSeconds *int `json:"interval_seconds"`
	}
	if err := json.Unmarshal(raw, &explicit); err != nil {
		return healthprobe.Spec{}, errdefs.Invalid("probe: " + decodeProblem(err))
	}
	for _, f := range []struct {
		name     string
		v        *int
		min, max int
	}{{"timeout_seconds", explicit.TimeoutSeconds, 1, 300}, {"attempts", explicit.Attempts, 1, 10}, {"interval_seconds", explicit.IntervalSeconds, 1, 300}} {
		if f.v != nil && *f.v == 0 {
			return healthprobe.Spec{}, errdefs.Invalid(fmt.Sprintf("probe %s must be in [%d, %d], got 0 (leave it out for the default)", f.name, f.min, f.max))
		}
	}
	p = p.WithDefaults()
	if err := p.Validate(); err != nil {
		return healthprobe.Spec{}, errdefs.Invalid(err.Error())
	}
	return p, nil
}

// Create validates req and starts a rollout: the artifact must be published
// (hence signed), the group must have devices, none of which may be in
// another active rollout. The partition is computed once here and stored.
func (r *Runner) Create(ctx context.Context, actor string, req CreateRequest) (View, error) {
	name, version, err := names.ParseRef(req.Artifact)
	if err != nil {
		return View{}, errdefs.Invalid(err.Error())
	}
	if err := ValidateGroupName(req.Group); err != nil {
		return View{}, err
	}
	probe, err := ParseProbe(req.Probe)
	if err != nil {
		return View{}, err
	}
	strategy, err := ParseStrategy(req.Strategy)
	if err != nil {
		return View{}, err
	}
	if _, err := r.artifact(ctx, name, version); err != nil {
		return View{}, err
	}
	probeJSON, _ := json.Marshal(probe)
	strategyJSON, _ := json.Marshal(strategy)
	var out store.Rollout
	err = r.db.Tx(ctx, func(tx *store.Tx) error {
		g, err := tx.GetGroup(ctx, req.Group)
		if err != nil {
			return err
		}
		members := g.Members
		if len(members) == 0 {
			return errdefs.Invalid(fmt.Sprintf("group %s has no devices", req.Group))
		}
		waves := strategy.Partition(members)
		sizes := make([]int, len(waves))
		for i, w := range waves {
			sizes[i] = len(w)
		}
		plan := make([]storedWave, len(strategy.Waves))
		for i, w := range strategy.Waves {
			plan[i] = storedWave{Percent: w.Percent, Approval: w.Approval}
		}
		rec := store.Rollout{
			ID: store.NewID("ro"), ArtifactName: name, ArtifactVersion: version, Group: req.Group,
			Probe: probeJSON, Strategy: strategyJSON, CreatedBy: actor,
		}
		rec, err = encodeState(rec, Initial(strategy, sizes, r.now()), plan)
		if err != nil {
			return err
		}
		if err := tx.InsertRollout(ctx, rec, waves); err != nil {
			return err
		}
		if _, err := tx.AppendAudit(ctx, store.Event{Actor: actor, Type: EventCreated, Subject: rec.ID, Data: map[string]any{
			"artifact": req.Artifact, "group": req.Group, "devices": len(members), "wave_sizes": sizes,
			"strategy": json.RawMessage(strategyJSON), "probe": json.RawMessage(probeJSON),
		}}); err != nil {
			return err
		}
		if rec, err = tx.LockRollout(ctx, rec.ID); err != nil {
			return err
		}
		out, err = r.step(ctx, tx, rec, Evaluate{}, store.ActorSystem)
		return err
	})
	if err != nil {
		return View{}, err
	}
	r.dropCache()
	return viewOf(out)
}
