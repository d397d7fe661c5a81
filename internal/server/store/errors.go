package store

import (
	"database/sql"
	"errors"

	"github.com/jackc/pgx/v5/pgconn"
	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"

	"github.com/meshanics/meshanics/internal/errdefs"
)

// dbError keeps the engine's error (for logs) and adds the errdefs kind (for
// errors.Is at the API edges). Its text is internal: domain methods that want
// a client-facing message wrap with errdefs.Conflict / errdefs.NotFound.
type dbError struct {
	kind error
	err  error
}

func (e *dbError) Error() string   { return e.kind.Error() + ": " + e.err.Error() }
func (e *dbError) Unwrap() []error { return []error{e.kind, e.err} }

// mapErr is the one place engine errors become error kinds:
// sql.ErrNoRows → errdefs.ErrNotFound, unique/primary-key and foreign-key
// violations → errdefs.ErrConflict. Other errors pass through unchanged.
func mapErr(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, errdefs.ErrNotFound), errors.Is(err, errdefs.ErrConflict):
		return err // already mapped
	case errors.Is(err, sql.ErrNoRows):
		return &dbError{errdefs.ErrNotFound, err}
	case isConstraint(err):
		return &dbError{errdefs.ErrConflict, err}
	}
	return err
}

func isConstraint(err error) bool {
	var se *sqlite.Error
	if errors.As(err, &se) {
		switch se.Code() {
		case sqlite3.SQLITE_CONSTRAINT_UNIQUE, sqlite3.SQLITE_CONSTRAINT_PRIMARYKEY, sqlite3.SQLITE_CONSTRAINT_FOREIGNKEY:
			return true
		}
		return false
	}
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		return pe.Code == "23505" || pe.Code == "23503" // unique_violation, foreign_key_violation
	}
	return false
}

// isUnique reports a unique or primary-key violation (not a foreign key).
func isUnique(err error) bool {
	var se *sqlite.Error
	if errors.As(err, &se) {
		return se.Code() == sqlite3.SQLITE_CONSTRAINT_UNIQUE || se.Code() == sqlite3.SQLITE_CONSTRAINT_PRIMARYKEY
	}
	var pe *pgconn.PgError
	return errors.As(err, &pe) && pe.Code == "23505"
}

// isRetryable reports a transient conflict after which the whole
// transaction may simply run again.
func isRetryable(err error) bool {
	var se *sqlite.Error
	if errors.As(err, &se) {
		c := se.Code() & 0xff
		return c == sqlite3.SQLITE_BUSY || c == sqlite3.SQLITE_LOCKED
	}
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		return pe.Code == "40001" || pe.Code == "40P01" // serialization_failure, deadlock_detected
	}
	return false
}
