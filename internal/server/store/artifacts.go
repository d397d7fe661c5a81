package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/meshanics/meshanics/internal/errdefs"
)

// Artifact is one published artifact (SPEC §6).
type Artifact struct {
	Name        string
	Version     string
	Kind        string
	TargetPath  string
	SHA256      string
	Length      int64
	Custom      json.RawMessage // artifact.Custom as signed into the target
	PublishedBy string
	CreatedAt   time.Time
}

// InsertArtifact records a published artifact; name@version taken yields
// errdefs.ErrConflict with a client-facing message.
func (tx *Tx) InsertArtifact(ctx context.Context, a Artifact) error {
	custom, err := jsonText("artifact custom metadata", a.Custom, "{}")
	if err != nil {
		return err
	}
	_, err = tx.Exec(ctx, `INSERT INTO artifacts (name, version, kind, target_path, sha256, length, custom, published_by, created_at)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		a.Name, a.Version, a.Kind, a.TargetPath, a.SHA256, a.Length, custom, a.PublishedBy, ms(tx.Now()))
	if errors.Is(err, errdefs.ErrConflict) {
		return errdefs.Conflict(fmt.Sprintf("artifact %s@%s already exists", a.Name, a.Version))
	}
	if err != nil {
		return fmt.Errorf("insert artifact: %w", err)
	}
	return nil
}

const artifactCols = `name, version, kind, target_path, sha256, length, custom, published_by, created_at`

func scanArtifact(sc interface{ Scan(...any) error }) (Artifact, error) {
	var a Artifact
	var custom string
	var created int64
	if err := sc.Scan(&a.Name, &a.Version, &a.Kind, &a.TargetPath, &a.SHA256, &a.Length, &custom, &a.PublishedBy, &created); err != nil {
		return Artifact{}, err
	}
	a.Custom, a.CreatedAt = json.RawMessage(custom), fromMS(created)
	return a, nil
}

// GetArtifact returns name@version or an errdefs.ErrNotFound.
func (tx *Tx) GetArtifact(ctx context.Context, name, version string) (Artifact, error) {
	a, err := scanArtifact(tx.QueryRow(ctx, `SELECT `+artifactCols+` FROM artifacts WHERE name = ? AND version = ?`, name, version))
	if errors.Is(err, errdefs.ErrNotFound) {
		return Artifact{}, errdefs.NotFound(fmt.Sprintf("artifact %s@%s not found", name, version))
	}
	if err != nil {
		return Artifact{}, fmt.Errorf("get artifact: %w", err)
	}
	return a, nil
}

// ArtifactFilter narrows ListArtifacts.
type ArtifactFilter struct {
	Name string // exact name, "" = all
	Kind string // "" = all
}

// ListArtifacts returns one page, newest first (stable: created_at, name,
// version descending), and the total.
func (tx *Tx) ListArtifacts(ctx context.Context, f ArtifactFilter, p Page) ([]Artifact, int, error) {
	p = p.norm()
	where, args := " WHERE 1=1", []any{}
	if f.Name != "" {
		where += " AND name = ?"
		args = append(args, f.Name)
	}
	if f.Kind != "" {
		where += " AND kind = ?"
		args = append(args, f.Kind)
	}
	var total int
	if err := tx.QueryRow(ctx, `SELECT COUNT(*) FROM artifacts`+where, args...).Scan(&total); err != nil {
		return nil, 0, fmt.Errorf("count artifacts: %w", err)
	}
	var out []Artifact
	err := tx.scanAll(ctx, func(r *sql.Rows) error {
		a, err := scanArtifact(r)
		out = append(out, a)
		return err
	}, `SELECT `+artifactCols+` FROM artifacts`+where+` ORDER BY created_at DESC, name DESC, version DESC LIMIT ? OFFSET ?`,
		append(args, p.Limit, p.Offset)...)
	if err != nil {
		return nil, 0, fmt.Errorf("list artifacts: %w", err)
	}
	return out, total, nil
}

// Artifact reads name@version outside a transaction (rollout lookups).
func (db *DB) Artifact(ctx context.Context, name, version string) (Artifact, error) {
	return db.reader().GetArtifact(ctx, name, version)
}
