package store

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"time"

	"github.com/meshanics/meshanics/internal/errdefs"
)

// IssuedCert describes a certificate the CA signed for a device.
type IssuedCert struct {
	Serial    string // lower-case hex, unique
	KeySHA256 string // hex sha256 of the SubjectPublicKeyInfo DER
	NotAfter  time.Time
}

func (c IssuedCert) validate() error {
	if c.Serial == "" || len(c.KeySHA256) != 64 || c.NotAfter.IsZero() {
		return errors.New("issued certificate needs serial, key sha256 (hex) and expiry")
	}
	return nil
}

// EnrollOutcome says which SPEC §2 case an enrollment took.
type EnrollOutcome string

const (
	// EnrollNew: the name was never enrolled; life 1.
	EnrollNew EnrollOutcome = "new"
	// EnrollNewLife: the name's device was decommissioned; a new life
	// starts (new ID, Life+1), the old one moves to DeviceLives.
	EnrollNewLife EnrollOutcome = "new_life"
	// EnrollSameKey: an active device re-enrolled with its own key (agent
	// upgrade): same record, fresh certificate.
	EnrollSameKey EnrollOutcome = "same_key"
	// EnrollReplaced: an active device's name taken over by a new key with
	// a replace=true token: old certificates revoked, history kept.
	EnrollReplaced EnrollOutcome = "replaced"
)

// decideEnrollment applies SPEC §2 "Same name again".
func decideEnrollment(existing *Device, keySHA256 string, allowReplace bool) (EnrollOutcome, error) {
	switch {
	case existing == nil:
		return EnrollNew, nil
	case existing.Status == DeviceDecommissioned:
		return EnrollNewLife, nil
	case existing.CertKeySHA256 == keySHA256:
		return EnrollSameKey, nil
	case allowReplace:
		return EnrollReplaced, nil
	}
	return "", errdefs.Conflict(fmt.Sprintf("device name %q is already enrolled with another key", existing.Name))
}

// CheckEnrollment predicts EnrollDevice's outcome without changing anything
// (errdefs.ErrConflict when the name is taken), so enrollment can refuse
// before it signs. EnrollDevice decides again atomically.
func (db *DB) CheckEnrollment(ctx context.Context, name, keySHA256 string, allowReplace bool) (EnrollOutcome, error) {
	d, err := db.DeviceByName(ctx, name)
	switch {
	case errors.Is(err, errdefs.ErrNotFound):
		return decideEnrollment(nil, keySHA256, allowReplace)
	case err != nil:
		return "", err
	}
	return decideEnrollment(&d, keySHA256, allowReplace)
}

// Enrollment is what EnrollDevice records.
type Enrollment struct {
	Name, Fleet       string
	Cert              IssuedCert
	Hardware          json.RawMessage // nil = {}
	AgentVersion      string
	Tags              map[string]string // final tags (token tags merged by the caller)
	HeartbeatInterval time.Duration
	TokenID           string // "" for offline provisioning
	AllowReplace      bool   // the token was minted with replace=true
	// Actor is the audit actor; "" = "device:<name>".
	Actor string
}

