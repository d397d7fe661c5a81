package store_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/meshanics/meshanics/internal/errdefs"
	"github.com/meshanics/meshanics/internal/server/store"
)

func TestUsers(t *testing.T) {
	t.Parallel()
	forEachEngine(t, func(t *testing.T, db *store.DB) {
		ctx := context.Background()
		if n, err := db.CountUsers(ctx); err != nil || n != 0 {
			t.Fatalf("CountUsers = %d, %v; want 0", n, err)
		}
		for _, name := range []string{"carol", "alice", "bob"} {
			mustTx(t, db, func(tx *store.Tx) error {
				_, err := tx.CreateUser(ctx, "system", name, "viewer", "h-"+name)
				return err
			})
		}
		err := db.Tx(ctx, func(tx *store.Tx) error { _, err := tx.CreateUser(ctx, "system", "alice", "admin", ""); return err })
		if !errors.Is(err, errdefs.ErrConflict) {
			t.Errorf("duplicate CreateUser = %v, want ErrConflict", err)
		}
		items, total, err := db.ListUsers(ctx, store.Page{Limit: 2})
		if err != nil || total != 3 || len(items) != 2 || items[0].Name != "alice" || items[1].Name != "bob" {
			t.Errorf("ListUsers = %+v, %d, %v", items, total, err)
		}
		role, pw := "admin", "h-new"
		mustTx(t, db, func(tx *store.Tx) error { _, err := tx.UpdateUser(ctx, "user:alice", "bob", &role, &pw); return err })
		u, err := db.User(ctx, "bob")
		if err != nil || u.Role != "admin" || u.PasswordHash != "h-new" {
			t.Errorf("User(bob) after update = %+v, %v", u, err)
		}
		err = db.Tx(ctx, func(tx *store.Tx) error { _, err := tx.UpdateUser(ctx, "user:alice", "nobody", &role, nil); return err })
		if !errors.Is(err, errdefs.ErrNotFound) {
			t.Errorf("UpdateUser(nobody) = %v, want ErrNotFound", err)
		}
		mustTx(t, db, func(tx *store.Tx) error { return tx.DeleteUser(ctx, "user:alice", "carol") })
		if _, err := db.User(ctx, "carol"); !errors.Is(err, errdefs.ErrNotFound) {
			t.Errorf("User(carol) after delete = %v, want ErrNotFound", err)
		}
		err = db.Tx(ctx, func(tx *store.Tx) error { return tx.DeleteUser(ctx, "user:alice", "carol") })
		if !errors.Is(err, errdefs.ErrNotFound) {
			t.Errorf("second DeleteUser = %v, want ErrNotFound", err)
		}
		events, _, _ := db.ListAudit(ctx, store.AuditFilter{Subject: "bob"}, store.Page{})
		if len(events) != 2 || events[0].Type != "user.update" || events[1].Type != "user.create" {
			t.Errorf("audit for bob = %+v, want update then create (newest first)", events)
		}
	})
}

func TestAPIKeys(t *testing.T) {
	t.Parallel()
	forEachEngine(t, func(t *testing.T, db *store.DB) {
		ctx := context.Background()
		mustTx(t, db, func(tx *store.Tx) error { _, err := tx.CreateUser(ctx, "system", "alice", "admin", ""); return err })
		var k store.APIKey
		mustTx(t, db, func(tx *store.Tx) error {
			var err error
			k, err = tx.CreateAPIKey(ctx, "user:alice", store.NewAPIKey{Hash: store.HashSecret("msk_1"), Name: "ci", Role: "operator", Owner: "user:alice"})
			return err
		})
		got, err := db.APIKeyByHash(ctx, store.HashSecret("msk_1"))
		if err != nil || got.ID != k.ID || got.Role != "operator" || got.Owner != "user:alice" {
			t.Fatalf("APIKeyByHash = %+v, %v", got, err)
		}
		if _, err := db.APIKeyByHash(ctx, store.HashSecret("msk_wrong")); !errors.Is(err, errdefs.ErrUnauthenticated) {
			t.Errorf("APIKeyByHash(wrong) = %v, want ErrUnauthenticated", err)
		}
		used := time.Now().UTC().Truncate(time.Millisecond)
		if err := db.TouchAPIKey(ctx, k.ID, used); err != nil {
			t.Fatal(err)
		}
		if got, _ := db.APIKey(ctx, k.ID); !got.LastUsedAt.Equal(used) {
			t.Errorf("LastUsedAt = %v, want %v", got.LastUsedAt, used)
		}
		// A second key with the same secret hash is a conflict.
		err = db.Tx(ctx, func(tx *store.Tx) error {
			_, err := tx.CreateAPIKey(ctx, "user:alice", store.NewAPIKey{Hash: store.HashSecret("msk_1"), Role: "viewer"})
			return err
		})
		if !errors.Is(err, errdefs.ErrConflict) {
			t.Errorf("duplicate key hash = %v, want ErrConflict", err)
		}
		mustTx(t, db, func(tx *store.Tx) error { _, err := tx.RevokeAPIKey(ctx, "user:alice", k.ID); return err })
		if _, err := db.APIKeyByHash(ctx, store.HashSecret("msk_1")); !errors.Is(err, errdefs.ErrUnauthenticated) {
			t.Errorf("APIKeyByHash(revoked) = %v, want ErrUnauthenticated", err)
		}
		items, total, err := db.ListAPIKeys(ctx, "user:alice", store.Page{})
		if err != nil || total != 1 || items[0].RevokedAt.IsZero() {
			t.Errorf("ListAPIKeys = %+v, %d, %v", items, total, err)
		}
		// Deleting the owner revokes their keys.
		var k2 store.APIKey
		mustTx(t, db, func(tx *store.Tx) error {
			var err error
			k2, err = tx.CreateAPIKey(ctx, "user:alice", store.NewAPIKey{Hash: store.HashSecret("msk_2"), Role: "viewer", Owner: "user:alice"})
			return err
		})
		mustTx(t, db, func(tx *store.Tx) error { return tx.DeleteUser(ctx, "system", "alice") })
		if got, _ := db.APIKey(ctx, k2.ID); got.RevokedAt.IsZero() {
			t.Error("key of deleted user still valid")
		}
	})
}

