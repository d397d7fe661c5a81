package store_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/meshanics/meshanics/internal/errdefs"
	"github.com/meshanics/meshanics/internal/server/store"
)

// addTestDevice inserts a device row directly (the groups and rollouts
// tests need devices, not enrollment). lastSeen zero = never seen.
func addTestDevice(t *testing.T, db *store.DB, name, status string, lastSeen time.Time) {
	t.Helper()
	ctx := context.Background()
	err := db.Tx(ctx, func(tx *store.Tx) error {
		var seen int64
		if !lastSeen.IsZero() {
			seen = lastSeen.UnixMilli()
		}
		_, err := tx.Exec(ctx, `INSERT INTO devices (name, id, life, fleet, status, cert_serial, cert_key_sha256, cert_not_after, hardware,
			agent_version, tags, installed, last_seen_at, heartbeat_interval_ms, enrolled_with, created_at, updated_at, decommissioned_at)
			VALUES (?, ?, 1, 'fleet.test', ?, ?, 'k', 0, '{}', 'v', '{}', '[]', ?, 30000, 'tok', 1, 1, 0)`,
			name, store.NewID("dev"), status, store.NewID("serial"), seen)
		return err
	})
	if err != nil {
		t.Fatalf("add device %s: %v", name, err)
	}
}

func TestGroupsCRUD(t *testing.T) {
	forEachEngine(t, func(t *testing.T, db *store.DB) {
		ctx := context.Background()
		for _, n := range []string{"a", "b", "c"} {
			addTestDevice(t, db, n, "active", time.Now())
		}
		addTestDevice(t, db, "gone", "decommissioned", time.Now())
		err := db.Tx(ctx, func(tx *store.Tx) error {
			unresolved, err := tx.CreateGroup(ctx, "g1", []string{"b", "a", "nope", "gone", "a"}, "user:ann")
			if err != nil {
				return err
			}
			if diff := cmp.Diff([]string{"gone", "nope"}, unresolved); diff != "" {
				t.Errorf("CreateGroup unresolved (-want +got):\n%s", diff)
			}
			return nil
		})
		if err != nil {
			t.Fatalf("CreateGroup: %v", err)
		}
		err = db.Tx(ctx, func(tx *store.Tx) error {
			_, err := tx.CreateGroup(ctx, "g1", nil, "user:ann")
			return err
		})
		if !errors.Is(err, errdefs.ErrConflict) {
			t.Errorf("CreateGroup(duplicate) = %v, want conflict", err)
		}
		err = db.Tx(ctx, func(tx *store.Tx) error {
			un, err := tx.AddGroupMembers(ctx, "g1", []string{"c", "a", "zz"})
			if err != nil {
				return err
			}
			if diff := cmp.Diff([]string{"zz"}, un); diff != "" {
				t.Errorf("AddGroupMembers unresolved (-want +got):\n%s", diff)
			}
			nm, err := tx.RemoveGroupMembers(ctx, "g1", []string{"b", "zz"})
			if err != nil {
				return err
			}
			if diff := cmp.Diff([]string{"zz"}, nm); diff != "" {
				t.Errorf("RemoveGroupMembers not members (-want +got):\n%s", diff)
			}
			_, err = tx.AddGroupMembers(ctx, "missing", []string{"a"})
			if !errors.Is(err, errdefs.ErrNotFound) {
				t.Errorf("AddGroupMembers(missing group) = %v, want not found", err)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		err = db.Read(ctx, func(tx *store.Tx) error {
			g, err := tx.GetGroup(ctx, "g1")
			if err != nil {
				return err
			}
			if diff := cmp.Diff([]string{"a", "c"}, g.Members); diff != "" || g.Size != 2 || g.CreatedBy != "user:ann" {
				t.Errorf("GetGroup = %+v (-want +got members):\n%s", g, diff)
			}
			gs, total, err := tx.ListGroups(ctx, store.Page{})
			if err != nil {
				return err
			}
			if total != 1 || len(gs) != 1 || gs[0].Name != "g1" || gs[0].Size != 2 {
				t.Errorf("ListGroups = %+v, %d", gs, total)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		if err := db.Tx(ctx, func(tx *store.Tx) error { return tx.DeleteGroup(ctx, "g1") }); err != nil {
			t.Fatalf("DeleteGroup: %v", err)
		}
		err = db.Tx(ctx, func(tx *store.Tx) error { return tx.DeleteGroup(ctx, "g1") })
		if !errors.Is(err, errdefs.ErrNotFound) {
			t.Errorf("DeleteGroup(again) = %v, want not found", err)
		}
	})
}

func TestResolveDevicesManyNames(t *testing.T) {
	forEachEngine(t, func(t *testing.T, db *store.DB) {
		ctx := context.Background()
		addTestDevice(t, db, "real", "active", time.Time{})
		names := []string{"real"}
		for i := 0; i < 1200; i++ {
			names = append(names, "ghost-"+string(rune('a'+i%26))+string(rune('a'+i/26%26))+string(rune('a'+i/676)))
		}
		err := db.Read(ctx, func(tx *store.Tx) error {
			found, unresolved, err := tx.ResolveDevices(ctx, names)
			if err != nil {
				return err
			}
			if len(found) != 1 || len(unresolved) != 1200 {
				t.Errorf("ResolveDevices = %d found, %d unresolved; want 1, 1200", len(found), len(unresolved))
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	})
}

func TestSetGroupMembers(t *testing.T) {
	forEachEngine(t, func(t *testing.T, db *store.DB) {
		ctx := context.Background()
		for _, n := range []string{"a", "b", "c"} {
			addTestDevice(t, db, n, "active", time.Now())
		}
		err := db.Tx(ctx, func(tx *store.Tx) error {
			if _, err := tx.CreateGroup(ctx, "g", []string{"a", "b"}, "x"); err != nil {
				return err
			}
			un, err := tx.SetGroupMembers(ctx, "g", []string{"c", "b", "zz"})
			if err != nil {
				return err
			}
			members, err := tx.GroupMembers(ctx, "g")
			if err != nil {
				return err
			}
			if diff := cmp.Diff([]string{"b", "c"}, members); diff != "" || !cmp.Equal(un, []string{"zz"}) {
				t.Errorf("SetGroupMembers: members (-want +got):\n%s unresolved %v", diff, un)
			}
			if _, err := tx.SetGroupMembers(ctx, "nope", nil); !errors.Is(err, errdefs.ErrNotFound) {
				t.Errorf("SetGroupMembers(missing) = %v", err)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	})
}
