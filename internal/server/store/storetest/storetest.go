// Package storetest opens real stores for tests: SQLite in a temporary
// directory and, when MESHANICS_TEST_POSTGRES is set, PostgreSQL in a fresh
// database created for the test and dropped at cleanup. Any package's tests
// may import it to run against both engines:
//
//	storetest.ForEachEngine(t, func(t *testing.T, db *store.DB) { … })
package storetest

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"log/slog"
	"net/url"
	"testing"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib" // driver "pgx" for the admin connection

	"github.com/meshanics/meshanics/internal/server/store"
	"github.com/meshanics/meshanics/internal/testenv"
)

// Options tune the stores a test opens.
type Options struct {
	// Now is the store clock; nil = time.Now.
	Now func() time.Time
	// Logger; nil = discard.
	Logger *slog.Logger
}

// ForEachEngine runs fn as subtests "sqlite" and "postgres", each with its
// own empty, migrated store. The postgres subtest skips (or fails under
// MESHANICS_TEST_REQUIRE_ALL=1) when no PostgreSQL is configured.
func ForEachEngine(t *testing.T, fn func(t *testing.T, db *store.DB)) {
	t.Helper()
	ForEachEngineWith(t, Options{}, fn)
}

// ForEachEngineWith is ForEachEngine with options.
func ForEachEngineWith(t *testing.T, opts Options, fn func(t *testing.T, db *store.DB)) {
	t.Helper()
	t.Run("sqlite", func(t *testing.T) { fn(t, SQLiteWith(t, opts)) })
	t.Run("postgres", func(t *testing.T) { fn(t, PostgresWith(t, opts)) })
}

// SQLite opens a store in t.TempDir(), closed at cleanup.
func SQLite(t testing.TB) *store.DB { return SQLiteWith(t, Options{}) }

// SQLiteWith is SQLite with options.
func SQLiteWith(t testing.TB, opts Options) *store.DB {
	t.Helper()
	return open(t, store.Options{DataDir: t.TempDir(), Now: opts.Now, Logger: opts.Logger})
}

// Postgres opens a store in a new database on the test PostgreSQL server,
// dropped at cleanup. It skips t when PostgreSQL is not configured.
func Postgres(t testing.TB) *store.DB { return PostgresWith(t, Options{}) }

// PostgresWith is Postgres with options.
func PostgresWith(t testing.TB, opts Options) *store.DB {
	t.Helper()
	dsn := PostgresDatabase(t)
	return open(t, store.Options{DSN: dsn, Now: opts.Now, Logger: opts.Logger})
}

// PostgresDatabase creates a fresh database on the test PostgreSQL server,
// already migrated to the current schema, and returns its DSN; the database
// is dropped at cleanup. Useful to open several stores (replicas) on one
// database. Databases are cloned from a template migrated once per schema
// version (kept on the test server), so a test does not pay for the
// migrations.
func PostgresDatabase(t testing.TB) string {
	t.Helper()
	base := testenv.PostgresDSN(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	admin, err := sql.Open("pgx", base)
	if err != nil {
		t.Fatalf("open postgres admin connection: %v", err)
	}
	defer admin.Close()
	tmpl, err := template(ctx, admin, base)
	if err != nil {
		t.Fatalf("prepare template database: %v", err)
	}
	var b [8]byte
	_, _ = rand.Read(b[:])
	name := "meshanics_t_" + hex.EncodeToString(b[:])
	if _, err := admin.ExecContext(ctx, "CREATE DATABASE "+name+" TEMPLATE "+tmpl); err != nil {
		t.Fatalf("create test database: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		admin, err := sql.Open("pgx", base)
		if err != nil {
			t.Errorf("open postgres admin connection: %v", err)
			return
		}
		defer admin.Close()
		if _, err := admin.ExecContext(ctx, "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)"); err != nil {
			t.Errorf("drop test database %s: %v", name, err)
		}
	})
	return withDatabase(base, name)
}

func withDatabase(dsn, name string) string {
	u, err := url.Parse(dsn)
	if err != nil {
		return dsn
	}
	u.Path = "/" + name
	return u.String()
}

// templateLockKey serialises template creation across test processes.
const templateLockKey = 0x6d657368746d706c

// template returns the name of a database migrated to the current schema,
// creating it under an advisory lock if no test process has yet. It is
// built under a temporary name and renamed when complete, so a crash never
// leaves a half-migrated template behind under the real name.
func template(ctx context.Context, admin *sql.DB, base string) (string, error) {
	name := "meshanics_tmpl_" + store.MigrationsDigest()[:16]
	conn, err := admin.Conn(ctx)
	if err != nil {
		return "", err
	}
	defer conn.Close()
	if _, err := conn.ExecContext(ctx, "SELECT pg_advisory_lock($1)", templateLockKey); err != nil {
		return "", err
	}
	defer conn.ExecContext(context.Background(), "SELECT pg_advisory_unlock($1)", templateLockKey)
	var n int
	if err := conn.QueryRowContext(ctx, "SELECT COUNT(*) FROM pg_database WHERE datname = $1", name).Scan(&n); err != nil {
		return "", err
	}
	if n > 0 {
		return name, nil
	}
	building := name + "_building"
	if _, err := conn.ExecContext(ctx, "DROP DATABASE IF EXISTS "+building+" WITH (FORCE)"); err != nil {
		return "", err
	}
	if _, err := conn.ExecContext(ctx, "CREATE DATABASE "+building); err != nil {
		return "", err
	}
	db, err := store.Open(ctx, store.Options{DSN: withDatabase(base, building)})
	if err != nil {
		return "", err
	}
	if err := db.Close(); err != nil {
		return "", err
	}
	if _, err := conn.ExecContext(ctx, "ALTER DATABASE "+building+" RENAME TO "+name); err != nil {
		return "", err
	}
	dropStaleTemplates(ctx, conn, name)
	return name, nil
}

// dropStaleTemplates removes templates of earlier schema versions (best
// effort: one still being cloned by an older test binary is skipped).
func dropStaleTemplates(ctx context.Context, conn *sql.Conn, keep string) {
	rows, err := conn.QueryContext(ctx, "SELECT datname FROM pg_database WHERE datname LIKE 'meshanics_tmpl_%' AND datname <> $1", keep)
	if err != nil {
		return
	}
	var stale []string
	for rows.Next() {
		var n string
		if rows.Scan(&n) == nil {
			stale = append(stale, n)
		}
	}
	rows.Close()
	_, _ = conn.ExecContext(ctx, "SET lock_timeout = '2s'")
	for _, n := range stale {
		_, _ = conn.ExecContext(ctx, `DROP DATABASE IF EXISTS "`+n+`"`)
	}
}

// OpenDSN opens another store on dsn (e.g. a second replica on the database
// from PostgresDatabase), closed at cleanup.
func OpenDSN(t testing.TB, dsn string, opts Options) *store.DB {
	t.Helper()
	return open(t, store.Options{DSN: dsn, Now: opts.Now, Logger: opts.Logger})
}

func open(t testing.TB, o store.Options) *store.DB {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	db, err := store.Open(ctx, o)
	if err != nil {
		t.Fatalf("open store: %v", err)
	}
	t.Cleanup(func() {
		if err := db.Close(); err != nil {
			t.Errorf("close store: %v", err)
		}
	})
	return db
}
