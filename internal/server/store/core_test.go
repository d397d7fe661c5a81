package store_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/meshanics/meshanics/internal/errdefs"
	"github.com/meshanics/meshanics/internal/server/store"
	"github.com/meshanics/meshanics/internal/server/store/storetest"
)

var forEachEngine = storetest.ForEachEngine

func TestOpenMigratesOnceAndReopens(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(t.TempDir(), "data dir")
	ctx := context.Background()
	for i := 0; i < 2; i++ {
		db, err := store.Open(ctx, store.Options{DataDir: dir})
		if err != nil {
			t.Fatalf("Open #%d: %v", i+1, err)
		}
		v, err := db.SchemaVersion(ctx)
		if err != nil || v < 1 {
			t.Errorf("SchemaVersion = %d, %v; want ≥ 1", v, err)
		}
		if db.Dialect() != store.SQLite {
			t.Errorf("Dialect = %v, want sqlite", db.Dialect())
		}
		db.Close()
	}
	for _, f := range []string{"meshanics.db", "meshanics.db-wal", "meshanics.db-shm"} {
		fi, err := os.Stat(filepath.Join(dir, f))
		if errors.Is(err, os.ErrNotExist) && f != "meshanics.db" {
			continue
		}
		if err != nil {
			t.Fatalf("database file: %v", err)
		}
		if m := fi.Mode().Perm(); m != 0o600 {
			t.Errorf("%s mode = %v, want 0600", f, m)
		}
	}
}

func TestOpenRejectsUnknownDSN(t *testing.T) {
	t.Parallel()
	_, err := store.Open(context.Background(), store.Options{DSN: "mysql://x"})
	if err == nil {
		t.Fatal("Open(mysql://) succeeded, want error")
	}
}

func TestConcurrentReplicasMigrateOnce(t *testing.T) {
	t.Parallel()
	dsn := storetest.PostgresDatabase(t)
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for i := 0; i < 4; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			db, err := store.Open(context.Background(), store.Options{DSN: dsn})
			if err == nil {
				db.Close()
			}
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Errorf("concurrent Open: %v", err)
		}
	}
}

func TestTxRollsBackOnError(t *testing.T) {
	t.Parallel()
	forEachEngine(t, func(t *testing.T, db *store.DB) {
		ctx := context.Background()
		boom := errors.New("boom")
		err := db.Tx(ctx, func(tx *store.Tx) error {
			if _, err := tx.AppendAudit(ctx, store.Event{Actor: store.ActorSystem, Type: "test.rollback"}); err != nil {
				return err
			}
			return boom
		})
		if !errors.Is(err, boom) {
			t.Fatalf("Tx = %v, want boom", err)
		}
		seq, _, err := db.AuditHead(ctx)
		if err != nil || seq != 0 {
			t.Errorf("AuditHead after rollback = %d, %v; want 0", seq, err)
		}
	})
}

func TestErrorMapping(t *testing.T) {
	t.Parallel()
	forEachEngine(t, func(t *testing.T, db *store.DB) {
		ctx := context.Background()
		err := db.Tx(ctx, func(tx *store.Tx) error {
			_, err := tx.Exec(ctx, "INSERT INTO users (name, role, password_hash, created_at, updated_at) VALUES (?, ?, ?, ?, ?)", "a", "admin", "", 1, 1)
			if err != nil {
				return err
			}
			_, err = tx.Exec(ctx, "INSERT INTO users (name, role, password_hash, created_at, updated_at) VALUES (?, ?, ?, ?, ?)", "a", "admin", "", 1, 1)
			return err
		})
		if !errors.Is(err, errdefs.ErrConflict) {
			t.Errorf("duplicate insert = %v, want ErrConflict", err)
		}
		err = db.Read(ctx, func(tx *store.Tx) error {
			var n string
			return tx.QueryRow(ctx, "SELECT name FROM users WHERE name = ?", "nobody").Scan(&n)
		})
		if !errors.Is(err, errdefs.ErrNotFound) {
			t.Errorf("missing row = %v, want ErrNotFound", err)
		}
	})
}

func TestReadRejectsWrites(t *testing.T) {
	t.Parallel()
	forEachEngine(t, func(t *testing.T, db *store.DB) {
		ctx := context.Background()
		err := db.Read(ctx, func(tx *store.Tx) error {
			_, err := tx.Exec(ctx, "DELETE FROM users")
			return err
		})
		if err == nil {
			t.Error("write in Read succeeded, want error")
		}
	})
}

