package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/meshanics/meshanics/internal/errdefs"
	"github.com/meshanics/meshanics/internal/states"
)

// Rollout is one stored rollout. Waves is the engine's JSON of per-wave
// plan and counters; the store keeps it opaque.
type Rollout struct {
	ID              string
	ArtifactName    string
	ArtifactVersion string
	Group           string
	Probe           json.RawMessage
	Strategy        json.RawMessage
	State           string
	CurrentWave     int
	Waves           json.RawMessage
	Failures        int
	Acknowledged    int
	AbortPolicy     string
	CreatedBy       string
	CreatedAt       time.Time
	UpdatedAt       time.Time
}

// RolloutDevice is one device's row in a rollout.
type RolloutDevice struct {
	RolloutID       string
	Device          string
	Position        int
	Wave            int
	State           string
	Detail          string
	AssignmentID    string
	Action          string // apply | revert
	PreviousVersion string // version to revert to ("" = none recorded)
	Held            bool
	UpdatedAt       time.Time
}

const rolloutCols = `id, artifact_name, artifact_version, group_name, probe, strategy, state, current_wave, waves, failures, acknowledged, abort_policy, created_by, created_at, updated_at`

func scanRollout(sc interface{ Scan(...any) error }) (Rollout, error) {
	var r Rollout
	var probe, strategy, waves string
	var c, u int64
	if err := sc.Scan(&r.ID, &r.ArtifactName, &r.ArtifactVersion, &r.Group, &probe, &strategy, &r.State, &r.CurrentWave,
		&waves, &r.Failures, &r.Acknowledged, &r.AbortPolicy, &r.CreatedBy, &c, &u); err != nil {
		return Rollout{}, err
	}
	r.Probe, r.Strategy, r.Waves = json.RawMessage(probe), json.RawMessage(strategy), json.RawMessage(waves)
	r.CreatedAt, r.UpdatedAt = fromMS(c), fromMS(u)
	return r, nil
}

const rolloutDeviceCols = `rollout_id, device, position, wave, state, detail, assignment_id, action, previous_version, held, updated_at`

func scanRolloutDevice(sc interface{ Scan(...any) error }) (RolloutDevice, error) {
	var d RolloutDevice
	var held, u int64
	if err := sc.Scan(&d.RolloutID, &d.Device, &d.Position, &d.Wave, &d.State, &d.Detail, &d.AssignmentID, &d.Action,
		&d.PreviousVersion, &held, &u); err != nil {
		return RolloutDevice{}, err
	}
	d.Held, d.UpdatedAt = held == 1, fromMS(u)
	return d, nil
}

// activeStates is the SQL list of rollout states that hold their devices.
const activeStates = "('running', 'waiting_for_approval', 'halted')"