func TestSessions(t *testing.T) {
	t.Parallel()
	forEachEngine(t, func(t *testing.T, db *store.DB) {
		ctx := context.Background()
		now := time.Now()
		mustTx(t, db, func(tx *store.Tx) error { _, err := tx.CreateUser(ctx, "system", "alice", "admin", "h"); return err })
		h := store.HashSecret("cookie")
		mustTx(t, db, func(tx *store.Tx) error { _, err := tx.CreateSession(ctx, h, "alice", now.Add(time.Hour)); return err })
		s, u, err := db.SessionByHash(ctx, h, now)
		if err != nil || s.User != "alice" || u.Role != "admin" || u.Name != "alice" {
			t.Fatalf("SessionByHash = %+v, %+v, %v", s, u, err)
		}
		if _, _, err := db.SessionByHash(ctx, h, now.Add(time.Hour)); !errors.Is(err, errdefs.ErrUnauthenticated) {
			t.Errorf("SessionByHash(expired) = %v, want ErrUnauthenticated", err)
		}
		err = db.Tx(ctx, func(tx *store.Tx) error {
			_, err := tx.CreateSession(ctx, store.HashSecret("x"), "ghost", now.Add(time.Hour))
			return err
		})
		if !errors.Is(err, errdefs.ErrNotFound) {
			t.Errorf("CreateSession(ghost) = %v, want ErrNotFound", err)
		}
		// A password change ends sessions.
		pw := "h2"
		mustTx(t, db, func(tx *store.Tx) error { _, err := tx.UpdateUser(ctx, "user:alice", "alice", nil, &pw); return err })
		if _, _, err := db.SessionByHash(ctx, h, now); !errors.Is(err, errdefs.ErrUnauthenticated) {
			t.Errorf("session after password change = %v, want ErrUnauthenticated", err)
		}
		h2 := store.HashSecret("cookie2")
		mustTx(t, db, func(tx *store.Tx) error {
			_, err := tx.CreateSession(ctx, h2, "alice", now.Add(time.Minute))
			return err
		})
		mustTx(t, db, func(tx *store.Tx) error { return tx.DeleteSession(ctx, h2) })
		mustTx(t, db, func(tx *store.Tx) error { return tx.DeleteSession(ctx, h2) }) // idempotent
		if _, _, err := db.SessionByHash(ctx, h2, now); !errors.Is(err, errdefs.ErrUnauthenticated) {
			t.Errorf("session after logout = %v, want ErrUnauthenticated", err)
		}
		mustTx(t, db, func(tx *store.Tx) error {
			_, err := tx.CreateSession(ctx, store.HashSecret("c3"), "alice", now.Add(time.Minute))
			return err
		})
		n, err := db.DeleteExpiredSessions(ctx, now.Add(2*time.Minute))
		if err != nil || n != 1 {
			t.Errorf("DeleteExpiredSessions = %d, %v; want 1", n, err)
		}
		if _, total, _ := db.ListAudit(ctx, store.AuditFilter{Type: "user.logout"}, store.Page{}); total != 1 {
			t.Errorf("logout events = %d, want 1", total)
		}
	})
}