// Many goroutines each run a read-modify-write transaction on one counter:
// no deadlock, no lost update.
func TestConcurrentWriteTransactions(t *testing.T) {
	t.Parallel()
	forEachEngine(t, func(t *testing.T, db *store.DB) {
		ctx := context.Background()
		const n = 16
		var wg sync.WaitGroup
		errs := make(chan error, n)
		for i := 0; i < n; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				errs <- db.Tx(ctx, func(tx *store.Tx) error {
					_, err := tx.AppendAudit(ctx, store.Event{Actor: store.ActorSystem, Type: "test.concurrent", Data: map[string]int{"i": 1}})
					return err
				})
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			if err != nil {
				t.Fatalf("concurrent Tx: %v", err)
			}
		}
		v, err := db.VerifyAudit(ctx)
		if err != nil || !v.OK || v.Count != n {
			t.Errorf("VerifyAudit = %+v, %v; want OK with %d events", v, err, n)
		}
	})
}

func TestPlaceholders(t *testing.T) {
	t.Parallel()
	for n, want := range map[int]string{0: "", 1: "?", 3: "?, ?, ?"} {
		if got := store.Placeholders(n); got != want {
			t.Errorf("Placeholders(%d) = %q, want %q", n, got, want)
		}
	}
}

func TestNewIDUnique(t *testing.T) {
	t.Parallel()
	seen := map[string]bool{}
	for i := 0; i < 1000; i++ {
		id := store.NewID("x")
		if seen[id] || len(id) != 22 {
			t.Fatalf("NewID = %q (dup=%v), want unique x_ + 20 chars", id, seen[id])
		}
		seen[id] = true
	}
	_ = fmt.Sprint()
}

// Read-modify-write under tx.Lock from several replicas: no lost update.
func TestLockSerialisesAcrossReplicas(t *testing.T) {
	t.Parallel()
	check := func(t *testing.T, dbs []*store.DB) {
		ctx := context.Background()
		mustTx(t, dbs[0], func(tx *store.Tx) error {
			_, err := tx.Exec(ctx, "INSERT INTO users (name, role, password_hash, created_at, updated_at) VALUES ('counter', 'x', '', 0, 0)")
			return err
		})
		const per = 10
		var wg sync.WaitGroup
		for _, db := range dbs {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := 0; i < per; i++ {
					err := db.Tx(ctx, func(tx *store.Tx) error {
						if err := tx.Lock(ctx, "counter"); err != nil {
							return err
						}
						var n int64
						if err := tx.QueryRow(ctx, "SELECT updated_at FROM users WHERE name = 'counter'").Scan(&n); err != nil {
							return err
						}
						_, err := tx.Exec(ctx, "UPDATE users SET updated_at = ? WHERE name = 'counter'", n+1)
						return err
					})
					if err != nil {
						t.Errorf("locked increment: %v", err)
						return
					}
				}
			}()
		}
		wg.Wait()
		var n int64
		err := dbs[0].Read(ctx, func(tx *store.Tx) error {
			return tx.QueryRow(ctx, "SELECT updated_at FROM users WHERE name = 'counter'").Scan(&n)
		})
		if err != nil || n != int64(per*len(dbs)) {
			t.Errorf("counter = %d, %v; want %d (lost update)", n, err, per*len(dbs))
		}
	}
	t.Run("sqlite", func(t *testing.T) {
		db := storetest.SQLite(t)
		check(t, []*store.DB{db, db, db})
	})
	t.Run("postgres", func(t *testing.T) {
		dsn := storetest.PostgresDatabase(t)
		check(t, []*store.DB{storetest.OpenDSN(t, dsn, storetest.Options{}), storetest.OpenDSN(t, dsn, storetest.Options{}), storetest.OpenDSN(t, dsn, storetest.Options{})})
	})
}

