package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"time"

	"github.com/meshanics/meshanics/internal/errdefs"
	"github.com/meshanics/meshanics/internal/states"
)

// DeviceStatus is the stored lifecycle status of a device record. Presence
// (online/offline) is derived from LastSeen; see Device.Presence.
type DeviceStatus string

const (
	DeviceActive         DeviceStatus = "active"
	DeviceDecommissioned DeviceStatus = "decommissioned"
)

// Device is the current life of a device name (SPEC §2, §3).
type Device struct {
	Name string
	// ID identifies this life of the name; a name enrolled again after a
	// decommission gets a new ID and Life+1.
	ID     string
	Life   int
	Fleet  string
	Status DeviceStatus
	// CertSerial is the newest certificate's serial (lower-case hex),
	// CertKeySHA256 the hex sha256 of its SubjectPublicKeyInfo DER (the
	// device key), CertNotAfter its expiry.
	CertSerial    string
	CertKeySHA256 string
	CertNotAfter  time.Time
	// Hardware is the SPEC §4.2 profile ({} until the first Register).
	Hardware     json.RawMessage
	AgentVersion string
	Tags         map[string]string
	// Installed is the JSON array the agent last registered ([] if none).
	Installed         json.RawMessage
	LastSeen          time.Time // zero: never seen
	HeartbeatInterval time.Duration
	// EnrolledWith is the id of the enrollment token of the latest
	// enrollment ("" for offline provisioning).
	EnrolledWith     string
	CreatedAt        time.Time // when this life was enrolled
	UpdatedAt        time.Time // last change of anything but LastSeen
	DecommissionedAt time.Time // zero while active
}

// Presence is "decommissioned", "offline" (never seen, or last heartbeat
// older than 3 × interval) or "online" (SPEC §3).
func (d Device) Presence(now time.Time) string {
	switch {
	case d.Status == DeviceDecommissioned:
		return states.Decommissioned
	case d.LastSeen.IsZero() || now.Sub(d.LastSeen) > 3*d.HeartbeatInterval:
		return states.Offline
	}
	return states.Online
}

const deviceColumns = `name, id, life, fleet, status, cert_serial, cert_key_sha256, cert_not_after,
	hardware, agent_version, tags, installed, last_seen_at, heartbeat_interval_ms, enrolled_with,
	created_at, updated_at, decommissioned_at`

func scanDevice(sc interface{ Scan(...any) error }) (Device, error) {
	var d Device
	var status, hardware, tags, installed string
	var notAfter, lastSeen, interval, created, updated, decom int64
	err := sc.Scan(&d.Name, &d.ID, &d.Life, &d.Fleet, &status, &d.CertSerial, &d.CertKeySHA256, &notAfter,
		&hardware, &d.AgentVersion, &tags, &installed, &lastSeen, &interval, &d.EnrolledWith,
		&created, &updated, &decom)
	if err != nil {
		return Device{}, err
	}
	d.Status = DeviceStatus(status)
	d.CertNotAfter, d.LastSeen = fromMS(notAfter), fromMS(lastSeen)
	d.CreatedAt, d.UpdatedAt, d.DecommissionedAt = fromMS(created), fromMS(updated), fromMS(decom)
	d.HeartbeatInterval = time.Duration(interval) * time.Millisecond
	d.Hardware, d.Installed = json.RawMessage(hardware), json.RawMessage(installed)
	if d.Tags, err = parseTags(tags); err != nil {
		return Device{}, err
	}
	return d, nil
}

func deviceNotFound(name string) error {
	return errdefs.NotFound(fmt.Sprintf("device %q not found", name))
}

// device reads one device row; lock adds the row lock for a following
// change.
func (tx *Tx) device(ctx context.Context, name string, lock bool) (Device, error) {
	q := "SELECT " + deviceColumns + " FROM devices WHERE name = ?"
	if lock {
		q += tx.ForUpdate()
	}
	d, err := scanDevice(tx.QueryRow(ctx, q, name))
	if errors.Is(err, errdefs.ErrNotFound) {
		return Device{}, deviceNotFound(name)
	}
	if err != nil {
		return Device{}, fmt.Errorf("read device: %w", err)
	}
	return d, nil
}

// Device returns the device record name inside the transaction and locks it
// for the rest of a write transaction. errdefs.ErrNotFound if unknown.
func (tx *Tx) Device(ctx context.Context, name string) (Device, error) {
	return tx.device(ctx, name, !tx.readOnly)
}

