package store

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"
	"time"
)

// maxAttempts bounds how often Tx runs fn when the engine reports a
// transient conflict (SQLITE_BUSY, PostgreSQL serialization failure or
// deadlock).
const maxAttempts = 6

// querier is what *sql.Tx and *sql.DB have in common.
type querier interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

// Tx is one unit of work handed to the function given to DB.Tx or DB.Read.
// Domain methods hang off *Tx so that callers can compose several changes and
// their audit events into one transaction. Not safe for concurrent use.
type Tx struct {
	db       *DB
	q        querier
	readOnly bool
	now      time.Time
}

// Tx runs fn in a read-write transaction and commits it if fn returns nil.
//
// On a transient engine conflict the whole transaction is rolled back and fn
// runs again (up to a small bound), so fn must not have side effects outside
// the transaction, or they must be idempotent. Never call db.Tx or db.Read
// from inside fn: on SQLite there is one write connection and the nested call
// would wait for itself.
func (db *DB) Tx(ctx context.Context, fn func(tx *Tx) error) error {
	var err error
	for attempt := 0; attempt < maxAttempts; attempt++ {
		if attempt > 0 {
			if werr := backoff(ctx, attempt); werr != nil {
				return errors.Join(err, werr)
			}
			db.log.Debug("retrying transaction", "attempt", attempt+1, "err", err)
		}
		err = db.runTx(ctx, db.w, &sql.TxOptions{}, false, fn)
		if err == nil || !isRetryable(err) {
			return err
		}
	}
	return err
}

// Read runs fn in a read-only transaction: every query in fn sees the same
// snapshot (use it when a list and its total must agree). Writes fail.
func (db *DB) Read(ctx context.Context, fn func(tx *Tx) error) error {
	opts := &sql.TxOptions{ReadOnly: true}
	if db.dialect == Postgres {
		opts.Isolation = sql.LevelRepeatableRead
	}
	return db.runTx(ctx, db.r, opts, true, fn)
}

// reader returns a Tx over the read pool without a transaction, for single
// statement reads on hot paths (no BEGIN/COMMIT round trips).
func (db *DB) reader() *Tx {
	return &Tx{db: db, q: db.r, readOnly: true, now: db.Now()}
}

func (db *DB) runTx(ctx context.Context, pool *sql.DB, opts *sql.TxOptions, readOnly bool, fn func(tx *Tx) error) (err error) {
	stx, err := pool.BeginTx(ctx, opts)
	if err != nil {
		return fmt.Errorf("begin transaction: %w", mapErr(err))
	}
	defer func() {
		if p := recover(); p != nil {
			_ = stx.Rollback()
			panic(p)
		}
		if err != nil {
			_ = stx.Rollback()
		}
	}()
	if err := fn(&Tx{db: db, q: stx, readOnly: readOnly, now: db.Now()}); err != nil {
		return err
	}
	if err := stx.Commit(); err != nil {
		return fmt.Errorf("commit: %w", mapErr(err))
	}
	return nil
}

