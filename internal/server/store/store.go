// Package store is the control plane's only package that speaks SQL. It owns
// the connection pools, the embedded migrations, the transaction helper and
// the core domains (devices, enrollment tokens, users, API keys, sessions,
// log requests, audit log). Domain engineers add store/<domain>.go files that
// use the same helpers; everything else in internal/server imports this
// package through small consumer-side interfaces. Tests anywhere run against
// both engines with package storetest.
//
// Two engines, one SQL text: SQLite (modernc.org/sqlite, embedded default)
// and PostgreSQL (pgx stdlib, for several replicas). Queries are written once
// with '?' placeholders; Tx rebinds them to $n on PostgreSQL. Times are
// BIGINT unix milliseconds, ids are TEXT generated in Go (NewID), JSON is
// TEXT, secrets are stored only as HashSecret hashes.
//
// Conventions for methods:
//   - Changes are methods on *Tx and append their own audit event (SPEC §10)
//     in the same transaction; the caller passes the actor ("user:<name>",
//     "apikey:<id>", "device:<name>", "system"). Compose several changes with
//     db.Tx(ctx, func(tx *store.Tx) error { … }).
//   - Reads are methods on *DB (one statement on the read pool, or a
//     read-only snapshot when a list and its total must agree). Inside a
//     write transaction use the *Tx variant (tx.Device locks the row).
//   - A few hot or self-contained writes are *DB methods with their own
//     transaction: TouchDevices, RegisterDevice, CompleteLogRequest,
//     FailLogRequest, TouchAPIKey, SetHeartbeatInterval,
//     DeleteExpiredSessions, SetInstalled.
//   - Errors carry errdefs kinds: ErrNotFound, ErrConflict (unique
//     violations), ErrInvalid (bad input), ErrUnauthenticated (unusable
//     token/key/session), ErrDecommissioned, ErrPermission. Messages built
//     with errdefs.NotFound/Conflict/Invalid are safe to show clients.
//   - Lists take a Page (limit clamped to 1..200) and return items, total.
//
// Domain authors: lock rows you will change with tx.ForUpdate(), take row
// locks before tx.AppendAudit (it locks the chain head), and never call
// db.Tx or db.Read from inside a transaction function (SQLite has one write
// connection; the nested call would wait for itself).
//
// A *DB is safe for concurrent use. A *Tx is not: it belongs to the function
// it was passed to.
package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib" // registers driver "pgx"
	_ "modernc.org/sqlite"             // registers driver "sqlite"
)

// Dialect names the SQL engine behind a DB.
type Dialect string

const (
	SQLite   Dialect = "sqlite"
	Postgres Dialect = "postgres"
)

func (d Dialect) String() string { return string(d) }

// Options configure Open.
type Options struct {
	// DataDir holds meshanics.db when DSN is empty. Created if missing.
	DataDir string
	// DSN selects the engine: "" = SQLite in DataDir, "postgres://…" or
	// "postgresql://…" = PostgreSQL.
	DSN string
	// Logger receives store diagnostics (never secrets). nil = discard.
	Logger *slog.Logger
	// Now is the clock for record timestamps and audit times. nil = time.Now.
	Now func() time.Time
	// MaxConns bounds the read pool (SQLite) or the whole pool (PostgreSQL).
	// 0 = a default suited to the machine.
	MaxConns int
}

// DB is an open store. Safe for concurrent use.
type DB struct {
	dialect Dialect
	// w runs write transactions. On SQLite it has exactly one connection
	// whose transactions begin IMMEDIATE, so writers queue in database/sql
	// instead of deadlocking on lock upgrades. On PostgreSQL w == r.
	w *sql.DB
	// r runs reads. On SQLite a separate pool of query-only connections
	// (WAL lets them read while the writer writes).
	r    *sql.DB
	path string // SQLite database file ("" on PostgreSQL)
	log  *slog.Logger
	now  func() time.Time
}