// DeviceByName returns the current record of name (active or
// decommissioned) with one indexed read and no transaction.
// errdefs.ErrNotFound if the name was never enrolled.
func (db *DB) DeviceByName(ctx context.Context, name string) (Device, error) {
	return db.reader().device(ctx, name, false)
}

// DeviceFilter narrows ListDevices.
type DeviceFilter struct {
	// Status: "" (all), "active", "online", "offline" or "decommissioned".
	Status string
	// Tags: every key must be present with exactly this value.
	Tags map[string]string
	// Now is the reference time for online/offline (zero = store clock).
	Now time.Time
}

func (f DeviceFilter) where(now time.Time) (string, []any, error) {
	q, args := " WHERE 1=1", []any{}
	nowMS := ms(now)
	switch f.Status {
	case "":
	case string(DeviceActive), states.Decommissioned:
		q += " AND status = ?"
		args = append(args, f.Status)
	case states.Online:
		q += " AND status = 'active' AND last_seen_at > 0 AND last_seen_at + 3 * heartbeat_interval_ms >= ?"
		args = append(args, nowMS)
	case states.Offline:
		q += " AND status = 'active' AND (last_seen_at = 0 OR last_seen_at + 3 * heartbeat_interval_ms < ?)"
		args = append(args, nowMS)
	default:
		return "", nil, errdefs.Invalid(fmt.Sprintf("unknown device status %q (want active, online, offline or decommissioned)", truncate(f.Status)))
	}
	keys := make([]string, 0, len(f.Tags))
	for k := range f.Tags {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		q += " AND EXISTS (SELECT 1 FROM device_tags t WHERE t.device_name = devices.name AND t.tag_key = ? AND t.tag_value = ?)"
		args = append(args, k, f.Tags[k])
	}
	return q, args, nil
}

// ListDevices returns one page of devices ordered by name and the number of
// devices matching f (one snapshot).
func (db *DB) ListDevices(ctx context.Context, f DeviceFilter, p Page) (items []Device, total int, err error) {
	p = p.norm()
	now := f.Now
	if now.IsZero() {
		now = db.Now()
	}
	where, args, err := f.where(now)
	if err != nil {
		return nil, 0, err
	}
	err = db.Read(ctx, func(tx *Tx) error {
		if err := tx.QueryRow(ctx, "SELECT COUNT(*) FROM devices"+where, args...).Scan(&total); err != nil {
			return err
		}
		items = make([]Device, 0, min(p.Limit, total))
		return tx.scanAll(ctx, func(r *sql.Rows) error {
			d, err := scanDevice(r)
			items = append(items, d)
			return err
		}, "SELECT "+deviceColumns+" FROM devices"+where+" ORDER BY name LIMIT ? OFFSET ?", append(args, p.Limit, p.Offset)...)
	})
	if err != nil {
		return nil, 0, fmt.Errorf("list devices: %w", err)
	}
	return items, total, nil
}

// DeviceCounts are fleet-wide totals.
type DeviceCounts struct {
	Active, Online, Decommissioned int
}

// CountDevices counts devices by status and presence at now (zero = store
// clock), e.g. to widen heartbeat intervals for large fleets.
func (db *DB) CountDevices(ctx context.Context, now time.Time) (DeviceCounts, error) {
	if now.IsZero() {
		now = db.Now()
	}
	var c DeviceCounts
	err := db.reader().QueryRow(ctx, `SELECT
		COALESCE(SUM(CASE WHEN status = 'active' THEN 1 ELSE 0 END), 0),
		COALESCE(SUM(CASE WHEN status = 'active' AND last_seen_at > 0 AND last_seen_at + 3 * heartbeat_interval_ms >= ? THEN 1 ELSE 0 END), 0),
		COALESCE(SUM(CASE WHEN status = 'decommissioned' THEN 1 ELSE 0 END), 0)
		FROM devices`, ms(now)).Scan(&c.Active, &c.Online, &c.Decommissioned)
	if err != nil {
		return DeviceCounts{}, fmt.Errorf("count devices: %w", err)
	}
	return c, nil
}

// touchBatch is how many devices one TouchDevices statement updates.
const touchBatch = 500