// InsertRollout stores a new rollout and its partition (waves[i] = the
// devices of wave i, in partition order), all pending. A device in another
// active rollout is errdefs.ErrConflict naming that rollout; a device still
// held by a completed or aborted rollout (offline, never finished) is
// superseded. Bumps the rollout epoch.
func (tx *Tx) InsertRollout(ctx context.Context, r Rollout, waves [][]string) error {
	var all []string
	for _, w := range waves {
		all = append(all, w...)
	}
	if err := tx.checkHeld(ctx, r.ID, all); err != nil {
		return err
	}
	probe, err := jsonText("probe", r.Probe, "{}")
	if err != nil {
		return err
	}
	strategy, err := jsonText("strategy", r.Strategy, "{}")
	if err != nil {
		return err
	}
	now := ms(tx.Now())
	_, err = tx.Exec(ctx, `INSERT INTO rollouts (`+rolloutCols+`) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		r.ID, r.ArtifactName, r.ArtifactVersion, r.Group, probe, strategy, r.State, r.CurrentWave, string(r.Waves),
		r.Failures, r.Acknowledged, r.AbortPolicy, r.CreatedBy, now, now)
	if err != nil {
		return fmt.Errorf("insert rollout: %w", err)
	}
	const per = 500
	pos := 0
	type row struct {
		dev  string
		wave int
	}
	var rows []row
	for w, devs := range waves {
		for _, d := range devs {
			rows = append(rows, row{d, w})
		}
	}
	for start := 0; start < len(rows); start += per {
		chunk := rows[start:min(start+per, len(rows))]
		var q strings.Builder
		q.WriteString(`INSERT INTO rollout_devices (` + rolloutDeviceCols + `, done) VALUES `)
		args := make([]any, 0, 12*len(chunk))
		for i, rw := range chunk {
			if i > 0 {
				q.WriteString(", ")
			}
			q.WriteString("(?, ?, ?, ?, ?, '', '', 'apply', '', 1, ?, 0)")
			args = append(args, r.ID, rw.dev, pos, rw.wave, string(states.Pending), now)
			pos++
		}
		if _, err := tx.Exec(ctx, q.String(), args...); err != nil {
			if errors.Is(err, errdefs.ErrConflict) {
				return errdefs.Conflict("a device of this group joined another rollout meanwhile; retry")
			}
			return fmt.Errorf("insert rollout devices: %w", err)
		}
	}
	return tx.BumpRolloutEpoch(ctx)
}

// checkHeld refuses devices held by an active rollout and releases devices
// held by finished ones.
func (tx *Tx) checkHeld(ctx context.Context, id string, devices []string) error {
	for start := 0; start < len(devices); start += resolveChunk {
		chunk := devices[start:min(start+resolveChunk, len(devices))]
		args := make([]any, len(chunk))
		for i, d := range chunk {
			args[i] = d
		}
		in := "(" + Placeholders(len(chunk)) + ")"
		var dev, other, state string
		err := tx.QueryRow(ctx, `SELECT rd.device, rd.rollout_id, r.state FROM rollout_devices rd JOIN rollouts r ON r.id = rd.rollout_id
			WHERE rd.held = 1 AND r.state IN `+activeStates+` AND rd.device IN `+in+` ORDER BY rd.device LIMIT 1`, args...).Scan(&dev, &other, &state)
		if err == nil {
			return errdefs.Conflict(fmt.Sprintf("device %s is already in active rollout %s (%s)", dev, other, state))
		}
		if !errors.Is(err, errdefs.ErrNotFound) {
			return fmt.Errorf("check active rollouts: %w", err)
		}
		_, err = tx.Exec(ctx, `UPDATE rollout_devices SET held = 0, detail = ?, updated_at = ?
			WHERE held = 1 AND device IN `+in, append([]any{"superseded by rollout " + id, ms(tx.Now())}, args...)...)
		if err != nil {
			return fmt.Errorf("supersede finished rollouts: %w", err)
		}
	}
	return nil
}

// GetRollout returns one rollout.
func (tx *Tx) GetRollout(ctx context.Context, id string) (Rollout, error) {
	return tx.getRollout(ctx, id, "")
}

// LockRollout returns one rollout and locks its row for the rest of the
// transaction (SELECT … FOR UPDATE on PostgreSQL; SQLite's write
// transaction already excludes other writers). Every change to a rollout or
// its devices takes this lock first, then device rows, then the audit head.
func (tx *Tx) LockRollout(ctx context.Context, id string) (Rollout, error) {
	return tx.getRollout(ctx, id, tx.ForUpdate())
}

func (tx *Tx) getRollout(ctx context.Context, id, suffix string) (Rollout, error) {
	r, err := scanRollout(tx.QueryRow(ctx, `SELECT `+rolloutCols+` FROM rollouts WHERE id = ?`+suffix, id))
	if errors.Is(err, errdefs.ErrNotFound) {
		return Rollout{}, errdefs.NotFound(fmt.Sprintf("rollout %s not found", id))
	}
	if err != nil {
		return Rollout{}, fmt.Errorf("get rollout: %w", err)
	}
	return r, nil
}

// UpdateRollout writes the engine-owned fields of r (state, current wave,
// waves, failures, acknowledged, abort policy) and updated_at.
func (tx *Tx) UpdateRollout(ctx context.Context, r Rollout) error {
	res, err := tx.Exec(ctx, `UPDATE rollouts SET state = ?, current_wave = ?, waves = ?, failures = ?, acknowledged = ?, abort_policy = ?, updated_at = ?
		WHERE id = ?`, r.State, r.CurrentWave, string(r.Waves), r.Failures, r.Acknowledged, r.AbortPolicy, ms(tx.Now()), r.ID)
	if err != nil {
		return fmt.Errorf("update rollout: %w", err)
	}
	if n, err := affected(res); err != nil {
		return err
	} else if n == 0 {
		return errdefs.NotFound(fmt.Sprintf("rollout %s not found", r.ID))
	}
	return nil
}

// ListRollouts returns one page, newest first, and the total. state ""
// lists every state.
func (tx *Tx) ListRollouts(ctx context.Context, state string, p Page) ([]Rollout, int, error) {
	p = p.norm()
	where, args := "", []any{}
	if state != "" {
		where, args = " WHERE state = ?", append(args, state)
	}
	var total int
	if err := tx.QueryRow(ctx, "SELECT COUNT(*) FROM rollouts"+where, args...).Scan(&total); err != nil {
		return nil, 0, fmt.Errorf("count rollouts: %w", err)
	}
	out := []Rollout{}
	err := tx.scanAll(ctx, func(r *sql.Rows) error {
		ro, err := scanRollout(r)
		out = append(out, ro)
		return err
	}, "SELECT "+rolloutCols+" FROM rollouts"+where+" ORDER BY created_at DESC, id DESC LIMIT ? OFFSET ?", append(args, p.Limit, p.Offset)...)
	if err != nil {
		return nil, 0, fmt.Errorf("list rollouts: %w", err)
	}
	return out, total, nil
}

// RolloutIDs returns the ids of rollouts in state, oldest first.
func (tx *Tx) RolloutIDs(ctx context.Context, state string) ([]string, error) {
	var out []string
	err := tx.scanAll(ctx, func(r *sql.Rows) error {
		var id string
		err := r.Scan(&id)
		out = append(out, id)
		return err
	}, "SELECT id FROM rollouts WHERE state = ? ORDER BY created_at, id", state)
	if err != nil {
		return nil, fmt.Errorf("list rollout ids: %w", err)
	}
	return out, nil
}

// ListRolloutDevices returns one page of a rollout's devices in partition
// order, and the total.
func (tx *Tx) ListRolloutDevices(ctx context.Context, id string, p Page) ([]RolloutDevice, int, error) {
	p = p.norm()
	var total int
	if err := tx.QueryRow(ctx, "SELECT COUNT(*) FROM rollout_devices WHERE rollout_id = ?", id).Scan(&total); err != nil {
		return nil, 0, fmt.Errorf("count rollout devices: %w", err)
	}
	out := []RolloutDevice{}
	err := tx.scanAll(ctx, func(r *sql.Rows) error {
		d, err := scanRolloutDevice(r)
		out = append(out, d)
		return err
	}, "SELECT "+rolloutDeviceCols+" FROM rollout_devices WHERE rollout_id = ? ORDER BY position LIMIT ? OFFSET ?", id, p.Limit, p.Offset)
	if err != nil {
		return nil, 0, fmt.Errorf("list rollout devices: %w", err)
	}
	return out, total, nil
}

// RolloutDeviceByAssignment returns the row that holds assignment id.
func (tx *Tx) RolloutDeviceByAssignment(ctx context.Context, assignmentID string) (RolloutDevice, error) {
	d, err := scanRolloutDevice(tx.QueryRow(ctx, "SELECT "+rolloutDeviceCols+" FROM rollout_devices WHERE assignment_id = ?", assignmentID))
	if errors.Is(err, errdefs.ErrNotFound) {
		return RolloutDevice{}, errdefs.NotFound("unknown assignment")
	}
	if err != nil {
		return RolloutDevice{}, fmt.Errorf("get rollout device: %w", err)
	}
	return d, nil
}

// RolloutDevice returns the row of device in rollout id.
func (tx *Tx) RolloutDevice(ctx context.Context, id, device string) (RolloutDevice, error) {
	d, err := scanRolloutDevice(tx.QueryRow(ctx, "SELECT "+rolloutDeviceCols+" FROM rollout_devices WHERE rollout_id = ? AND device = ?", id, device))
	if errors.Is(err, errdefs.ErrNotFound) {
		return RolloutDevice{}, errdefs.NotFound(fmt.Sprintf("device %s is not in rollout %s", device, id))
	}
	if err != nil {
		return RolloutDevice{}, fmt.Errorf("get rollout device: %w", err)
	}
	return d, nil
}

// HeldAssignment is a device's held row with the rollout fields a
// heartbeat needs.
type HeldAssignment struct {
	Device          RolloutDevice
	State           string // rollout state
	CurrentWave     int
	ArtifactName    string
	ArtifactVersion string
	Probe           json.RawMessage
}

// HeldAssignment returns the row that decides what device is served, or
// errdefs.ErrNotFound when no rollout holds it. One indexed read, no
// transaction: it runs on heartbeats.
func (db *DB) HeldAssignment(ctx context.Context, device string) (HeldAssignment, error) {
	var h HeldAssignment
	var held, u int64
	var probe string
	d := &h.Device
	err := db.reader().QueryRow(ctx, `SELECT rd.rollout_id, rd.device, rd.position, rd.wave, rd.state, rd.detail, rd.assignment_id, rd.action,
			rd.previous_version, rd.held, rd.updated_at, r.state, r.current_wave, r.artifact_name, r.artifact_version, r.probe
		FROM rollout_devices rd JOIN rollouts r ON r.id = rd.rollout_id WHERE rd.device = ? AND rd.held = 1`, device).Scan(
		&d.RolloutID, &d.Device, &d.Position, &d.Wave, &d.State, &d.Detail, &d.AssignmentID, &d.Action,
		&d.PreviousVersion, &held, &u, &h.State, &h.CurrentWave, &h.ArtifactName, &h.ArtifactVersion, &probe)
	if err != nil {
		if errors.Is(err, errdefs.ErrNotFound) {
			return HeldAssignment{}, err
		}
		return HeldAssignment{}, fmt.Errorf("get held assignment: %w", err)
	}
	d.Held, d.UpdatedAt, h.Probe = held == 1, fromMS(u), json.RawMessage(probe)
	return h, nil
}

// MoveRolloutDevice changes a device's row if it is still in state from
// with assignment id fromAssignment (compare-and-set: a concurrent change
// makes it return false).
func (tx *Tx) MoveRolloutDevice(ctx context.Context, d RolloutDevice, from, fromAssignment string) (bool, error) {
	done := boolInt(states.Device(d.State).Terminal())
	res, err := tx.Exec(ctx, `UPDATE rollout_devices SET state = ?, done = ?, detail = ?, assignment_id = ?, action = ?, previous_version = ?, held = ?, updated_at = ?
		WHERE rollout_id = ? AND device = ? AND state = ? AND assignment_id = ?`,
		d.State, done, truncateText(d.Detail, maxDetail), d.AssignmentID, d.Action, d.PreviousVersion, boolInt(d.Held), ms(tx.Now()),
		d.RolloutID, d.Device, from, fromAssignment)
	if err != nil {
		return false, fmt.Errorf("update rollout device: %w", err)
	}
	n, err := affected(res)
	return n == 1, err
}

// maxDetail bounds the detail text a device reports.
const maxDetail = 1024

func truncateText(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n]
}

// WaveOpen reports whether a live device of the wave is not yet terminal:
// live = not decommissioned and heard from within 3 heartbeat intervals of
// now (SPEC §3). It stops at the first such device.
func (tx *Tx) WaveOpen(ctx context.Context, id string, wave int, now time.Time) (bool, error) {
	var one int
	err := tx.QueryRow(ctx, `SELECT 1 FROM rollout_devices rd JOIN devices d ON d.name = rd.device
		WHERE rd.rollout_id = ? AND rd.wave = ? AND rd.done = 0 AND d.status <> 'decommissioned'
		AND d.last_seen_at + 3 * d.heartbeat_interval_ms >= ? LIMIT 1`, id, wave, ms(now)).Scan(&one)
	if errors.Is(err, errdefs.ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("check wave liveness: %w", err)
	}
	return true, nil
}

// RevertApplied turns every held device of the rollout that was served
// the artifact and did not fail into a pending revert (or revert_failed
// when no previous version was recorded), and releases the others. It
// returns how many will revert and how many cannot.
func (tx *Tx) RevertApplied(ctx context.Context, id string) (reverting, unavailable int, err error) {
	served := "('assigned', 'downloading', 'verifying', 'applying', 'healthy')"
	now := ms(tx.Now())
	res, err := tx.Exec(ctx, `UPDATE rollout_devices SET action = 'revert', state = 'revert_failed', done = 1, held = 0, assignment_id = '',
		detail = 'no previous version recorded to revert to', updated_at = ?
		WHERE rollout_id = ? AND held = 1 AND action = 'apply' AND previous_version = '' AND state IN `+served, now, id)
	if err != nil {
		return 0, 0, fmt.Errorf("revert rollout: %w", err)
	}
	n1, err := affected(res)
	if err != nil {
		return 0, 0, err
	}
	res, err = tx.Exec(ctx, `UPDATE rollout_devices SET action = 'revert', state = 'pending', done = 0, assignment_id = '',
		detail = 'revert to ' || previous_version || ' queued', updated_at = ?
		WHERE rollout_id = ? AND held = 1 AND action = 'apply' AND state IN `+served, now, id)
	if err != nil {
		return 0, 0, fmt.Errorf("revert rollout: %w", err)
	}
	n2, err := affected(res)
	if err != nil {
		return 0, 0, err
	}
	if _, err := tx.Exec(ctx, `UPDATE rollout_devices SET held = 0, updated_at = ? WHERE rollout_id = ? AND held = 1 AND action = 'apply'`, now, id); err != nil {
		return 0, 0, fmt.Errorf("release rollout devices: %w", err)
	}
	return int(n2), int(n1), nil
}

// ReleaseRollout withdraws every assignment of the rollout.
func (tx *Tx) ReleaseRollout(ctx context.Context, id string) error {
	if _, err := tx.Exec(ctx, `UPDATE rollout_devices SET held = 0, updated_at = ? WHERE rollout_id = ? AND held = 1`, ms(tx.Now()), id); err != nil {
		return fmt.Errorf("release rollout devices: %w", err)
	}
	return nil
}

// RolloutCounts counts a rollout's devices by wave and state.
func (tx *Tx) RolloutCounts(ctx context.Context, id string) (map[int]map[string]int, error) {
	out := map[int]map[string]int{}
	err := tx.scanAll(ctx, func(r *sql.Rows) error {
		var wave, n int
		var state string
		if err := r.Scan(&wave, &state, &n); err != nil {
			return err
		}
		if out[wave] == nil {
			out[wave] = map[string]int{}
		}
		out[wave][state] = n
		return nil
	}, "SELECT wave, state, COUNT(*) FROM rollout_devices WHERE rollout_id = ? GROUP BY wave, state", id)
	if err != nil {
		return nil, fmt.Errorf("count rollout devices: %w", err)
	}
	return out, nil
}

// BumpRolloutEpoch tells every replica to drop its cached assignments.
func (tx *Tx) BumpRolloutEpoch(ctx context.Context) error {
	if _, err := tx.Exec(ctx, "UPDATE rollout_epoch SET epoch = epoch + 1 WHERE id = 1"); err != nil {
		return fmt.Errorf("bump rollout epoch: %w", err)
	}
	return nil
}

// RolloutEpoch reads the epoch (one tiny indexed read).
func (db *DB) RolloutEpoch(ctx context.Context) (int64, error) {
	var e int64
	if err := db.reader().QueryRow(ctx, "SELECT epoch FROM rollout_epoch WHERE id = 1").Scan(&e); err != nil {
		return 0, fmt.Errorf("read rollout epoch: %w", err)
	}
	return e, nil
}
