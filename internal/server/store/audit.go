package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/meshanics/meshanics/internal/auditchain"
	"github.com/meshanics/meshanics/internal/errdefs"
)

// AuditEvent is a stored audit event (SPEC §10).
type AuditEvent = auditchain.Event

// Event is what a caller records: who (Actor: "user:<name>", "apikey:<id>",
// "device:<name>" or "system"), what (Type "<family>.<action>"), on what
// (Subject, e.g. a device name or rollout id) and details (Data: any value
// that encodes to a JSON object, or a json.RawMessage). Seq, time and
// hashes are assigned by AppendAudit.
type Event struct {
	Actor   string
	Type    string
	Subject string
	Data    any
}

// Actor strings (SPEC §10).
const ActorSystem = "system"

func UserActor(name string) string   { return "user:" + name }
func APIKeyActor(id string) string   { return "apikey:" + id }
func DeviceActor(name string) string { return "device:" + name }

// AppendAudit adds e to the audit chain inside this transaction, so the
// event commits or rolls back with the change it records. It locks the
// chain head (PostgreSQL: SELECT … FOR UPDATE; SQLite: the write
// transaction), so appends from concurrent replicas are serialised; call it
// after the transaction's own row locks to keep lock order consistent.
func (tx *Tx) AppendAudit(ctx context.Context, e Event) (AuditEvent, error) {
	if e.Actor == "" || e.Type == "" {
		return AuditEvent{}, errors.New("audit event needs actor and type")
	}
	var raw json.RawMessage
	switch d := e.Data.(type) {
	case nil:
	case json.RawMessage:
		raw = d
	default:
		b, err := json.Marshal(d)
		if err != nil {
			return AuditEvent{}, fmt.Errorf("encode audit data: %w", err)
		}
		raw = b
	}
	data, err := auditchain.CanonicalData(raw)
	if err != nil {
		return AuditEvent{}, err
	}
	var head AuditEvent
	if err := tx.QueryRow(ctx, "SELECT seq, hash FROM audit_head WHERE id = 1"+tx.ForUpdate()).Scan(&head.Seq, &head.Hash); err != nil {
		return AuditEvent{}, fmt.Errorf("read audit head: %w", err)
	}
	ev := AuditEvent{
		Seq:      head.Seq + 1,
		Time:     tx.Now(),
		Actor:    e.Actor,
		Type:     e.Type,
		Subject:  e.Subject,
		Data:     data,
		PrevHash: head.Hash,
	}
	if ev.Hash, err = auditchain.Hash(ev); err != nil {
		return AuditEvent{}, err
	}
	if _, err := tx.Exec(ctx, `INSERT INTO audit_events (seq, at, actor, event_type, subject, data, prev_hash, hash)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?)`,
		ev.Seq, ms(ev.Time), ev.Actor, ev.Type, ev.Subject, string(ev.Data), ev.PrevHash, ev.Hash); err != nil {
		return AuditEvent{}, fmt.Errorf("append audit event: %w", err)
	}
	if _, err := tx.Exec(ctx, "UPDATE audit_head SET seq = ?, hash = ? WHERE id = 1", ev.Seq, ev.Hash); err != nil {
		return AuditEvent{}, fmt.Errorf("advance audit head: %w", err)
	}
	return ev, nil
}

// AuditFilter narrows ListAudit. Empty fields match everything.
type AuditFilter struct {
	Type    string
	Actor   string
	Subject string
}

func (f AuditFilter) where() (string, []any) {
	q, args := " WHERE 1=1", []any{}
	if f.Type != "" {
		q += " AND event_type = ?"
		args = append(args, f.Type)
	}
	if f.Actor != "" {
		q += " AND actor = ?"
		args = append(args, f.Actor)
	}
	if f.Subject != "" {
		q += " AND subject = ?"
		args = append(args, f.Subject)
	}
	return q, args
}

const auditColumns = "seq, at, actor, event_type, subject, data, prev_hash, hash"

func scanAudit(sc interface{ Scan(...any) error }) (AuditEvent, error) {
	var e AuditEvent
	var at int64
	var data string
	if err := sc.Scan(&e.Seq, &at, &e.Actor, &e.Type, &e.Subject, &data, &e.PrevHash, &e.Hash); err != nil {
		return AuditEvent{}, err
	}
	e.Time = fromMS(at)
	e.Data = json.RawMessage(data)
	return e, nil
}

