package store

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/meshanics/meshanics/internal/errdefs"
)

// APIKey is an operator API key ("msk_…"); only HashSecret(secret) is
// stored. Owner is the audit actor it was created for (e.g. "user:admin").
type APIKey struct {
	ID         string
	Name       string
	Role       string
	Owner      string
	CreatedAt  time.Time
	LastUsedAt time.Time // zero if never used
	RevokedAt  time.Time // zero unless revoked
}

const apiKeyColumns = "id, name, role, owner, created_at, last_used_at, revoked_at"

func scanAPIKey(sc interface{ Scan(...any) error }) (APIKey, error) {
	var k APIKey
	var created, used, revoked int64
	if err := sc.Scan(&k.ID, &k.Name, &k.Role, &k.Owner, &created, &used, &revoked); err != nil {
		return APIKey{}, err
	}
	k.CreatedAt, k.LastUsedAt, k.RevokedAt = fromMS(created), fromMS(used), fromMS(revoked)
	return k, nil
}

// NewAPIKey is what CreateAPIKey stores.
type NewAPIKey struct {
	Hash  string // HashSecret of the secret shown once
	Name  string
	Role  string
	Owner string
}

// CreateAPIKey stores a key and appends "apikey.create".
func (tx *Tx) CreateAPIKey(ctx context.Context, actor string, n NewAPIKey) (APIKey, error) {
	if len(n.Hash) != 64 || n.Role == "" {
		return APIKey{}, errors.New("api key needs a hash and a role")
	}
	k := APIKey{ID: NewID("key"), Name: n.Name, Role: n.Role, Owner: n.Owner, CreatedAt: tx.Now()}
	if _, err := tx.Exec(ctx, "INSERT INTO api_keys (key_hash, "+apiKeyColumns+") VALUES (?, ?, ?, ?, ?, ?, 0, 0)",
		n.Hash, k.ID, k.Name, k.Role, k.Owner, ms(k.CreatedAt)); err != nil {
		return APIKey{}, fmt.Errorf("create api key: %w", err)
	}
	if _, err := tx.AppendAudit(ctx, Event{Actor: actor, Type: "apikey.create", Subject: k.ID,
		Data: map[string]any{"name": k.Name, "role": k.Role, "owner": k.Owner}}); err != nil {
		return APIKey{}, err
	}
	return k, nil
}

// APIKeyByHash authenticates a presented key: the unrevoked key whose
// secret hashes to hash. Unknown or revoked keys are
// errdefs.ErrUnauthenticated. One indexed read, no transaction.
func (db *DB) APIKeyByHash(ctx context.Context, hash string) (APIKey, error) {
	k, err := scanAPIKey(db.reader().QueryRow(ctx, "SELECT "+apiKeyColumns+" FROM api_keys WHERE key_hash = ?", hash))
	switch {
	case errors.Is(err, errdefs.ErrNotFound):
		return APIKey{}, fmt.Errorf("api key unknown: %w", errdefs.ErrUnauthenticated)
	case err != nil:
		return APIKey{}, fmt.Errorf("read api key: %w", err)
	case !k.RevokedAt.IsZero():
		return APIKey{}, fmt.Errorf("api key revoked: %w", errdefs.ErrUnauthenticated)
	}
	return k, nil
}

// TouchAPIKey records that key id was used at t (no audit event; callers
// may throttle it, e.g. once a minute per key).
func (db *DB) TouchAPIKey(ctx context.Context, id string, t time.Time) error {
	return db.Tx(ctx, func(tx *Tx) error {
		_, err := tx.Exec(ctx, "UPDATE api_keys SET last_used_at = ? WHERE id = ? AND last_used_at < ?", ms(t), id, ms(t))
		return err
	})
}

// RevokeAPIKey revokes key id (idempotent) and appends "apikey.revoke".
// errdefs.ErrNotFound if unknown.
func (tx *Tx) RevokeAPIKey(ctx context.Context, actor, id string) (APIKey, error) {
	return revoke(ctx, tx, actor, "api key", "api_keys", apiKeyColumns, id, "apikey.revoke", scanAPIKey, func(k *APIKey) *time.Time { return &k.RevokedAt })
}

// APIKey returns key id (revoked or not). errdefs.ErrNotFound if unknown.
func (db *DB) APIKey(ctx context.Context, id string) (APIKey, error) {
	k, err := scanAPIKey(db.reader().QueryRow(ctx, "SELECT "+apiKeyColumns+" FROM api_keys WHERE id = ?", id))
	if errors.Is(err, errdefs.ErrNotFound) {
		return APIKey{}, errdefs.NotFound(fmt.Sprintf("api key %q not found", truncate(id)))
	}
	return k, err
}

// ListAPIKeys returns one page of keys (revoked ones included) ordered by
// creation then id, and the total. owner "" lists every owner's keys.
func (db *DB) ListAPIKeys(ctx context.Context, owner string, p Page) (items []APIKey, total int, err error) {
	where, args := "", []any{}
	if owner != "" {
		where, args = " WHERE owner = ?", []any{owner}
	}
	return listPage(ctx, db, "api keys", apiKeyColumns, "api_keys"+where, "created_at, id", args, p, scanAPIKey)
}
