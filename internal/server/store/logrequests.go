package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/meshanics/meshanics/internal/errdefs"
)

// Log request states.
const (
	LogPending   = "pending"   // waiting for the agent's upload
	LogCompleted = "completed" // bundle stored
	LogFailed    = "failed"    // the agent reported a failure, or the device was decommissioned
)

// MaxLogBundle is the largest gzip bundle a device may upload (SPEC §3).
const MaxLogBundle = 8 << 20

// LogRequest is an operator's request for a device's logs (SPEC §4.5).
// The bundle itself is read with LogBundle.
type LogRequest struct {
	ID          string
	Device      string
	DeviceID    string
	RequestedBy string
	Since       time.Time // zero = no lower bound
	MaxLines    int
	State       string
	Detail      string
	Size        int64 // bundle bytes once completed
	CreatedAt   time.Time
	CompletedAt time.Time
}

const logColumns = "id, device_name, device_id, requested_by, since_at, max_lines, state, detail, bundle_size, created_at, completed_at"

func scanLog(sc interface{ Scan(...any) error }) (LogRequest, error) {
	var l LogRequest
	var since, created, completed int64
	if err := sc.Scan(&l.ID, &l.Device, &l.DeviceID, &l.RequestedBy, &since, &l.MaxLines, &l.State, &l.Detail,
		&l.Size, &created, &completed); err != nil {
		return LogRequest{}, err
	}
	l.Since, l.CreatedAt, l.CompletedAt = fromMS(since), fromMS(created), fromMS(completed)
	return l, nil
}

func logNotFound(id string) error {
	return errdefs.NotFound(fmt.Sprintf("log request %q not found", truncate(id)))
}

// CreateLogRequest queues a log request for the active device (errdefs
// ErrNotFound / ErrDecommissioned otherwise) and appends
// "device.log_request".
func (tx *Tx) CreateLogRequest(ctx context.Context, actor, device string, since time.Time, maxLines int) (LogRequest, error) {
	if maxLines <= 0 {
		return LogRequest{}, errdefs.Invalid("max_lines must be positive")
	}
	d, err := tx.device(ctx, device, true)
	if err != nil {
		return LogRequest{}, err
	}
	if d.Status != DeviceActive {
		return LogRequest{}, fmt.Errorf("log request for %s: %w", device, errdefs.ErrDecommissioned)
	}
	l := LogRequest{ID: NewID("log"), Device: device, DeviceID: d.ID, RequestedBy: actor, Since: since.UTC().Truncate(time.Millisecond),
		MaxLines: maxLines, State: LogPending, CreatedAt: tx.Now()}
	if _, err := tx.Exec(ctx, "INSERT INTO log_requests ("+logColumns+") VALUES (?, ?, ?, ?, ?, ?, ?, '', 0, ?, 0)",
		l.ID, device, d.ID, actor, ms(l.Since), maxLines, LogPending, ms(l.CreatedAt)); err != nil {
		return LogRequest{}, fmt.Errorf("create log request: %w", err)
	}
	if _, err := tx.AppendAudit(ctx, Event{Actor: actor, Type: "device.log_request", Subject: device,
		Data: map[string]any{"request_id": l.ID, "max_lines": maxLines, "since": ms(l.Since)}}); err != nil {
		return LogRequest{}, err
	}
	return l, nil
}

// LogRequest returns request id without its bundle.
func (db *DB) LogRequest(ctx context.Context, id string) (LogRequest, error) {
	l, err := scanLog(db.reader().QueryRow(ctx, "SELECT "+logColumns+" FROM log_requests WHERE id = ?", id))
	if errors.Is(err, errdefs.ErrNotFound) {
		return LogRequest{}, logNotFound(id)
	}
	return l, err
}

// LogBundle returns the gzip bundle of a completed request
// (errdefs.ErrNotFound if unknown, errdefs.ErrConflict if not completed).
func (db *DB) LogBundle(ctx context.Context, id string) ([]byte, error) {
	var state string
	var b []byte
	err := db.reader().QueryRow(ctx, "SELECT state, bundle FROM log_requests WHERE id = ?", id).Scan(&state, &b)
	if errors.Is(err, errdefs.ErrNotFound) {
		return nil, logNotFound(id)
	}
	if err != nil {
		return nil, fmt.Errorf("read log bundle: %w", err)
	}
	if state != LogCompleted {
		return nil, errdefs.Conflict(fmt.Sprintf("log request %q is %s, no bundle", truncate(id), state))
	}
	return b, nil
}

