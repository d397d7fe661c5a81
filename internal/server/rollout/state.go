package rollout

import (
	"encoding/json"
	"fmt"
	"time"

	"github.com/meshanics/meshanics/internal/server/store"
	"github.com/meshanics/meshanics/internal/states"
)

// storedWave is one element of the rollouts.waves column: the plan of the
// wave and its device counters.
type storedWave struct {
	Percent  int            `json:"percent"`
	Approval Approval       `json:"approval"`
	Devices  int            `json:"devices"`
	Counts   map[string]int `json:"counts"`
}

// decodeState turns a stored rollout into the core's state. Open is left
// false; the runner fills it.
func decodeState(rec store.Rollout) (State, []storedWave, error) {
	var sw []storedWave
	if err := json.Unmarshal(rec.Waves, &sw); err != nil {
		return State{}, nil, fmt.Errorf("decode rollout %s waves: %w", rec.ID, err)
	}
	var st Strategy
	if err := json.Unmarshal(rec.Strategy, &st); err != nil {
		return State{}, nil, fmt.Errorf("decode rollout %s strategy: %w", rec.ID, err)
	}
	s := State{
		Phase:          states.Rollout(rec.State),
		Current:        rec.CurrentWave,
		MaxFailureRate: st.MaxFailureRate,
		Acknowledged:   rec.Acknowledged,
		Policy:         Policy(rec.AbortPolicy),
		UpdatedAt:      rec.UpdatedAt,
	}
	for _, w := range sw {
		counts := make(map[states.Device]int, len(w.Counts))
		for k, v := range w.Counts {
			counts[states.Device(k)] = v
		}
		s.Waves = append(s.Waves, WaveState{Approval: w.Approval, Devices: w.Devices, Counts: counts})
	}
	if len(s.Waves) == 0 || s.Current < 0 || s.Current >= len(s.Waves) {
		return State{}, nil, fmt.Errorf("rollout %s: stored state is inconsistent", rec.ID)
	}
	return s, sw, nil
}

// encodeState writes the core's state back into rec.
func encodeState(rec store.Rollout, s State, plan []storedWave) (store.Rollout, error) {
	out := make([]storedWave, len(s.Waves))
	for i, w := range s.Waves {
		counts := make(map[string]int, len(w.Counts))
		for k, v := range w.Counts {
			if v != 0 {
				counts[string(k)] = v
			}
		}
		out[i] = storedWave{Percent: plan[i].Percent, Approval: w.Approval, Devices: w.Devices, Counts: counts}
	}
	b, err := json.Marshal(out)
	if err != nil {
		return store.Rollout{}, fmt.Errorf("encode rollout waves: %w", err)
	}
	rec.State, rec.CurrentWave, rec.Waves = string(s.Phase), s.Current, b
	rec.Failures, rec.Acknowledged, rec.AbortPolicy = s.Failures(), s.Acknowledged, string(s.Policy)
	return rec, nil
}

// View is a rollout as the REST API shows it (SPEC §7).
type View struct {
	ID                   string          `json:"id"`
	Artifact             string          `json:"artifact"`
	Group                string          `json:"group"`
	State                string          `json:"state"`
	Probe                json.RawMessage `json:"probe"`
	Strategy             json.RawMessage `json:"strategy"`
	Waves                []WaveView      `json:"waves"`
	Failures             int             `json:"failures"`
	AcknowledgedFailures int             `json:"acknowledged_failures"`
	CreatedAt            time.Time       `json:"created_at"`
	UpdatedAt            time.Time       `json:"updated_at"`
}

// WaveView is one wave of a View.
type WaveView struct {
	Index    int            `json:"index"`
	Percent  int            `json:"percent"`
	Approval Approval       `json:"approval"`
	Devices  int            `json:"devices"`
	Counts   map[string]int `json:"counts"`
}

// DeviceView is one device of a rollout as the REST API shows it.
type DeviceView struct {
	Device    string    `json:"device"`
	Wave      int       `json:"wave"`
	State     string    `json:"state"`
	Detail    string    `json:"detail"`
	UpdatedAt time.Time `json:"updated_at"`
}

func viewOf(rec store.Rollout) (View, error) {
	var sw []storedWave
	if err := json.Unmarshal(rec.Waves, &sw); err != nil {
		return View{}, fmt.Errorf("decode rollout %s waves: %w", rec.ID, err)
	}
	v := View{
		ID: rec.ID, Artifact: rec.ArtifactName + "@" + rec.ArtifactVersion, Group: rec.Group, State: rec.State,
		Probe: rec.Probe, Strategy: rec.Strategy, Failures: rec.Failures, AcknowledgedFailures: rec.Acknowledged,
		CreatedAt: rec.CreatedAt, UpdatedAt: rec.UpdatedAt, Waves: make([]WaveView, len(sw)),
	}
	for i, w := range sw {
		if w.Counts == nil {
			w.Counts = map[string]int{}
		}
		v.Waves[i] = WaveView{Index: i, Percent: w.Percent, Approval: w.Approval, Devices: w.Devices, Counts: w.Counts}
	}
	return v, nil
}

func deviceViewOf(d store.RolloutDevice) DeviceView {
	return DeviceView{Device: d.Device, Wave: d.Wave, State: d.State, Detail: d.Detail, UpdatedAt: d.UpdatedAt}
}