func backoff(ctx context.Context, attempt int) error {
	d := time.Duration(1<<attempt) * 5 * time.Millisecond
	d += rand.N(d)
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// Dialect reports the engine the transaction runs on.
func (tx *Tx) Dialect() Dialect { return tx.db.dialect }

// Now is the store clock's time at the start of this transaction attempt
// (millisecond precision): every timestamp one transaction writes agrees.
func (tx *Tx) Now() time.Time { return tx.now }

// ForUpdate returns the row-locking suffix for a SELECT that reads a row the
// transaction will then change: " FOR UPDATE" on PostgreSQL, "" on SQLite
// (where the IMMEDIATE write transaction already serialises writers).
func (tx *Tx) ForUpdate() string {
	if tx.db.dialect == Postgres && !tx.readOnly {
		return " FOR UPDATE"
	}
	return ""
}

// Exec runs a statement written with '?' placeholders. Errors are mapped
// (unique violation → errdefs.ErrConflict, …).
func (tx *Tx) Exec(ctx context.Context, query string, args ...any) (sql.Result, error) {
	if tx.readOnly {
		return nil, errors.New("store: write in a read-only transaction")
	}
	res, err := tx.q.ExecContext(ctx, tx.rebind(query), args...)
	return res, mapErr(err)
}

// Query runs a query written with '?' placeholders. Callers check
// rows.Err through mapErr-aware helpers (see scanAll) or errors.Is.
func (tx *Tx) Query(ctx context.Context, query string, args ...any) (*sql.Rows, error) {
	rows, err := tx.q.QueryContext(ctx, tx.rebind(query), args...)
	return rows, mapErr(err)
}

// Row is the result of QueryRow; Scan maps sql.ErrNoRows to
// errdefs.ErrNotFound.
type Row struct{ r *sql.Row }

// Scan copies the row's columns into dest.
func (r Row) Scan(dest ...any) error { return mapErr(r.r.Scan(dest...)) }

// QueryRow runs a query expected to return at most one row.
func (tx *Tx) QueryRow(ctx context.Context, query string, args ...any) Row {
	return Row{tx.q.QueryRowContext(ctx, tx.rebind(query), args...)}
}

// rebind turns '?' placeholders into $1, $2, … on PostgreSQL. Question marks
// inside single-quoted literals are left alone.
func (tx *Tx) rebind(query string) string {
	if tx.db.dialect != Postgres {
		return query
	}
	return rebindDollar(query)
}

func rebindDollar(query string) string {
	if !strings.Contains(query, "?") {
		return query
	}
	var b strings.Builder
	b.Grow(len(query) + 16)
	n, inQuote := 0, false
	for i := 0; i < len(query); i++ {
		c := query[i]
		switch {
		case c == '\'':
			inQuote = !inQuote
			b.WriteByte(c)
		case c == '?' && !inQuote:
			n++
			b.WriteByte('$')
			b.WriteString(strconv.Itoa(n))
		default:
			b.WriteByte(c)
		}
	}
	return b.String()
}

// Placeholders returns "?, ?, …" with n marks, for IN lists.
func Placeholders(n int) string {
	if n <= 0 {
		return ""
	}
	return strings.Repeat("?, ", n-1) + "?"
}

// scanAll runs query and calls scan for every row.
func (tx *Tx) scanAll(ctx context.Context, scan func(*sql.Rows) error, query string, args ...any) error {
	rows, err := tx.Query(ctx, query, args...)
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		if err := scan(rows); err != nil {
			return mapErr(err)
		}
	}
	return mapErr(rows.Err())
}

// affected returns the rows a statement changed.
func affected(res sql.Result) (int64, error) {
	n, err := res.RowsAffected()
	if err != nil {
		return 0, fmt.Errorf("rows affected: %w", err)
	}
	return n, nil
}

// Lock takes a named lock held until this transaction ends, serialising
// every transaction that takes the same name across all replicas (a
// PostgreSQL transaction-level advisory lock keyed by a hash of name). On
// SQLite it is a no-op: the IMMEDIATE write transaction already excludes
// every other writer. Use it for "read, decide, write" sequences that have
// no single row to lock (e.g. signing the next TUF metadata version).
func (tx *Tx) Lock(ctx context.Context, name string) error {
	if tx.readOnly {
		return errors.New("store: lock in a read-only transaction")
	}
	if tx.db.dialect != Postgres {
		return nil
	}
	sum := sha256.Sum256([]byte("meshanics-lock:" + name))
	key := int64(binary.BigEndian.Uint64(sum[:8]))
	if _, err := tx.q.ExecContext(ctx, "SELECT pg_advisory_xact_lock($1)", key); err != nil {
		return fmt.Errorf("lock %s: %w", name, mapErr(err))
	}
	return nil
}

// prepare prepares a statement on the transaction (write transactions only).
func (tx *Tx) prepare(ctx context.Context, query string) (*sql.Stmt, error) {
	stx, ok := tx.q.(*sql.Tx)
	if !ok || tx.readOnly {
		return nil, errors.New("store: prepare outside a write transaction")
	}
	stmt, err := stx.PrepareContext(ctx, tx.rebind(query))
	return stmt, mapErr(err)
}
