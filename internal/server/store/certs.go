package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/meshanics/meshanics/internal/errdefs"
)

// Revocation reasons kept with a revoked device certificate.
const (
	RevokedDecommissioned = "decommissioned"
	RevokedReplaced       = "replaced"
)

// DeviceCert is a certificate issued to one life of a device.
type DeviceCert struct {
	Serial       string
	DeviceID     string
	DeviceName   string
	KeySHA256    string
	NotAfter     time.Time
	IssuedAt     time.Time
	RevokedAt    time.Time // zero while valid
	RevokeReason string    // RevokedDecommissioned or RevokedReplaced
}

func (tx *Tx) recordCert(ctx context.Context, deviceID, name string, c IssuedCert) error {
	_, err := tx.Exec(ctx, `INSERT INTO device_certs (serial, device_id, device_name, key_sha256, not_after, issued_at, revoked_at, revoke_reason)
		VALUES (?, ?, ?, ?, ?, ?, 0, '')`, c.Serial, deviceID, name, c.KeySHA256, ms(c.NotAfter), ms(tx.Now()))
	if errors.Is(err, errdefs.ErrConflict) {
		return errdefs.Conflict(fmt.Sprintf("certificate serial %s is already recorded", c.Serial))
	}
	if err != nil {
		return fmt.Errorf("record certificate: %w", err)
	}
	return nil
}

func (tx *Tx) revokeCerts(ctx context.Context, deviceID, reason string) error {
	_, err := tx.Exec(ctx, "UPDATE device_certs SET revoked_at = ?, revoke_reason = ? WHERE device_id = ? AND revoked_at = 0",
		ms(tx.Now()), reason, deviceID)
	if err != nil {
		return fmt.Errorf("revoke certificates: %w", err)
	}
	return nil
}

const certColumns = "serial, device_id, device_name, key_sha256, not_after, issued_at, revoked_at, revoke_reason"

func scanCert(sc interface{ Scan(...any) error }) (DeviceCert, error) {
	var c DeviceCert
	var notAfter, issued, revoked int64
	if err := sc.Scan(&c.Serial, &c.DeviceID, &c.DeviceName, &c.KeySHA256, &notAfter, &issued, &revoked, &c.RevokeReason); err != nil {
		return DeviceCert{}, err
	}
	c.NotAfter, c.IssuedAt, c.RevokedAt = fromMS(notAfter), fromMS(issued), fromMS(revoked)
	return c, nil
}

func (tx *Tx) cert(ctx context.Context, serial string) (DeviceCert, error) {
	c, err := scanCert(tx.QueryRow(ctx, "SELECT "+certColumns+" FROM device_certs WHERE serial = ?", serial))
	if errors.Is(err, errdefs.ErrNotFound) {
		return DeviceCert{}, errdefs.NotFound("certificate not found")
	}
	return c, err
}

// DeviceCertificate returns the certificate with serial.
func (db *DB) DeviceCertificate(ctx context.Context, serial string) (DeviceCert, error) {
	return db.reader().cert(ctx, serial)
}

// DeviceCertificates returns every certificate issued to name, in any
// life, oldest first.
func (db *DB) DeviceCertificates(ctx context.Context, name string) ([]DeviceCert, error) {
	var out []DeviceCert
	err := db.reader().scanAll(ctx, func(r *sql.Rows) error {
		c, err := scanCert(r)
		out = append(out, c)
		return err
	}, "SELECT "+certColumns+" FROM device_certs WHERE device_name = ? ORDER BY issued_at, serial", name)
	if err != nil {
		return nil, fmt.Errorf("device certificates: %w", err)
	}
	return out, nil
}

// CertState is the store's verdict on a presented device certificate.
type CertState int

const (
	// CertUnknown: no life of this name was issued the serial.
	CertUnknown CertState = iota
	// CertCurrent: an unrevoked certificate of the active device's
	// current life (the newest one or an earlier renewal of the same key).
	CertCurrent
	// CertRevoked: revoked by a replacement, or issued to an earlier life
	// that was not decommissioned with it. Not the decommission signal.
	CertRevoked
	// CertDecommissioned: issued to a device life that was decommissioned:
	// the agent must get the decommission signal (SPEC §3).
	CertDecommissioned
)

func (c CertState) String() string {
	switch c {
	case CertCurrent:
		return "current"
	case CertRevoked:
		return "revoked"
	case CertDecommissioned:
		return "decommissioned"
	}
	return "unknown"
}

// CertAuth says what the certificate serial (lower-case hex), presented
// for device name, means: one indexed read, no transaction. The device API
// calls it to authorise an RPC after TLS verified the chain.
func (db *DB) CertAuth(ctx context.Context, name, serial string) (CertState, error) {
	var certDevice, reason, devID, status string
	var revoked int64
	err := db.reader().QueryRow(ctx, `SELECT c.device_id, c.revoked_at, c.revoke_reason, COALESCE(d.id, ''), COALESCE(d.status, '')
		FROM device_certs c LEFT JOIN devices d ON d.name = c.device_name
		WHERE c.serial = ? AND c.device_name = ?`, serial, name).Scan(&certDevice, &revoked, &reason, &devID, &status)
	switch {
	case errors.Is(err, errdefs.ErrNotFound):
		return CertUnknown, nil
	case err != nil:
		return CertUnknown, fmt.Errorf("certificate auth: %w", err)
	case reason == RevokedDecommissioned:
		return CertDecommissioned, nil
	case revoked != 0:
		return CertRevoked, nil
	case certDevice == devID && status == string(DeviceDecommissioned):
		return CertDecommissioned, nil
	case certDevice == devID && status == string(DeviceActive):
		return CertCurrent, nil
	}
	return CertRevoked, nil
}
