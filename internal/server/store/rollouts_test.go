package store_test

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/meshanics/meshanics/internal/errdefs"
	"github.com/meshanics/meshanics/internal/server/store"
)

func testRollout(id string) store.Rollout {
	return store.Rollout{ID: id, ArtifactName: "app", ArtifactVersion: "2.0", Group: "g", Probe: json.RawMessage(`{"type":"file"}`),
		Strategy: json.RawMessage(`{}`), State: "running", Waves: json.RawMessage(`[]`), CreatedBy: "user:ann"}
}

func insertRollout(t *testing.T, db *store.DB, r store.Rollout, waves [][]string) error {
	t.Helper()
	ctx := context.Background()
	return db.Tx(ctx, func(tx *store.Tx) error { return tx.InsertRollout(ctx, r, waves) })
}

func TestRolloutsInsertConflictAndSupersede(t *testing.T) {
	forEachEngine(t, func(t *testing.T, db *store.DB) {
		ctx := context.Background()
		e0, err := db.RolloutEpoch(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if err := insertRollout(t, db, testRollout("ro_1"), [][]string{{"a"}, {"b", "c"}}); err != nil {
			t.Fatalf("InsertRollout: %v", err)
		}
		if e1, _ := db.RolloutEpoch(ctx); e1 != e0+1 {
			t.Errorf("epoch after insert = %d, want %d", e1, e0+1)
		}
		err = insertRollout(t, db, testRollout("ro_2"), [][]string{{"x", "c"}})
		if !errors.Is(err, errdefs.ErrConflict) || !strings.Contains(errdefs.PublicMessage(err), "device c is already in active rollout ro_1") {
			t.Fatalf("overlapping InsertRollout = %v, want conflict naming ro_1", err)
		}
		var list []store.Rollout
		_ = db.Read(ctx, func(tx *store.Tx) (err error) { list, _, err = tx.ListRollouts(ctx, "", store.Page{}); return err })
		if len(list) != 1 {
			t.Fatalf("rejected rollout was stored: %d rollouts", len(list))
		}
		// Once ro_1 completed, its unfinished rows are superseded.
		err = db.Tx(ctx, func(tx *store.Tx) error {
			r, err := tx.LockRollout(ctx, "ro_1")
			if err != nil {
				return err
			}
			r.State = "completed"
			return tx.UpdateRollout(ctx, r)
		})
		if err != nil {
			t.Fatal(err)
		}
		if err := insertRollout(t, db, testRollout("ro_2"), [][]string{{"x", "c"}}); err != nil {
			t.Fatalf("InsertRollout over a completed rollout: %v", err)
		}
		err = db.Read(ctx, func(tx *store.Tx) error {
			old, err := tx.RolloutDevice(ctx, "ro_1", "c")
			if err != nil {
				return err
			}
			if old.Held || old.Detail != "superseded by rollout ro_2" {
				t.Errorf("old row = %+v, want released and superseded", old)
			}
			ids, err := tx.RolloutIDs(ctx, "running")
			if err != nil {
				return err
			}
			if diff := cmp.Diff([]string{"ro_2"}, ids); diff != "" {
				t.Errorf("RolloutIDs(running) (-want +got):\n%s", diff)
			}
			devs, total, err := tx.ListRolloutDevices(ctx, "ro_1", store.Page{Limit: 2, Offset: 1})
			if err != nil {
				return err
			}
			if total != 3 || len(devs) != 2 || devs[0].Device != "b" || devs[0].Wave != 1 || devs[0].State != "pending" || devs[0].Action != "apply" {
				t.Errorf("ListRolloutDevices = %+v, %d", devs, total)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := db.HeldAssignment(ctx, "c"); err != nil {
			t.Errorf("HeldAssignment(c) = %v", err)
		}
		if h, _ := db.HeldAssignment(ctx, "c"); h.Device.RolloutID != "ro_2" || h.ArtifactName != "app" || h.State != "running" {
			t.Errorf("HeldAssignment(c) = %+v, want ro_2", h)
		}
		if _, err := db.HeldAssignment(ctx, "nobody"); !errors.Is(err, errdefs.ErrNotFound) {
			t.Errorf("HeldAssignment(nobody) = %v, want not found", err)
		}
	})
}

func TestRolloutDeviceMovesAndRevert(t *testing.T) {
	forEachEngine(t, func(t *testing.T, db *store.DB) {
		ctx := context.Background()
		now := time.Now()
		for _, n := range []string{"a", "b", "c", "d"} {
			addTestDevice(t, db, n, "active", now)
		}
		if err := insertRollout(t, db, testRollout("ro_1"), [][]string{{"a", "b"}, {"c", "d"}}); err != nil {
			t.Fatal(err)
		}
		move := func(dev, from, fromAsg string, to store.RolloutDevice) bool {
			t.Helper()
			var ok bool
			err := db.Tx(ctx, func(tx *store.Tx) (err error) { ok, err = tx.MoveRolloutDevice(ctx, to, from, fromAsg); return err })
			if err != nil {
				t.Fatal(err)
			}
			return ok
		}
		row := store.RolloutDevice{RolloutID: "ro_1", Device: "a", Wave: 0, State: "assigned", AssignmentID: "asg_a", Action: "apply", PreviousVersion: "1.0", Held: true}
		if !move("a", "pending", "", row) {
			t.Fatal("MoveRolloutDevice(pending → assigned) = false")
		}
		if move("a", "pending", "", row) {
			t.Error("second compare-and-set from pending succeeded")
		}
		row.State, row.Detail = "healthy", strings.Repeat("x", 5000)
		move("a", "assigned", "asg_a", row)
		rowB := store.RolloutDevice{RolloutID: "ro_1", Device: "b", State: "failed", AssignmentID: "asg_b", Action: "apply", PreviousVersion: "1.0", Held: true}
		move("b", "pending", "", rowB)
		rowC := store.RolloutDevice{RolloutID: "ro_1", Device: "c", Wave: 1, State: "applying", AssignmentID: "asg_c", Action: "apply", Held: true}
		move("c", "pending", "", rowC)

		err := db.Tx(ctx, func(tx *store.Tx) error {
			got, err := tx.RolloutDeviceByAssignment(ctx, "asg_a")
			if err != nil {
				return err
			}
			if got.Device != "a" || got.State != "healthy" || len(got.Detail) != 1024 {
				t.Errorf("RolloutDeviceByAssignment = %+v (detail %d bytes)", got.State, len(got.Detail))
			}
			if _, err := tx.RolloutDeviceByAssignment(ctx, "asg_none"); !errors.Is(err, errdefs.ErrNotFound) {
				t.Errorf("unknown assignment = %v", err)
			}
			// Wave 0: a and b are terminal → not open. Wave 1: c in flight.
			for wave, want := range []bool{false, true} {
				open, err := tx.WaveOpen(ctx, "ro_1", wave, now)
				if err != nil {
					return err
				}
				if open != want {
					t.Errorf("WaveOpen(%d) = %v, want %v", wave, open, want)
				}
			}
			// Much later nobody is live.
			if open, _ := tx.WaveOpen(ctx, "ro_1", 1, now.Add(time.Hour)); open {
				t.Error("WaveOpen an hour later = true, want false (all offline)")
			}
			counts, err := tx.RolloutCounts(ctx, "ro_1")
			if err != nil {
				return err
			}
			want := map[int]map[string]int{0: {"healthy": 1, "failed": 1}, 1: {"applying": 1, "pending": 1}}
			if diff := cmp.Diff(want, counts); diff != "" {
				t.Errorf("RolloutCounts (-want +got):\n%s", diff)
			}
			n, unavailable, err := tx.RevertApplied(ctx, "ro_1")
			if err != nil {
				return err
			}
			if n != 1 || unavailable != 1 {
				t.Errorf("RevertApplied = %d, %d; want 1 (a), 1 (c has no previous version)", n, unavailable)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		h, err := db.HeldAssignment(ctx, "a")
		if err != nil || h.Device.Action != "revert" || h.Device.State != "pending" || h.Device.AssignmentID != "" || h.Device.Detail != "revert to 1.0 queued" {
			t.Errorf("a after RevertApplied = %+v, %v", h.Device, err)
		}
		for _, d := range []string{"b", "c", "d"} {
			if _, err := db.HeldAssignment(ctx, d); !errors.Is(err, errdefs.ErrNotFound) {
				t.Errorf("%s still held after RevertApplied: %v", d, err)
			}
		}
		err = db.Tx(ctx, func(tx *store.Tx) error { return tx.ReleaseRollout(ctx, "ro_1") })
		if err != nil {
			t.Fatal(err)
		}
		if _, err := db.HeldAssignment(ctx, "a"); !errors.Is(err, errdefs.ErrNotFound) {
			t.Errorf("a held after ReleaseRollout: %v", err)
		}
	})
}

func TestWaveOpenIgnoresDecommissionedDevices(t *testing.T) {
	forEachEngine(t, func(t *testing.T, db *store.DB) {
		ctx := context.Background()
		addTestDevice(t, db, "gone", "decommissioned", time.Now())
		if err := insertRollout(t, db, testRollout("ro_1"), [][]string{{"gone"}}); err != nil {
			t.Fatal(err)
		}
		err := db.Read(ctx, func(tx *store.Tx) error {
			open, err := tx.WaveOpen(ctx, "ro_1", 0, time.Now())
			if open {
				t.Error("a decommissioned device keeps its wave open")
			}
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		err = db.Read(ctx, func(tx *store.Tx) error {
			_, err := tx.GetRollout(ctx, "ro_nope")
			return err
		})
		if !errors.Is(err, errdefs.ErrNotFound) {
			t.Errorf("GetRollout(unknown) = %v", err)
		}
	})
}