// ListAudit returns one page of events, newest first (seq descending), and
// the number of events matching f.
func (db *DB) ListAudit(ctx context.Context, f AuditFilter, p Page) (items []AuditEvent, total int, err error) {
	where, args := f.where()
	return listPage(ctx, db, "audit events", auditColumns, "audit_events"+where, "seq DESC", args, p, scanAudit)
}

// AuditHead returns the sequence number and hash of the newest event
// (0 and auditchain.GenesisHash when the log is empty).
func (db *DB) AuditHead(ctx context.Context) (seq int64, hash string, err error) {
	err = db.reader().QueryRow(ctx, "SELECT seq, hash FROM audit_head WHERE id = 1").Scan(&seq, &hash)
	if err != nil {
		return 0, "", fmt.Errorf("read audit head: %w", err)
	}
	return seq, hash, nil
}

// exportBatch is how many events ExportAudit reads per query.
const exportBatch = 500

// ExportAudit calls fn for every event with seq > afterSeq in ascending
// order, reading in batches (no long-lived transaction), until fn returns an
// error or the events present when the call started are exhausted. A
// stopping error from fn is returned as is.
func (db *DB) ExportAudit(ctx context.Context, afterSeq int64, fn func(AuditEvent) error) error {
	end, _, err := db.AuditHead(ctx)
	if err != nil {
		return err
	}
	return db.exportRange(ctx, afterSeq, end, fn)
}

// exportRange calls fn for the events afterSeq < seq <= end, ascending.
func (db *DB) exportRange(ctx context.Context, afterSeq, end int64, fn func(AuditEvent) error) error {
	next := afterSeq
	for next < end {
		var batch []AuditEvent
		err := db.reader().scanAll(ctx, func(r *sql.Rows) error {
			e, err := scanAudit(r)
			batch = append(batch, e)
			return err
		}, "SELECT "+auditColumns+" FROM audit_events WHERE seq > ? AND seq <= ? ORDER BY seq LIMIT ?", next, end, exportBatch)
		if err != nil {
			return fmt.Errorf("export audit events: %w", err)
		}
		if len(batch) == 0 {
			return nil
		}
		for _, e := range batch {
			if err := fn(e); err != nil {
				return err
			}
		}
		next = batch[len(batch)-1].Seq
	}
	return nil
}

// AuditVerification is the result of VerifyAudit.
type AuditVerification struct {
	Count    int64  // events checked
	HeadHash string // hash of the last event checked
	OK       bool
	Problem  string // the first problem found, when !OK
}

// VerifyAudit recomputes the whole chain from genesis and compares it with
// the stored head. Any changed, removed or reordered row makes OK false.
// It fails (error) only when the database cannot be read.
func (db *DB) VerifyAudit(ctx context.Context) (AuditVerification, error) {
	// Verify up to the head as it is now; events appended meanwhile are
	// for the next run.
	seq, hash, err := db.AuditHead(ctx)
	if err != nil {
		return AuditVerification{}, err
	}
	var v auditchain.Verifier
	var problem error
	err = db.exportRange(ctx, 0, seq, func(e AuditEvent) error {
		if err := v.Add(e); err != nil {
			problem = err
			return errStopExport
		}
		return nil
	})
	if err != nil && !errors.Is(err, errStopExport) {
		return AuditVerification{}, err
	}
	res := AuditVerification{Count: v.Count(), HeadHash: v.Head(), OK: problem == nil}
	if problem != nil {
		res.Problem = problem.Error()
		return res, nil
	}
	// The head row must agree with the last event (a deleted tail or a
	// rewritten head is a change too).
	if seq != v.Count() || hash != v.Head() {
		res.OK = false
		res.Problem = fmt.Sprintf("audit head says seq %d, chain ends at seq %d", seq, v.Count())
	}
	return res, nil
}

var errStopExport = errors.New("stop export")

// AuditEventBySeq returns one event.
func (db *DB) AuditEventBySeq(ctx context.Context, seq int64) (AuditEvent, error) {
	e, err := scanAudit(db.reader().QueryRow(ctx, "SELECT "+auditColumns+" FROM audit_events WHERE seq = ?", seq))
	if errors.Is(err, errdefs.ErrNotFound) {
		return AuditEvent{}, errdefs.NotFound(fmt.Sprintf("audit event %d not found", seq))
	}
	return e, err
}
