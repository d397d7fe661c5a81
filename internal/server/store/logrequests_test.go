package store_test

import (
	"bytes"
	"context"
	"errors"
	"testing"
	"time"

	"github.com/meshanics/meshanics/internal/errdefs"
	"github.com/meshanics/meshanics/internal/server/store"
)

func createLogRequest(t *testing.T, db *store.DB, device string) store.LogRequest {
	t.Helper()
	var l store.LogRequest
	mustTx(t, db, func(tx *store.Tx) error {
		var err error
		l, err = tx.CreateLogRequest(context.Background(), "user:admin", device, time.Now().Add(-time.Hour), 500)
		return err
	})
	return l
}

func TestLogRequestLifecycle(t *testing.T) {
	t.Parallel()
	forEachEngine(t, func(t *testing.T, db *store.DB) {
		ctx := context.Background()
		mustEnroll(t, db, "edge-1", "k1")
		mustEnroll(t, db, "edge-2", "k2")
		l := createLogRequest(t, db, "edge-1")
		if l.State != store.LogPending || l.MaxLines != 500 {
			t.Fatalf("CreateLogRequest = %+v", l)
		}
		pending, err := db.PendingLogRequests(ctx, 10)
		if err != nil || len(pending) != 1 || pending[0].ID != l.ID || pending[0].Device != "edge-1" || !pending[0].Since.Equal(l.Since) {
			t.Fatalf("PendingLogRequests = %+v, %v", pending, err)
		}
		if _, err := db.LogBundle(ctx, l.ID); !errors.Is(err, errdefs.ErrConflict) {
			t.Errorf("LogBundle(pending) = %v, want ErrConflict", err)
		}
		// Another device cannot fulfil it.
		if err := db.CompleteLogRequest(ctx, "edge-2", l.ID, []byte("x")); !errors.Is(err, errdefs.ErrNotFound) {
			t.Errorf("CompleteLogRequest(other device) = %v, want ErrNotFound", err)
		}
		if err := db.CompleteLogRequest(ctx, "edge-1", l.ID, make([]byte, store.MaxLogBundle+1)); !errors.Is(err, errdefs.ErrInvalid) {
			t.Errorf("CompleteLogRequest(too big) = %v, want ErrInvalid", err)
		}
		bundle := bytes.Repeat([]byte{0x1f, 0x8b, 0}, 1000)
		if err := db.CompleteLogRequest(ctx, "edge-1", l.ID, bundle); err != nil {
			t.Fatalf("CompleteLogRequest: %v", err)
		}
		if err := db.CompleteLogRequest(ctx, "edge-1", l.ID, bundle); !errors.Is(err, errdefs.ErrConflict) {
			t.Errorf("second CompleteLogRequest = %v, want ErrConflict", err)
		}
		got, err := db.LogBundle(ctx, l.ID)
		if err != nil || !bytes.Equal(got, bundle) {
			t.Errorf("LogBundle = %d bytes, %v; want the uploaded %d bytes", len(got), err, len(bundle))
		}
		r, err := db.LogRequest(ctx, l.ID)
		if err != nil || r.State != store.LogCompleted || r.Size != int64(len(bundle)) || r.CompletedAt.IsZero() {
			t.Errorf("LogRequest = %+v, %v", r, err)
		}
		if p, _ := db.PendingLogRequests(ctx, 10); len(p) != 0 {
			t.Errorf("PendingLogRequests after completion = %+v, want none", p)
		}
		f := createLogRequest(t, db, "edge-1")
		if err := db.FailLogRequest(ctx, "edge-1", f.ID, "journalctl failed"); err != nil {
			t.Fatal(err)
		}
		items, total, err := db.ListLogRequests(ctx, "edge-1", store.Page{})
		if err != nil || total != 2 || items[0].ID != f.ID || items[0].State != store.LogFailed || items[0].Detail != "journalctl failed" {
			t.Errorf("ListLogRequests = %+v, %d, %v", items, total, err)
		}
		if _, err := db.LogRequest(ctx, "log_nope"); !errors.Is(err, errdefs.ErrNotFound) {
			t.Errorf("LogRequest(unknown) = %v, want ErrNotFound", err)
		}
	})
}

func TestLogRequestsEndWithDecommission(t *testing.T) {
	t.Parallel()
	forEachEngine(t, func(t *testing.T, db *store.DB) {
		ctx := context.Background()
		mustEnroll(t, db, "edge-1", "k1")
		l := createLogRequest(t, db, "edge-1")
		mustTx(t, db, func(tx *store.Tx) error { _, err := tx.DecommissionDevice(ctx, "user:a", "edge-1"); return err })
		if r, _ := db.LogRequest(ctx, l.ID); r.State != store.LogFailed {
			t.Errorf("log request after decommission = %s, want failed", r.State)
		}
		err := db.Tx(ctx, func(tx *store.Tx) error {
			_, err := tx.CreateLogRequest(ctx, "user:a", "edge-1", time.Time{}, 10)
			return err
		})
		if !errors.Is(err, errdefs.ErrDecommissioned) {
			t.Errorf("CreateLogRequest(decommissioned) = %v, want ErrDecommissioned", err)
		}
	})
}