// EnrollDevice records an enrollment atomically, following SPEC §2: a new
// name, a new life of a decommissioned name, a same-key re-enrollment, or a
// replacement (AllowReplace) that revokes the old certificates. Otherwise
// errdefs.ErrConflict. Appends "device.enroll" with the outcome.
func (tx *Tx) EnrollDevice(ctx context.Context, e Enrollment) (Device, EnrollOutcome, error) {
	if err := e.Cert.validate(); err != nil {
		return Device{}, "", err
	}
	if e.Name == "" || e.Fleet == "" || e.HeartbeatInterval <= 0 {
		return Device{}, "", errors.New("enrollment needs name, fleet and heartbeat interval")
	}
	hw, err := jsonText("hardware", e.Hardware, "{}")
	if err != nil {
		return Device{}, "", err
	}
	tags, err := tagsText(e.Tags)
	if err != nil {
		return Device{}, "", err
	}
	var existing *Device
	d, err := tx.device(ctx, e.Name, true)
	switch {
	case err == nil:
		existing = &d
	case !errors.Is(err, errdefs.ErrNotFound):
		return Device{}, "", err
	}
	outcome, err := decideEnrollment(existing, e.Cert.KeySHA256, e.AllowReplace)
	if err != nil {
		return Device{}, "", err
	}
	now := ms(tx.Now())
	id, life := NewID("dev"), 1
	switch outcome {
	case EnrollNew:
		_, err = tx.Exec(ctx, "INSERT INTO devices ("+deviceColumns+`)
			VALUES (?, ?, 1, ?, 'active', ?, ?, ?, ?, ?, ?, '[]', 0, ?, ?, ?, ?, 0)`,
			e.Name, id, e.Fleet, e.Cert.Serial, e.Cert.KeySHA256, ms(e.Cert.NotAfter),
			hw, e.AgentVersion, tags, e.HeartbeatInterval.Milliseconds(), e.TokenID, now, now)
	case EnrollNewLife:
		if err = tx.archiveLife(ctx, *existing); err != nil {
			return Device{}, "", err
		}
		life = existing.Life + 1
		_, err = tx.Exec(ctx, `UPDATE devices SET id = ?, life = ?, fleet = ?, status = 'active', cert_serial = ?,
			cert_key_sha256 = ?, cert_not_after = ?, hardware = ?, agent_version = ?, tags = ?, installed = '[]',
			last_seen_at = 0, heartbeat_interval_ms = ?, enrolled_with = ?, created_at = ?, updated_at = ?,
			decommissioned_at = 0 WHERE name = ?`,
			id, life, e.Fleet, e.Cert.Serial, e.Cert.KeySHA256, ms(e.Cert.NotAfter), hw, e.AgentVersion, tags,
			e.HeartbeatInterval.Milliseconds(), e.TokenID, now, now, e.Name)
	case EnrollSameKey, EnrollReplaced:
		id, life = existing.ID, existing.Life
		if outcome == EnrollReplaced {
			if err = tx.revokeCerts(ctx, id, "replaced"); err != nil {
				return Device{}, "", err
			}
		}
		_, err = tx.Exec(ctx, `UPDATE devices SET fleet = ?, cert_serial = ?, cert_key_sha256 = ?, cert_not_after = ?,
			hardware = ?, agent_version = ?, tags = ?, heartbeat_interval_ms = ?, enrolled_with = ?, updated_at = ?
			WHERE name = ?`,
			e.Fleet, e.Cert.Serial, e.Cert.KeySHA256, ms(e.Cert.NotAfter), hw, e.AgentVersion, tags,
			e.HeartbeatInterval.Milliseconds(), e.TokenID, now, e.Name)
	}
	if err != nil {
		return Device{}, "", fmt.Errorf("write device: %w", err)
	}
	if err := tx.setDeviceTags(ctx, e.Name, e.Tags); err != nil {
		return Device{}, "", err
	}
	if err := tx.recordCert(ctx, id, e.Name, e.Cert); err != nil {
		return Device{}, "", err
	}
	actor := e.Actor
	if actor == "" {
		actor = DeviceActor(e.Name)
	}
	if _, err := tx.AppendAudit(ctx, Event{Actor: actor, Type: "device.enroll", Subject: e.Name, Data: map[string]any{
		"outcome": outcome, "device_id": id, "life": life, "token_id": e.TokenID, "cert_serial": e.Cert.Serial,
	}}); err != nil {
		return Device{}, "", err
	}
	d, err = tx.device(ctx, e.Name, false)
	return d, outcome, err
}