// PendingLog is a log request waiting for its device (field for field the
// shape deviceapi uses, so values convert directly).
type PendingLog struct {
	ID       string
	Device   string
	Since    time.Time
	MaxLines int
}

// PendingLogRequests returns up to limit pending requests of every device,
// oldest first (the device API polls this and hands each to its device's
// next heartbeat).
func (db *DB) PendingLogRequests(ctx context.Context, limit int) ([]PendingLog, error) {
	if limit <= 0 {
		limit = 1000
	}
	var out []PendingLog
	err := db.reader().scanAll(ctx, func(r *sql.Rows) error {
		var p PendingLog
		var since int64
		err := r.Scan(&p.ID, &p.Device, &since, &p.MaxLines)
		p.Since = fromMS(since)
		out = append(out, p)
		return err
	}, "SELECT id, device_name, since_at, max_lines FROM log_requests WHERE state = ? ORDER BY created_at, id LIMIT ?", LogPending, limit)
	if err != nil {
		return nil, fmt.Errorf("pending log requests: %w", err)
	}
	return out, nil
}

// lockPendingLog locks request id for device and checks it is pending.
func (tx *Tx) lockPendingLog(ctx context.Context, device, id string) (LogRequest, error) {
	l, err := scanLog(tx.QueryRow(ctx, "SELECT "+logColumns+" FROM log_requests WHERE id = ?"+tx.ForUpdate(), id))
	if errors.Is(err, errdefs.ErrNotFound) || (err == nil && l.Device != device) {
		return LogRequest{}, logNotFound(id) // another device's request does not exist for this one
	}
	if err != nil {
		return LogRequest{}, fmt.Errorf("read log request: %w", err)
	}
	if l.State != LogPending {
		return LogRequest{}, errdefs.Conflict(fmt.Sprintf("log request %q is already %s", truncate(id), l.State))
	}
	return l, nil
}

// CompleteLogRequest stores the gzip bundle device uploaded for request id,
// in its own transaction, and appends "device.logs_upload". The request
// must be device's (else errdefs.ErrNotFound) and pending (else
// errdefs.ErrConflict); the bundle at most MaxLogBundle bytes.
func (db *DB) CompleteLogRequest(ctx context.Context, device, id string, gz []byte) error {
	if len(gz) > MaxLogBundle {
		return errdefs.Invalid(fmt.Sprintf("log bundle too large (max %d bytes)", MaxLogBundle))
	}
	if gz == nil {
		gz = []byte{}
	}
	return db.Tx(ctx, func(tx *Tx) error {
		if _, err := tx.lockPendingLog(ctx, device, id); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, "UPDATE log_requests SET state = ?, bundle = ?, bundle_size = ?, completed_at = ? WHERE id = ?",
			LogCompleted, gz, len(gz), ms(tx.Now()), id); err != nil {
			return fmt.Errorf("store log bundle: %w", err)
		}
		_, err := tx.AppendAudit(ctx, Event{Actor: DeviceActor(device), Type: "device.logs_upload", Subject: device,
			Data: map[string]any{"request_id": id, "size": len(gz)}})
		return err
	})
}

// FailLogRequest marks device's pending request id failed with detail
// (bounded to 1 KiB) and appends "device.logs_failed".
func (db *DB) FailLogRequest(ctx context.Context, device, id, detail string) error {
	if len(detail) > 1024 {
		detail = detail[:1024]
	}
	return db.Tx(ctx, func(tx *Tx) error {
		if _, err := tx.lockPendingLog(ctx, device, id); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, "UPDATE log_requests SET state = ?, detail = ?, completed_at = ? WHERE id = ?",
			LogFailed, detail, ms(tx.Now()), id); err != nil {
			return fmt.Errorf("fail log request: %w", err)
		}
		_, err := tx.AppendAudit(ctx, Event{Actor: DeviceActor(device), Type: "device.logs_failed", Subject: device,
			Data: map[string]any{"request_id": id, "detail": detail}})
		return err
	})
}

// ListLogRequests returns one page of device's requests, newest first, and
// the total.
func (db *DB) ListLogRequests(ctx context.Context, device string, p Page) (items []LogRequest, total int, err error) {
	return listPage(ctx, db, "log requests", logColumns, "log_requests WHERE device_name = ?", "created_at DESC, id", []any{device}, p, scanLog)
}
