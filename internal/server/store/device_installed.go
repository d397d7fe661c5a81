package store

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/meshanics/meshanics/internal/errdefs"
)

// SetInstalled records what an active device reports it runs (the
// installed list of a Heartbeat, SPEC §3), when it differs from the
// record: a read first, so an unchanged list costs no write; then, in one
// transaction, the update and a "device.installed" audit event. It reports
// whether anything changed. errdefs.ErrNotFound for an unknown name,
// errdefs.ErrDecommissioned for a decommissioned one.
func (db *DB) SetInstalled(ctx context.Context, name string, installed json.RawMessage) (changed bool, err error) {
	text, err := jsonText("installed artifacts", installed, "[]")
	if err != nil {
		return false, err
	}
	var current string
	err = db.Read(ctx, func(tx *Tx) error {
		return tx.QueryRow(ctx, "SELECT installed FROM devices WHERE name = ?", name).Scan(&current)
	})
	if err != nil {
		return false, fmt.Errorf("installed of %s: %w", name, err)
	}
	if jsonEqual([]byte(current), []byte(text)) {
		return false, nil
	}
	err = db.Tx(ctx, func(tx *Tx) error {
		changed = false
		d, err := tx.device(ctx, name, true)
		if err != nil {
			return err
		}
		if d.Status != DeviceActive {
			return fmt.Errorf("installed of %s: %w", name, errdefs.ErrDecommissioned)
		}
		if jsonEqual(d.Installed, []byte(text)) {
			return nil
		}
		if _, err := tx.Exec(ctx, "UPDATE devices SET installed = ?, updated_at = ? WHERE name = ?", text, ms(tx.Now()), name); err != nil {
			return fmt.Errorf("set installed: %w", err)
		}
		changed = true
		_, err = tx.AppendAudit(ctx, Event{Actor: DeviceActor(name), Type: "device.installed", Subject: name,
			Data: map[string]any{"device_id": d.ID, "installed": json.RawMessage(text)}})
		return err
	})
	return changed, err
}
