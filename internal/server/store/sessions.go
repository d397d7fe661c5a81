package store

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/meshanics/meshanics/internal/errdefs"
)

// Session is a console/CLI login (cookie meshanics_session); only
// HashSecret(cookie value) is stored.
type Session struct {
	User      string
	CreatedAt time.Time
	ExpiresAt time.Time
}

// CreateSession stores a session for user (errdefs.ErrNotFound if the user
// does not exist) and appends "user.login".
func (tx *Tx) CreateSession(ctx context.Context, hash, user string, expiresAt time.Time) (Session, error) {
	if len(hash) != 64 || expiresAt.IsZero() {
		return Session{}, errors.New("session needs a hash and an expiry")
	}
	var n int
	if err := tx.QueryRow(ctx, "SELECT COUNT(*) FROM users WHERE name = ?", user).Scan(&n); err != nil {
		return Session{}, fmt.Errorf("read user: %w", err)
	}
	if n == 0 {
		return Session{}, userNotFound(user)
	}
	s := Session{User: user, CreatedAt: tx.Now(), ExpiresAt: expiresAt.UTC().Truncate(time.Millisecond)}
	if _, err := tx.Exec(ctx, "INSERT INTO sessions (session_hash, user_name, created_at, expires_at) VALUES (?, ?, ?, ?)",
		hash, user, ms(s.CreatedAt), ms(s.ExpiresAt)); err != nil {
		return Session{}, fmt.Errorf("create session: %w", err)
	}
	if _, err := tx.AppendAudit(ctx, Event{Actor: UserActor(user), Type: "user.login", Subject: user}); err != nil {
		return Session{}, err
	}
	return s, nil
}

// SessionByHash authenticates a presented session cookie: the session and
// its user, if it exists and has not expired at now. Otherwise
// errdefs.ErrUnauthenticated. One read, no transaction.
func (db *DB) SessionByHash(ctx context.Context, hash string, now time.Time) (Session, User, error) {
	var s Session
	var u User
	var created, expires, uCreated, uUpdated int64
	err := db.reader().QueryRow(ctx, `SELECT s.user_name, s.created_at, s.expires_at, u.role, u.password_hash, u.created_at, u.updated_at
		FROM sessions s JOIN users u ON u.name = s.user_name WHERE s.session_hash = ?`, hash).Scan(
		&s.User, &created, &expires, &u.Role, &u.PasswordHash, &uCreated, &uUpdated)
	switch {
	case errors.Is(err, errdefs.ErrNotFound):
		return Session{}, User{}, fmt.Errorf("session unknown: %w", errdefs.ErrUnauthenticated)
	case err != nil:
		return Session{}, User{}, fmt.Errorf("read session: %w", err)
	}
	s.CreatedAt, s.ExpiresAt = fromMS(created), fromMS(expires)
	u.Name, u.CreatedAt, u.UpdatedAt = s.User, fromMS(uCreated), fromMS(uUpdated)
	if !now.Before(s.ExpiresAt) {
		return Session{}, User{}, fmt.Errorf("session expired: %w", errdefs.ErrUnauthenticated)
	}
	return s, u, nil
}

// DeleteSession ends a session (logout) and appends "user.logout"; an
// unknown hash is not an error (logout is idempotent) and records nothing.
func (tx *Tx) DeleteSession(ctx context.Context, hash string) error {
	var user string
	err := tx.QueryRow(ctx, "SELECT user_name FROM sessions WHERE session_hash = ?"+tx.ForUpdate(), hash).Scan(&user)
	if errors.Is(err, errdefs.ErrNotFound) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("read session: %w", err)
	}
	if _, err := tx.Exec(ctx, "DELETE FROM sessions WHERE session_hash = ?", hash); err != nil {
		return fmt.Errorf("delete session: %w", err)
	}
	_, err = tx.AppendAudit(ctx, Event{Actor: UserActor(user), Type: "user.logout", Subject: user})
	return err
}

// DeleteExpiredSessions removes sessions expired at now (housekeeping, no
// audit event) and returns how many.
func (db *DB) DeleteExpiredSessions(ctx context.Context, now time.Time) (int64, error) {
	var n int64
	err := db.Tx(ctx, func(tx *Tx) error {
		res, err := tx.Exec(ctx, "DELETE FROM sessions WHERE expires_at <= ?", ms(now))
		if err != nil {
			return err
		}
		n, err = affected(res)
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("delete expired sessions: %w", err)
	}
	return n, nil
}
