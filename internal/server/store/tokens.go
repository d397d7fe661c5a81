package store

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/meshanics/meshanics/internal/errdefs"
)

// EnrollmentToken is a stored enrollment token (SPEC §2). The secret itself
// is never stored; only HashSecret(secret).
type EnrollmentToken struct {
	ID         string
	CreatedBy  string // audit actor of the creator
	CreatedAt  time.Time
	ExpiresAt  time.Time
	Uses       int // budget at creation
	UsesLeft   int
	Tags       map[string]string
	Replace    bool
	RevokedAt  time.Time // zero unless revoked
	LastUsedAt time.Time // zero if never used
}

// Token states as shown to operators.
const (
	TokenActive  = "active"
	TokenExpired = "expired"
	TokenRevoked = "revoked"
	TokenSpent   = "spent"
)

// State is active, expired, revoked or spent at now.
func (t EnrollmentToken) State(now time.Time) string {
	switch {
	case !t.RevokedAt.IsZero():
		return TokenRevoked
	case t.UsesLeft <= 0:
		return TokenSpent
	case !now.Before(t.ExpiresAt):
		return TokenExpired
	}
	return TokenActive
}

const tokenColumns = "id, created_by, created_at, expires_at, uses_total, uses_left, tags, allow_replace, revoked_at, last_used_at"

func scanToken(sc interface{ Scan(...any) error }) (EnrollmentToken, error) {
	var t EnrollmentToken
	var created, expires, revoked, used, replace int64
	var tags string
	if err := sc.Scan(&t.ID, &t.CreatedBy, &created, &expires, &t.Uses, &t.UsesLeft, &tags, &replace, &revoked, &used); err != nil {
		return EnrollmentToken{}, err
	}
	t.CreatedAt, t.ExpiresAt, t.RevokedAt, t.LastUsedAt = fromMS(created), fromMS(expires), fromMS(revoked), fromMS(used)
	t.Replace = replace != 0
	var err error
	t.Tags, err = parseTags(tags)
	return t, err
}

// NewEnrollmentToken is what CreateEnrollmentToken stores.
type NewEnrollmentToken struct {
	Hash      string // HashSecret of the secret shown once to the operator
	ExpiresAt time.Time
	Uses      int
	Tags      map[string]string
	Replace   bool
}

// CreateEnrollmentToken stores a new token created by actor and appends
// "enrollment_token.create" (never with the secret or its hash).
func (tx *Tx) CreateEnrollmentToken(ctx context.Context, actor string, n NewEnrollmentToken) (EnrollmentToken, error) {
	if len(n.Hash) != 64 || n.Uses < 1 || n.ExpiresAt.IsZero() {
		return EnrollmentToken{}, errors.New("enrollment token needs a hash, uses ≥ 1 and an expiry")
	}
	tags, err := tagsText(n.Tags)
	if err != nil {
		return EnrollmentToken{}, err
	}
	t := EnrollmentToken{ID: NewID("tok"), CreatedBy: actor, CreatedAt: tx.Now(), ExpiresAt: n.ExpiresAt.UTC().Truncate(time.Millisecond),
		Uses: n.Uses, UsesLeft: n.Uses, Tags: n.Tags, Replace: n.Replace}
	if t.Tags == nil {
		t.Tags = map[string]string{}
	}
	if _, err := tx.Exec(ctx, "INSERT INTO enrollment_tokens (token_hash, "+tokenColumns+") VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 0, 0)",
		n.Hash, t.ID, actor, ms(t.CreatedAt), ms(t.ExpiresAt), n.Uses, n.Uses, tags, boolInt(n.Replace)); err != nil {
		return EnrollmentToken{}, fmt.Errorf("create enrollment token: %w", err)
	}
	if _, err := tx.AppendAudit(ctx, Event{Actor: actor, Type: "enrollment_token.create", Subject: t.ID, Data: map[string]any{
		"expires_at": t.ExpiresAt.Format(time.RFC3339), "uses": n.Uses, "tags": t.Tags, "replace": n.Replace,
	}}); err != nil {
		return EnrollmentToken{}, err
	}
	return t, nil
}