func TestOpenRefusesNewerSchema(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	ctx := context.Background()
	db, err := store.Open(ctx, store.Options{DataDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	mustTx(t, db, func(tx *store.Tx) error {
		_, err := tx.Exec(ctx, "INSERT INTO schema_migrations (version, name, applied_at) VALUES (9999, '9999_future.sql', 0)")
		return err
	})
	db.Close()
	if db, err := store.Open(ctx, store.Options{DataDir: dir}); err == nil {
		db.Close()
		t.Fatal("Open of a database from a newer binary succeeded, want error")
	}
}

func TestTxHelpers(t *testing.T) {
	t.Parallel()
	forEachEngine(t, func(t *testing.T, db *store.DB) {
		ctx := context.Background()
		if err := db.Ping(ctx); err != nil {
			t.Fatalf("Ping: %v", err)
		}
		mustEnroll(t, db, "b-dev", "kb")
		mustEnroll(t, db, "a-dev", "ka")
		mustTx(t, db, func(tx *store.Tx) error {
			wantSuffix := map[store.Dialect]string{store.SQLite: "", store.Postgres: " FOR UPDATE"}[tx.Dialect()]
			if got := tx.ForUpdate(); got != wantSuffix {
				t.Errorf("ForUpdate on %s = %q, want %q", tx.Dialect(), got, wantSuffix)
			}
			if tx.Dialect() != db.Dialect() || tx.Now().IsZero() {
				t.Errorf("Dialect/Now = %v/%v", tx.Dialect(), tx.Now())
			}
			d, err := tx.Device(ctx, "a-dev")
			if err != nil || d.Name != "a-dev" {
				t.Errorf("tx.Device = %+v, %v", d, err)
			}
			if _, err := tx.Device(ctx, "zzz"); !errors.Is(err, errdefs.ErrNotFound) {
				t.Errorf("tx.Device(unknown) = %v, want ErrNotFound", err)
			}
			rows, err := tx.Query(ctx, "SELECT name FROM devices WHERE name IN ("+store.Placeholders(2)+") ORDER BY name", "a-dev", "b-dev")
			if err != nil {
				return err
			}
			defer rows.Close()
			var names []string
			for rows.Next() {
				var n string
				if err := rows.Scan(&n); err != nil {
					return err
				}
				names = append(names, n)
			}
			if fmt.Sprint(names) != "[a-dev b-dev]" {
				t.Errorf("Query = %v, want [a-dev b-dev]", names)
			}
			return rows.Err()
		})
	})
}

// Two transactions lock two rows in opposite order; PostgreSQL aborts one
// with a deadlock, and Tx runs it again, so both succeed.
func TestTxRetriesDeadlock(t *testing.T) {
	t.Parallel()
	db := storetest.Postgres(t)
	ctx := context.Background()
	mustTx(t, db, func(tx *store.Tx) error {
		for _, n := range []string{"a", "b"} {
			if _, err := tx.Exec(ctx, "INSERT INTO users (name, role, password_hash, created_at, updated_at) VALUES (?, 'x', '', 0, 0)", n); err != nil {
				return err
			}
		}
		return nil
	})
	var bothLocked sync.WaitGroup
	bothLocked.Add(2)
	var once [2]sync.Once
	attempts := [2]int{}
	run := func(i int, first, second string) error {
		return db.Tx(ctx, func(tx *store.Tx) error {
			attempts[i]++
			if _, err := tx.Exec(ctx, "UPDATE users SET updated_at = updated_at + 1 WHERE name = ?", first); err != nil {
				return err
			}
			once[i].Do(func() { bothLocked.Done(); bothLocked.Wait() }) // first attempt only
			_, err := tx.Exec(ctx, "UPDATE users SET updated_at = updated_at + 1 WHERE name = ?", second)
			return err
		})
	}
	errs := make(chan error, 2)
	go func() { errs <- run(0, "a", "b") }()
	go func() { errs <- run(1, "b", "a") }()
	for i := 0; i < 2; i++ {
		if err := <-errs; err != nil {
			t.Fatalf("Tx: %v (want the deadlock victim retried)", err)
		}
	}
	if attempts[0]+attempts[1] < 3 {
		t.Errorf("attempts = %v, want a retry", attempts)
	}
	var a, b int64
	_ = db.Read(ctx, func(tx *store.Tx) error {
		_ = tx.QueryRow(ctx, "SELECT updated_at FROM users WHERE name = 'a'").Scan(&a)
		return tx.QueryRow(ctx, "SELECT updated_at FROM users WHERE name = 'b'").Scan(&b)
	})
	if a != 2 || b != 2 {
		t.Errorf("counters = %d, %d; want 2, 2", a, b)
	}
}

// Replicas race to spend a one-use token: exactly one wins.
func TestTokenSpendRaceAcrossReplicas(t *testing.T) {
	t.Parallel()
	dsn := storetest.PostgresDatabase(t)
	dbs := []*store.DB{storetest.OpenDSN(t, dsn, storetest.Options{}), storetest.OpenDSN(t, dsn, storetest.Options{})}
	ctx := context.Background()
	now := time.Now()
	mustTx(t, dbs[0], func(tx *store.Tx) error {
		_, err := tx.CreateEnrollmentToken(ctx, "user:a", store.NewEnrollmentToken{Hash: store.HashSecret("mst_r"), ExpiresAt: now.Add(time.Hour), Uses: 1})
		return err
	})
	var wg sync.WaitGroup
	var mu sync.Mutex
	wins := 0
	for i := 0; i < 6; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			err := dbs[i%2].Tx(ctx, func(tx *store.Tx) error {
				_, err := tx.SpendEnrollmentToken(ctx, store.HashSecret("mst_r"), now)
				return err
			})
			mu.Lock()
			defer mu.Unlock()
			if err == nil {
				wins++
			} else if !errors.Is(err, errdefs.ErrUnauthenticated) {
				t.Errorf("spend: %v", err)
			}
		}()
	}
	wg.Wait()
	if wins != 1 {
		t.Errorf("%d spends won, want exactly 1", wins)
	}
}