// TouchDevices records last-seen times for many devices in one
// transaction (the heartbeat path batches in memory and flushes here).
// A time only moves last_seen forward; unknown and decommissioned names are
// skipped, not errors. UpdatedAt is not changed. It implements
// presence.Sink.
func (db *DB) TouchDevices(ctx context.Context, seen map[string]time.Time) error {
	if len(seen) == 0 {
		return nil
	}
	names := make([]string, 0, len(seen))
	for n := range seen {
		names = append(names, n)
	}
	sort.Strings(names) // one lock order across replicas
	err := db.Tx(ctx, func(tx *Tx) error {
		if tx.Dialect() == SQLite {
			// In-process engine: a prepared primary-key update per row is
			// cheapest.
			stmt, err := tx.prepare(ctx, "UPDATE devices SET last_seen_at = ? WHERE name = ? AND status = 'active' AND last_seen_at < ?")
			if err != nil {
				return err
			}
			defer stmt.Close()
			for _, n := range names {
				if _, err := stmt.ExecContext(ctx, ms(seen[n]), n, ms(seen[n])); err != nil {
					return mapErr(err)
				}
			}
			return nil
		}
		for start := 0; start < len(names); start += touchBatch {
			chunk := names[start:min(start+touchBatch, len(names))]
			q, args := touchQuery(chunk, seen)
			if _, err := tx.Exec(ctx, q, args...); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("touch devices: %w", err)
	}
	return nil
}

// touchQuery builds one UPDATE … FROM over a VALUES list (PostgreSQL: one
// round trip and a hash join per chunk).
func touchQuery(names []string, seen map[string]time.Time) (string, []any) {
	args := make([]any, 0, 2*len(names))
	vals := make([]byte, 0, len(names)*32)
	for i, n := range names {
		if i > 0 {
			vals = append(vals, ", "...)
		}
		vals = append(vals, "(CAST(? AS TEXT), CAST(? AS BIGINT))"...)
		args = append(args, n, ms(seen[n]))
	}
	q := `WITH v (name, ts) AS (VALUES ` + string(vals) + `)
		UPDATE devices SET last_seen_at = v.ts FROM v
		WHERE devices.name = v.name AND devices.status = 'active' AND devices.last_seen_at < v.ts`
	return q, args
}

// maxChangedNames bounds DevicesChangedSince.
const maxChangedNames = 10000

// DevicesChangedSince returns the names of devices whose record (anything
// but LastSeen) changed at or after since, so caches on other replicas can
// drop stale entries. At most 10,000 names, most recent changes first.
func (db *DB) DevicesChangedSince(ctx context.Context, since time.Time) ([]string, error) {
	var names []string
	err := db.reader().scanAll(ctx, func(r *sql.Rows) error {
		var n string
		err := r.Scan(&n)
		names = append(names, n)
		return err
	}, "SELECT name FROM devices WHERE updated_at >= ? ORDER BY updated_at DESC, name LIMIT ?", ms(since), maxChangedNames)
	if err != nil {
		return nil, fmt.Errorf("devices changed since: %w", err)
	}
	return names, nil
}

// setDeviceTags rewrites the tag index of name.
func (tx *Tx) setDeviceTags(ctx context.Context, name string, tags map[string]string) error {
	if _, err := tx.Exec(ctx, "DELETE FROM device_tags WHERE device_name = ?", name); err != nil {
		return fmt.Errorf("clear device tags: %w", err)
	}
	for k, v := range tags {
		if _, err := tx.Exec(ctx, "INSERT INTO device_tags (device_name, tag_key, tag_value) VALUES (?, ?, ?)", name, k, v); err != nil {
			return fmt.Errorf("write device tags: %w", err)
		}
	}
	return nil
}

func truncate(s string) string {
	if len(s) > 64 {
		return s[:64] + "…"
	}
	return s
}

// SetHeartbeatInterval records the interval the server now hands to the
// named devices (none = every active device), so that offline detection
// (3 × interval) follows a widened interval. Not an audit event and not a
// record change (UpdatedAt stays).
func (db *DB) SetHeartbeatInterval(ctx context.Context, interval time.Duration, names ...string) error {
	if interval <= 0 {
		return errdefs.Invalid("heartbeat interval must be positive")
	}
	msv := interval.Milliseconds()
	err := db.Tx(ctx, func(tx *Tx) error {
		if len(names) == 0 {
			_, err := tx.Exec(ctx, "UPDATE devices SET heartbeat_interval_ms = ? WHERE status = 'active' AND heartbeat_interval_ms <> ?", msv, msv)
			return err
		}
		for start := 0; start < len(names); start += touchBatch {
			chunk := names[start:min(start+touchBatch, len(names))]
			args := append([]any{msv}, anySlice(chunk)...)
			if _, err := tx.Exec(ctx, "UPDATE devices SET heartbeat_interval_ms = ? WHERE name IN ("+Placeholders(len(chunk))+")", args...); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("set heartbeat interval: %w", err)
	}
	return nil
}

func anySlice(ss []string) []any {
	out := make([]any, len(ss))
	for i, s := range ss {
		out[i] = s
	}
	return out
}
