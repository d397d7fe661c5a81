package store

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"database/sql"
	"encoding/base32"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/meshanics/meshanics/internal/errdefs"
)

// NewID returns prefix + "_" + 20 random base32 characters (100 bits), the
// id format of every record the store creates ("dev_…", "tok_…", "key_…").
func NewID(prefix string) string {
	var b [13]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails (Go ≥ 1.24)
	s := base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString(b[:])
	return prefix + "_" + toLower(s[:20])
}

func toLower(s string) string {
	b := []byte(s)
	for i, c := range b {
		if 'A' <= c && c <= 'Z' {
			b[i] = c + ('a' - 'A')
		}
	}
	return string(b)
}

// HashSecret returns the hex sha256 of a bearer secret (enrollment token,
// API key, session id). The store keeps only these hashes; callers hash the
// presented secret and look it up.
func HashSecret(secret string) string {
	sum := sha256.Sum256([]byte(secret))
	return hex.EncodeToString(sum[:])
}

// ms converts a time to the stored unix milliseconds; the zero time is 0.
func ms(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixMilli()
}

// fromMS converts stored unix milliseconds back; 0 is the zero time.
func fromMS(v int64) time.Time {
	if v == 0 {
		return time.Time{}
	}
	return time.UnixMilli(v).UTC()
}

// maxJSON bounds every JSON document the store keeps in a TEXT column.
const maxJSON = 64 << 10

// jsonText validates raw (nil/empty = def) and returns it as column text.
func jsonText(what string, raw json.RawMessage, def string) (string, error) {
	if len(raw) == 0 {
		return def, nil
	}
	if len(raw) > maxJSON {
		return "", errdefs.Invalid(fmt.Sprintf("%s is too large (max %d bytes)", what, maxJSON))
	}
	if !json.Valid(raw) {
		return "", errdefs.Invalid(what + " is not valid JSON")
	}
	return string(raw), nil
}

// marshalText encodes v as column text.
func marshalText(what string, v any) (string, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return "", fmt.Errorf("encode %s: %w", what, err)
	}
	if len(b) > maxJSON {
		return "", errdefs.Invalid(fmt.Sprintf("%s is too large (max %d bytes)", what, maxJSON))
	}
	return string(b), nil
}

// tagsText encodes tags (nil = {}).
func tagsText(tags map[string]string) (string, error) {
	if tags == nil {
		tags = map[string]string{}
	}
	return marshalText("tags", tags)
}

func parseTags(s string) (map[string]string, error) {
	tags := map[string]string{}
	if s == "" {
		return tags, nil
	}
	if err := json.Unmarshal([]byte(s), &tags); err != nil {
		return nil, fmt.Errorf("decode tags: %w", err)
	}
	return tags, nil
}

func boolInt(b bool) int64 {
	if b {
		return 1
	}
	return 0
}

// Page bounds a list query. Limit ≤ 0 means DefaultLimit; larger than
// MaxLimit is clamped (SPEC §8).
type Page struct {
	Limit  int
	Offset int
}

const (
	DefaultLimit = 50
	MaxLimit     = 200
)

func (p Page) norm() Page {
	if p.Limit <= 0 {
		p.Limit = DefaultLimit
	}
	if p.Limit > MaxLimit {
		p.Limit = MaxLimit
	}
	if p.Offset < 0 {
		p.Offset = 0
	}
	return p
}

// scanner is what the scan* functions read one row from.
type scanner = interface{ Scan(...any) error }

// listPage reads one page of "FROM from" (args bind its WHERE) in a read
// transaction: the total number of rows, then the page ordered by order,
// each row read by scan. Items is never nil; errors say "list what".
func listPage[T any](ctx context.Context, db *DB, what, cols, from, order string, args []any, p Page, scan func(scanner) (T, error)) (items []T, total int, err error) {
	p = p.norm()
	err = db.Read(ctx, func(tx *Tx) error {
		if err := tx.QueryRow(ctx, "SELECT COUNT(*) FROM "+from, args...).Scan(&total); err != nil {
			return err
		}
		items = make([]T, 0, min(p.Limit, total))
		return tx.scanAll(ctx, func(r *sql.Rows) error {
			it, err := scan(r)
			items = append(items, it)
			return err
		}, "SELECT "+cols+" FROM "+from+" ORDER BY "+order+" LIMIT ? OFFSET ?", append(args[:len(args):len(args)], p.Limit, p.Offset)...)
	})
	if err != nil {
		return nil, 0, fmt.Errorf("list %s: %w", what, err)
	}
	return items, total, nil
}

// revoke revokes row id of table (what names it in errors) and appends
// eventType; an already revoked row is returned as it is, with no second
// event. errdefs.ErrNotFound if unknown. revokedAt points into a row.
func revoke[T any](ctx context.Context, tx *Tx, actor, what, table, cols, id, eventType string, scan func(scanner) (T, error), revokedAt func(*T) *time.Time) (T, error) {
	var zero T
	row, err := scan(tx.QueryRow(ctx, "SELECT "+cols+" FROM "+table+" WHERE id = ?"+tx.ForUpdate(), id))
	if errors.Is(err, errdefs.ErrNotFound) {
		return zero, errdefs.NotFound(fmt.Sprintf("%s %q not found", what, truncate(id)))
	}
	if err != nil {
		return zero, fmt.Errorf("read %s: %w", what, err)
	}
	at := revokedAt(&row)
	if !at.IsZero() {
		return row, nil
	}
	*at = tx.Now()
	if _, err := tx.Exec(ctx, "UPDATE "+table+" SET revoked_at = ? WHERE id = ?", ms(*at), id); err != nil {
		return zero, fmt.Errorf("revoke %s: %w", what, err)
	}
	if _, err := tx.AppendAudit(ctx, Event{Actor: actor, Type: eventType, Subject: id}); err != nil {
		return zero, err
	}
	return row, nil
}