// Open connects to the engine named by opts, applies pending migrations and
// returns the store.
func Open(ctx context.Context, opts Options) (*DB, error) {
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	db := &DB{log: log.With("component", "store"), now: opts.Now}
	if db.now == nil {
		db.now = time.Now
	}
	var err error
	switch {
	case opts.DSN == "":
		err = db.openSQLite(opts)
	case strings.HasPrefix(opts.DSN, "postgres://"), strings.HasPrefix(opts.DSN, "postgresql://"):
		err = db.openPostgres(opts)
	default:
		return nil, fmt.Errorf("open store: unsupported database DSN (want empty for SQLite or postgres://…)")
	}
	if err != nil {
		return nil, err
	}
	if err := db.ping(ctx); err != nil {
		db.Close()
		return nil, err
	}
	if db.path != "" {
		// The files hold password and secret hashes: owner only, even in
		// a data dir that is not (WAL files created later copy the mode).
		for _, p := range []string{db.path, db.path + "-wal", db.path + "-shm"} {
			if err := os.Chmod(p, 0o600); err != nil && !errors.Is(err, fs.ErrNotExist) {
				db.Close()
				return nil, fmt.Errorf("open store: %w", err)
			}
		}
	}
	if err := db.migrate(ctx); err != nil {
		db.Close()
		return nil, err
	}
	return db, nil
}

func (db *DB) openSQLite(opts Options) error {
	if opts.DataDir == "" {
		return errors.New("open store: data dir is required for SQLite")
	}
	if err := os.MkdirAll(opts.DataDir, 0o700); err != nil {
		return fmt.Errorf("open store: %w", err)
	}
	path, err := filepath.Abs(filepath.Join(opts.DataDir, "meshanics.db"))
	if err != nil {
		return fmt.Errorf("open store: %w", err)
	}
	// synchronous=NORMAL (the WAL recommendation): a process crash loses
	// nothing; an OS crash or power loss may roll back the last commits,
	// whole transactions only, so the audit chain and every invariant stay
	// intact. FULL measured 4× slower per enrollment (an fsync per commit
	// on the single writer), which would cap enrollment near the SPEC §12
	// target of 200 devices/s. A lost commit is recoverable: an unrecorded
	// certificate is unknown to the device API (the device re-enrolls), a
	// lost decommission shows as still active and is repeated.
	base := "file:" + (&url.URL{Path: path}).EscapedPath() + "?" +
		"_pragma=busy_timeout(10000)&_pragma=foreign_keys(1)&_pragma=journal_mode(WAL)&_pragma=synchronous(NORMAL)"
	w, err := sql.Open("sqlite", base+"&_txlock=immediate")
	if err != nil {
		return fmt.Errorf("open store: %w", err)
	}
	w.SetMaxOpenConns(1)
	w.SetMaxIdleConns(1)
	w.SetConnMaxLifetime(0)
	w.SetConnMaxIdleTime(0)
	r, err := sql.Open("sqlite", base+"&_pragma=query_only(1)")
	if err != nil {
		w.Close()
		return fmt.Errorf("open store: %w", err)
	}
	n := opts.MaxConns
	if n <= 0 {
		n = max(4, runtime.GOMAXPROCS(0))
	}
	r.SetMaxOpenConns(n)
	r.SetMaxIdleConns(n)
	db.dialect, db.w, db.r, db.path = SQLite, w, r, path
	db.log.Info("store opened", "engine", "sqlite", "path", path)
	return nil
}

func (db *DB) openPostgres(opts Options) error {
	p, err := sql.Open("pgx", opts.DSN)
	if err != nil {
		return fmt.Errorf("open store: %w", err)
	}
	n := opts.MaxConns
	if n <= 0 {
		n = 4 * max(4, runtime.GOMAXPROCS(0))
	}
	p.SetMaxOpenConns(n)
	p.SetMaxIdleConns(n)
	p.SetConnMaxIdleTime(5 * time.Minute)
	db.dialect, db.w, db.r = Postgres, p, p
	db.log.Info("store opened", "engine", "postgres")
	return nil
}

func (db *DB) ping(ctx context.Context) error {
	if err := db.w.PingContext(ctx); err != nil {
		return fmt.Errorf("connect to database: %w", err)
	}
	if db.r != db.w {
		if err := db.r.PingContext(ctx); err != nil {
			return fmt.Errorf("connect to database: %w", err)
		}
	}
	return nil
}

// Dialect reports the engine.
func (db *DB) Dialect() Dialect { return db.dialect }

// Now returns the store clock's current time, truncated to the millisecond
// precision the database keeps.
func (db *DB) Now() time.Time { return db.now().Truncate(time.Millisecond) }

// Ping checks that the database answers (for /readyz).
func (db *DB) Ping(ctx context.Context) error { return db.ping(ctx) }

// Close releases the pools.
func (db *DB) Close() error {
	var errs []error
	if db.r != nil && db.r != db.w {
		errs = append(errs, db.r.Close())
	}
	if db.w != nil {
		errs = append(errs, db.w.Close())
	}
	return errors.Join(errs...)
}