// errTokenRejected is returned for every unusable token; the detail says
// why (for logs), the kind is errdefs.ErrUnauthenticated (HTTP 401).
func errTokenRejected(why string) error {
	return fmt.Errorf("enrollment token %s: %w", why, errdefs.ErrUnauthenticated)
}

// SpendEnrollmentToken atomically spends one use of the token whose secret
// hashes to hash, if it is neither revoked, expired at now, nor spent, and
// appends "enrollment_token.use". Of concurrent spends of the last use
// exactly one succeeds. Every refusal is errdefs.ErrUnauthenticated with
// the reason in the message (unknown, revoked, expired, spent).
//
// SPEC §2 says a use is spent once the token checks pass, even if signing
// fails later: run this in its own transaction before signing.
func (tx *Tx) SpendEnrollmentToken(ctx context.Context, hash string, now time.Time) (EnrollmentToken, error) {
	res, err := tx.Exec(ctx, `UPDATE enrollment_tokens SET uses_left = uses_left - 1, last_used_at = ?
		WHERE token_hash = ? AND revoked_at = 0 AND uses_left > 0 AND expires_at > ?`, ms(now), hash, ms(now))
	if err != nil {
		return EnrollmentToken{}, fmt.Errorf("spend enrollment token: %w", err)
	}
	n, err := affected(res)
	if err != nil {
		return EnrollmentToken{}, err
	}
	t, err := scanToken(tx.QueryRow(ctx, "SELECT "+tokenColumns+" FROM enrollment_tokens WHERE token_hash = ?", hash))
	if errors.Is(err, errdefs.ErrNotFound) {
		return EnrollmentToken{}, errTokenRejected("unknown")
	}
	if err != nil {
		return EnrollmentToken{}, fmt.Errorf("read enrollment token: %w", err)
	}
	if n == 0 {
		// Nothing changed: say why (state as of now, before this call).
		return EnrollmentToken{}, errTokenRejected(t.State(now))
	}
	if _, err := tx.AppendAudit(ctx, Event{Actor: ActorSystem, Type: "enrollment_token.use", Subject: t.ID,
		Data: map[string]any{"uses_left": t.UsesLeft}}); err != nil {
		return EnrollmentToken{}, err
	}
	return t, nil
}

// RevokeEnrollmentToken revokes token id (idempotent for an already revoked
// token: no second event). errdefs.ErrNotFound if unknown. Appends
// "enrollment_token.revoke".
func (tx *Tx) RevokeEnrollmentToken(ctx context.Context, actor, id string) (EnrollmentToken, error) {
	return revoke(ctx, tx, actor, "enrollment token", "enrollment_tokens", tokenColumns, id, "enrollment_token.revoke", scanToken, func(t *EnrollmentToken) *time.Time { return &t.RevokedAt })
}

// EnrollmentToken returns token id. errdefs.ErrNotFound if unknown.
func (db *DB) EnrollmentToken(ctx context.Context, id string) (EnrollmentToken, error) {
	t, err := scanToken(db.reader().QueryRow(ctx, "SELECT "+tokenColumns+" FROM enrollment_tokens WHERE id = ?", id))
	if errors.Is(err, errdefs.ErrNotFound) {
		return EnrollmentToken{}, errdefs.NotFound(fmt.Sprintf("enrollment token %q not found", truncate(id)))
	}
	return t, err
}

// ListEnrollmentTokens returns one page of tokens, newest first (created_at
// descending, then id), and the total.
func (db *DB) ListEnrollmentTokens(ctx context.Context, p Page) (items []EnrollmentToken, total int, err error) {
	return listPage(ctx, db, "enrollment tokens", tokenColumns, "enrollment_tokens", "created_at DESC, id", nil, p, scanToken)
}

// enrollmentTokenTags returns the tags of token id (none when the token no
// longer exists).
func (tx *Tx) enrollmentTokenTags(ctx context.Context, id string) (map[string]string, error) {
	var tags string
	err := tx.QueryRow(ctx, "SELECT tags FROM enrollment_tokens WHERE id = ?", id).Scan(&tags)
	if errors.Is(err, errdefs.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("enrollment token tags: %w", err)
	}
	return parseTags(tags)
}
