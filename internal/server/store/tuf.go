package store

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/meshanics/meshanics/internal/errdefs"
)

// TUFDoc is one signed TUF metadata document (role at version).
type TUFDoc struct {
	Role    string
	Version int64
	Body    []byte
	Expires time.Time
	Created time.Time
}

// ErrTUFStale reports that a TUF document with the same role and version
// already exists: another replica signed first. The caller reloads the
// current metadata and signs again. It deliberately does not wrap
// errdefs.ErrConflict, so it cannot be mistaken for a duplicate artifact.
var ErrTUFStale = errors.New("tuf metadata changed concurrently")

// keepTimestamps bounds the timestamp history kept in tuf_metadata (only the
// newest is ever served; a few more help debugging).
const keepTimestamps = 48

// LatestTUF returns the newest document of role, or errdefs.ErrNotFound.
func (tx *Tx) LatestTUF(ctx context.Context, role string) (TUFDoc, error) {
	return tx.scanTUF(ctx, `SELECT role, version, body, expires_at, created_at FROM tuf_metadata
		WHERE role = ? ORDER BY version DESC LIMIT 1`, role)
}

// TUFDoc returns role at version, or errdefs.ErrNotFound.
func (tx *Tx) TUFDoc(ctx context.Context, role string, version int64) (TUFDoc, error) {
	return tx.scanTUF(ctx, `SELECT role, version, body, expires_at, created_at FROM tuf_metadata
		WHERE role = ? AND version = ?`, role, version)
}

// TUFHistory returns the stored documents of role, oldest first, at most
// limit of them (the newest limit when there are more).
func (tx *Tx) TUFHistory(ctx context.Context, role string, limit int) ([]TUFDoc, error) {
	rows, err := tx.Query(ctx, `SELECT version, body, expires_at, created_at FROM tuf_metadata
		WHERE role = ? ORDER BY version DESC LIMIT ?`, role, limit)
	if err != nil {
		return nil, fmt.Errorf("tuf history %s: %w", role, err)
	}
	defer rows.Close()
	var docs []TUFDoc
	for rows.Next() {
		d := TUFDoc{Role: role}
		var body string
		var exp, created int64
		if err := rows.Scan(&d.Version, &body, &exp, &created); err != nil {
			return nil, fmt.Errorf("tuf history %s: %w", role, mapErr(err))
		}
		d.Body, d.Expires, d.Created = []byte(body), fromMS(exp), fromMS(created)
		docs = append(docs, d)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("tuf history %s: %w", role, mapErr(err))
	}
	slices.Reverse(docs)
	return docs, nil
}

func (tx *Tx) scanTUF(ctx context.Context, q string, args ...any) (TUFDoc, error) {
	var d TUFDoc
	var body string
	var exp, created int64
	if err := tx.QueryRow(ctx, q, args...).Scan(&d.Role, &d.Version, &body, &exp, &created); err != nil {
		return TUFDoc{}, fmt.Errorf("tuf %v: %w", args[0], err)
	}
	d.Body, d.Expires, d.Created = []byte(body), fromMS(exp), fromMS(created)
	return d, nil
}

// InsertTUF appends documents. A (role, version) that exists already yields
// ErrTUFStale. Old timestamps beyond the newest keepTimestamps are pruned.
func (tx *Tx) InsertTUF(ctx context.Context, docs ...TUFDoc) error {
	for _, d := range docs {
		if d.Role == "" || d.Version < 1 || len(d.Body) == 0 {
			return fmt.Errorf("insert tuf: bad document %s v%d", d.Role, d.Version)
		}
		_, err := tx.Exec(ctx, `INSERT INTO tuf_metadata (role, version, body, expires_at, created_at)
			VALUES (?, ?, ?, ?, ?)`, d.Role, d.Version, string(d.Body), ms(d.Expires), ms(tx.Now()))
		if errors.Is(err, errdefs.ErrConflict) {
			return fmt.Errorf("insert tuf %s v%d: %w", d.Role, d.Version, ErrTUFStale)
		}
		if err != nil {
			return fmt.Errorf("insert tuf %s v%d: %w", d.Role, d.Version, err)
		}
		if d.Role == "timestamp" && d.Version > keepTimestamps {
			if _, err := tx.Exec(ctx, `DELETE FROM tuf_metadata WHERE role = 'timestamp' AND version <= ?`,
				d.Version-keepTimestamps); err != nil {
				return fmt.Errorf("prune timestamps: %w", err)
			}
		}
	}
	return nil
}

// TUFDoc reads role at version (0 = newest) outside a transaction, for the
// repository's hot read path.
func (db *DB) TUFDoc(ctx context.Context, role string, version int64) (TUFDoc, error) {
	if version == 0 {
		return db.reader().LatestTUF(ctx, role)
	}
	return db.reader().TUFDoc(ctx, role, version)
}
