package store

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/meshanics/meshanics/internal/errdefs"
)

// User is an operator account. PasswordHash is opaque to the store (the
// operator API hashes with argon2id); "" means password login is disabled.
type User struct {
	Name         string
	Role         string
	PasswordHash string
	CreatedAt    time.Time
	UpdatedAt    time.Time
}

const userColumns = "name, role, password_hash, created_at, updated_at"

func scanUser(sc interface{ Scan(...any) error }) (User, error) {
	var u User
	var created, updated int64
	if err := sc.Scan(&u.Name, &u.Role, &u.PasswordHash, &created, &updated); err != nil {
		return User{}, err
	}
	u.CreatedAt, u.UpdatedAt = fromMS(created), fromMS(updated)
	return u, nil
}

func userNotFound(name string) error {
	return errdefs.NotFound(fmt.Sprintf("user %q not found", truncate(name)))
}

// CreateUser adds a user (errdefs.ErrConflict if the name exists) and
// appends "user.create". Role validation is the caller's (operatorapi).
func (tx *Tx) CreateUser(ctx context.Context, actor string, name, role, passwordHash string) (User, error) {
	if name == "" || role == "" {
		return User{}, errdefs.Invalid("user needs a name and a role")
	}
	u := User{Name: name, Role: role, PasswordHash: passwordHash, CreatedAt: tx.Now(), UpdatedAt: tx.Now()}
	_, err := tx.Exec(ctx, "INSERT INTO users ("+userColumns+") VALUES (?, ?, ?, ?, ?)",
		name, role, passwordHash, ms(u.CreatedAt), ms(u.UpdatedAt))
	if errors.Is(err, errdefs.ErrConflict) {
		return User{}, errdefs.Conflict(fmt.Sprintf("user %q already exists", truncate(name)))
	}
	if err != nil {
		return User{}, fmt.Errorf("create user: %w", err)
	}
	if _, err := tx.AppendAudit(ctx, Event{Actor: actor, Type: "user.create", Subject: name, Data: map[string]any{"role": role}}); err != nil {
		return User{}, err
	}
	return u, nil
}

// UpdateUser changes a user's role and/or password hash (nil = keep) and
// appends "user.update" (which fields changed, never the hash). A password
// change ends the user's sessions.
func (tx *Tx) UpdateUser(ctx context.Context, actor, name string, role, passwordHash *string) (User, error) {
	u, err := scanUser(tx.QueryRow(ctx, "SELECT "+userColumns+" FROM users WHERE name = ?"+tx.ForUpdate(), name))
	if errors.Is(err, errdefs.ErrNotFound) {
		return User{}, userNotFound(name)
	}
	if err != nil {
		return User{}, fmt.Errorf("read user: %w", err)
	}
	changed := []string{}
	if role != nil && *role != u.Role {
		if *role == "" {
			return User{}, errdefs.Invalid("role must not be empty")
		}
		u.Role = *role
		changed = append(changed, "role")
	}
	if passwordHash != nil {
		u.PasswordHash = *passwordHash
		changed = append(changed, "password")
		if _, err := tx.Exec(ctx, "DELETE FROM sessions WHERE user_name = ?", name); err != nil {
			return User{}, fmt.Errorf("end sessions: %w", err)
		}
	}
	if len(changed) == 0 {
		return u, nil
	}
	u.UpdatedAt = tx.Now()
	if _, err := tx.Exec(ctx, "UPDATE users SET role = ?, password_hash = ?, updated_at = ? WHERE name = ?",
		u.Role, u.PasswordHash, ms(u.UpdatedAt), name); err != nil {
		return User{}, fmt.Errorf("update user: %w", err)
	}
	if _, err := tx.AppendAudit(ctx, Event{Actor: actor, Type: "user.update", Subject: name,
		Data: map[string]any{"changed": changed, "role": u.Role}}); err != nil {
		return User{}, err
	}
	return u, nil
}

// DeleteUser removes a user, their sessions, and revokes the API keys they
// own; appends "user.delete". errdefs.ErrNotFound if unknown.
func (tx *Tx) DeleteUser(ctx context.Context, actor, name string) error {
	res, err := tx.Exec(ctx, "DELETE FROM users WHERE name = ?", name)
	if err != nil {
		return fmt.Errorf("delete user: %w", err)
	}
	if n, err := affected(res); err != nil || n == 0 {
		if err != nil {
			return err
		}
		return userNotFound(name)
	}
	if _, err := tx.Exec(ctx, "UPDATE api_keys SET revoked_at = ? WHERE owner = ? AND revoked_at = 0", ms(tx.Now()), UserActor(name)); err != nil {
		return fmt.Errorf("revoke user's api keys: %w", err)
	}
	_, err = tx.AppendAudit(ctx, Event{Actor: actor, Type: "user.delete", Subject: name})
	return err
}

// User returns user name. errdefs.ErrNotFound if unknown.
func (db *DB) User(ctx context.Context, name string) (User, error) {
	u, err := scanUser(db.reader().QueryRow(ctx, "SELECT "+userColumns+" FROM users WHERE name = ?", name))
	if errors.Is(err, errdefs.ErrNotFound) {
		return User{}, userNotFound(name)
	}
	return u, err
}

// ListUsers returns one page of users ordered by name, and the total.
func (db *DB) ListUsers(ctx context.Context, p Page) (items []User, total int, err error) {
	return listPage(ctx, db, "users", userColumns, "users", "name", nil, p, scanUser)
}

// CountUsers returns the number of users (0 on first start: create the
// first admin).
func (db *DB) CountUsers(ctx context.Context) (int, error) {
	var n int
	if err := db.reader().QueryRow(ctx, "SELECT COUNT(*) FROM users").Scan(&n); err != nil {
		return 0, fmt.Errorf("count users: %w", err)
	}
	return n, nil
}