// archiveLife copies a finished (decommissioned) life into device_lives.
func (tx *Tx) archiveLife(ctx context.Context, d Device) error {
	tags, err := tagsText(d.Tags)
	if err != nil {
		return err
	}
	_, err = tx.Exec(ctx, `INSERT INTO device_lives (id, name, life, fleet, cert_serial, cert_key_sha256, hardware,
		agent_version, tags, installed, last_seen_at, created_at, decommissioned_at)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		d.ID, d.Name, d.Life, d.Fleet, d.CertSerial, d.CertKeySHA256, string(d.Hardware), d.AgentVersion, tags,
		string(d.Installed), ms(d.LastSeen), ms(d.CreatedAt), ms(d.DecommissionedAt))
	if err != nil {
		return fmt.Errorf("archive device life: %w", err)
	}
	return nil
}

// Registration is what a Register call refreshes (field for field the
// shape deviceapi validates, so its value converts directly).
type Registration struct {
	Hardware     json.RawMessage
	AgentVersion string
	// Tags the agent declares; merged over the record's tags (declared
	// keys win, tags applied at enrollment stay).
	Tags      map[string]string
	Installed json.RawMessage // JSON array; nil = []
	Now       time.Time       // also moves LastSeen forward
}

// RegisterDevice refreshes the active device name from a Register call, in
// its own transaction. It appends "device.register" only when something
// changed, so an agent restart loop does not flood the audit log.
// errdefs.ErrNotFound for an unknown name, errdefs.ErrDecommissioned for a
// decommissioned one.
func (db *DB) RegisterDevice(ctx context.Context, name string, reg Registration) error {
	hw, err := jsonText("hardware", reg.Hardware, "{}")
	if err != nil {
		return err
	}
	installed, err := jsonText("installed artifacts", reg.Installed, "[]")
	if err != nil {
		return err
	}
	return db.Tx(ctx, func(tx *Tx) error {
		d, err := tx.device(ctx, name, true)
		if err != nil {
			return err
		}
		if d.Status != DeviceActive {
			return fmt.Errorf("register %s: %w", name, errdefs.ErrDecommissioned)
		}
		merged := make(map[string]string, len(d.Tags)+len(reg.Tags))
		maps.Copy(merged, d.Tags)
		maps.Copy(merged, reg.Tags)
		// The enrollment token's tags are the operator's word: a device's
		// declared tags never override them, here as at enrollment
		// (docs/server.md), so a device cannot move itself between the
		// groups an operator put it in.
		if d.EnrolledWith != "" {
			tokenTags, err := tx.enrollmentTokenTags(ctx, d.EnrolledWith)
			if err != nil {
				return err
			}
			maps.Copy(merged, tokenTags)
		}
		changed := !jsonEqual(d.Hardware, []byte(hw)) || d.AgentVersion != reg.AgentVersion ||
			!maps.Equal(d.Tags, merged) || !jsonEqual(d.Installed, []byte(installed))
		seen := max(ms(reg.Now), ms(d.LastSeen))
		if !changed {
			_, err := tx.Exec(ctx, "UPDATE devices SET last_seen_at = ? WHERE name = ?", seen, name)
			return err
		}
		tags, err := tagsText(merged)
		if err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `UPDATE devices SET hardware = ?, agent_version = ?, tags = ?, installed = ?,
			last_seen_at = ?, updated_at = ? WHERE name = ?`,
			hw, reg.AgentVersion, tags, installed, seen, ms(tx.Now()), name); err != nil {
			return fmt.Errorf("register device: %w", err)
		}
		if err := tx.setDeviceTags(ctx, name, merged); err != nil {
			return err
		}
		_, err = tx.AppendAudit(ctx, Event{Actor: DeviceActor(name), Type: "device.register", Subject: name,
			Data: map[string]any{"agent_version": reg.AgentVersion, "device_id": d.ID}})
		return err
	})
}

func jsonEqual(a, b []byte) bool {
	var ca, cb bytes.Buffer
	if json.Compact(&ca, a) != nil || json.Compact(&cb, b) != nil {
		return bytes.Equal(a, b)
	}
	return bytes.Equal(ca.Bytes(), cb.Bytes())
}

// RenewDeviceCert records a certificate renewed for the same key (SPEC §2
// renewal). oldSerial must be an unrevoked certificate of the active
// device's current life and cert.KeySHA256 its key; otherwise
// errdefs.ErrPermission (errdefs.ErrDecommissioned for a decommissioned
// device). The old certificate is not revoked: it holds the same key, and a
// lost renewal response must not lock the device out. Appends
// "device.certificate_renew".
func (tx *Tx) RenewDeviceCert(ctx context.Context, name, oldSerial string, cert IssuedCert) (Device, error) {
	if err := cert.validate(); err != nil {
		return Device{}, err
	}
	d, err := tx.device(ctx, name, true)
	if err != nil {
		return Device{}, err
	}
	if d.Status != DeviceActive {
		return Device{}, fmt.Errorf("renew %s: %w", name, errdefs.ErrDecommissioned)
	}
	c, err := tx.cert(ctx, oldSerial)
	if err != nil || c.DeviceID != d.ID || !c.RevokedAt.IsZero() || c.KeySHA256 != cert.KeySHA256 || d.CertKeySHA256 != cert.KeySHA256 {
		return Device{}, fmt.Errorf("renew %s: certificate is not the device's current one: %w", name, errdefs.ErrPermission)
	}
	if _, err := tx.Exec(ctx, "UPDATE devices SET cert_serial = ?, cert_not_after = ?, updated_at = ? WHERE name = ?",
		cert.Serial, ms(cert.NotAfter), ms(tx.Now()), name); err != nil {
		return Device{}, fmt.Errorf("renew certificate: %w", err)
	}
	if err := tx.recordCert(ctx, d.ID, name, cert); err != nil {
		return Device{}, err
	}
	if _, err := tx.AppendAudit(ctx, Event{Actor: DeviceActor(name), Type: "device.certificate_renew", Subject: name,
		Data: map[string]any{"old_serial": oldSerial, "serial": cert.Serial, "not_after": cert.NotAfter.UTC().Format(time.RFC3339)}}); err != nil {
		return Device{}, err
	}
	return tx.device(ctx, name, false)
}

// DecommissionDevice retires the active device name (SPEC §3): status
// decommissioned, every certificate of its life revoked with reason
// "decommissioned" (so its agent gets the decommission signal), pending log
// requests failed. errdefs.ErrNotFound / errdefs.ErrConflict (already
// decommissioned). Appends "device.decommission".
func (tx *Tx) DecommissionDevice(ctx context.Context, actor, name string) (Device, error) {
	d, err := tx.device(ctx, name, true)
	if err != nil {
		return Device{}, err
	}
	if d.Status == DeviceDecommissioned {
		return Device{}, errdefs.Conflict(fmt.Sprintf("device %q is already decommissioned", name))
	}
	now := ms(tx.Now())
	if _, err := tx.Exec(ctx, "UPDATE devices SET status = 'decommissioned', decommissioned_at = ?, updated_at = ? WHERE name = ?",
		now, now, name); err != nil {
		return Device{}, fmt.Errorf("decommission device: %w", err)
	}
	if err := tx.revokeCerts(ctx, d.ID, "decommissioned"); err != nil {
		return Device{}, err
	}
	if _, err := tx.Exec(ctx, "UPDATE log_requests SET state = ?, detail = ?, completed_at = ? WHERE device_id = ? AND state = ?",
		LogFailed, "device decommissioned", now, d.ID, LogPending); err != nil {
		return Device{}, fmt.Errorf("cancel log requests: %w", err)
	}
	if _, err := tx.AppendAudit(ctx, Event{Actor: actor, Type: "device.decommission", Subject: name,
		Data: map[string]any{"device_id": d.ID, "life": d.Life}}); err != nil {
		return Device{}, err
	}
	return tx.device(ctx, name, false)
}

// DeviceLife is a finished life of a device name.
type DeviceLife struct {
	ID, Name         string
	Life             int
	Fleet            string
	CertSerial       string
	CertKeySHA256    string
	Hardware         json.RawMessage
	AgentVersion     string
	Tags             map[string]string
	Installed        json.RawMessage
	LastSeen         time.Time
	CreatedAt        time.Time
	DecommissionedAt time.Time
}

// DeviceLives returns the finished lives of name, oldest first (the
// current life is DeviceByName).
func (db *DB) DeviceLives(ctx context.Context, name string) ([]DeviceLife, error) {
	var out []DeviceLife
	err := db.reader().scanAll(ctx, func(r *sql.Rows) error {
		var l DeviceLife
		var hw, tags, inst string
		var seen, created, decom int64
		if err := r.Scan(&l.ID, &l.Name, &l.Life, &l.Fleet, &l.CertSerial, &l.CertKeySHA256, &hw, &l.AgentVersion,
			&tags, &inst, &seen, &created, &decom); err != nil {
			return err
		}
		l.Hardware, l.Installed = json.RawMessage(hw), json.RawMessage(inst)
		l.LastSeen, l.CreatedAt, l.DecommissionedAt = fromMS(seen), fromMS(created), fromMS(decom)
		var err error
		l.Tags, err = parseTags(tags)
		out = append(out, l)
		return err
	}, `SELECT id, name, life, fleet, cert_serial, cert_key_sha256, hardware, agent_version, tags, installed,
		last_seen_at, created_at, decommissioned_at FROM device_lives WHERE name = ? ORDER BY life`, name)
	if err != nil {
		return nil, fmt.Errorf("device lives: %w", err)
	}
	return out, nil
}
