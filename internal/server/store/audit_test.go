package store_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"testing"

	"github.com/meshanics/meshanics/internal/auditchain"
	"github.com/meshanics/meshanics/internal/server/store"
	"github.com/meshanics/meshanics/internal/server/store/storetest"
)

func appendEvents(t *testing.T, db *store.DB, n int) {
	t.Helper()
	for i := 0; i < n; i++ {
		mustTx(t, db, func(tx *store.Tx) error {
			_, err := tx.AppendAudit(context.Background(), store.Event{Actor: "user:alice", Type: "test.event",
				Subject: fmt.Sprintf("s%d", i%3), Data: map[string]any{"i": i, "html": "<&>"}})
			return err
		})
	}
}

func TestAuditAppendListExport(t *testing.T) {
	t.Parallel()
	forEachEngine(t, func(t *testing.T, db *store.DB) {
		ctx := context.Background()
		appendEvents(t, db, 7)
		items, total, err := db.ListAudit(ctx, store.AuditFilter{}, store.Page{Limit: 3, Offset: 2})
		if err != nil || total != 7 || len(items) != 3 || items[0].Seq != 5 || items[2].Seq != 3 {
			t.Fatalf("ListAudit(3, 2) = %d items (first seq %d), total %d, %v; want seqs 5..3", len(items), items[0].Seq, total, err)
		}
		if _, total, _ := db.ListAudit(ctx, store.AuditFilter{Subject: "s1"}, store.Page{}); total != 2 {
			t.Errorf("ListAudit(subject s1) total = %d, want 2", total)
		}
		var buf bytes.Buffer
		w := auditchain.NewExportWriter(&buf)
		if err := db.ExportAudit(ctx, 0, w.Write); err != nil {
			t.Fatal(err)
		}
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
		tr, err := auditchain.VerifyExport(&buf)
		_, head, _ := db.AuditHead(ctx)
		if err != nil || tr.Count != 7 || tr.HeadHash != head {
			t.Errorf("VerifyExport = %+v, %v; want 7 events ending in %s", tr, err, head)
		}
		e, err := db.AuditEventBySeq(ctx, 2)
		var data map[string]any
		if err != nil || json.Unmarshal(e.Data, &data) != nil || data["html"] != "<&>" || e.Actor != "user:alice" {
			t.Errorf("AuditEventBySeq(2) = %+v, %v", e, err)
		}
		v, err := db.VerifyAudit(ctx)
		if err != nil || !v.OK || v.Count != 7 || v.HeadHash != head {
			t.Errorf("VerifyAudit = %+v, %v", v, err)
		}
	})
}

func TestAuditVerifyDetectsTampering(t *testing.T) {
	t.Parallel()
	tampers := map[string]string{
		"data":     "UPDATE audit_events SET data = '{\"i\":99}' WHERE seq = 3",
		"actor":    "UPDATE audit_events SET actor = 'user:mallory' WHERE seq = 2",
		"time":     "UPDATE audit_events SET at = at + 1 WHERE seq = 4",
		"deleted":  "DELETE FROM audit_events WHERE seq = 3",
		"tail cut": "DELETE FROM audit_events WHERE seq = 5",
		"rehashed": "UPDATE audit_events SET subject = 'x', hash = 'ff' WHERE seq = 5",
	}
	for name, stmt := range tampers {
		t.Run(name, func(t *testing.T) {
			forEachEngine(t, func(t *testing.T, db *store.DB) {
				ctx := context.Background()
				appendEvents(t, db, 5)
				mustTx(t, db, func(tx *store.Tx) error { _, err := tx.Exec(ctx, stmt); return err })
				v, err := db.VerifyAudit(ctx)
				if err != nil {
					t.Fatal(err)
				}
				if v.OK || v.Problem == "" {
					t.Errorf("VerifyAudit after %s = %+v, want a problem", name, v)
				}
			})
		})
	}
}

func TestAuditAppendRejectsBadEvents(t *testing.T) {
	t.Parallel()
	forEachEngine(t, func(t *testing.T, db *store.DB) {
		ctx := context.Background()
		for _, e := range []store.Event{
			{Type: "x.y"},
			{Actor: "system"},
			{Actor: "system", Type: "x.y", Data: json.RawMessage(`{bad`)},
		} {
			err := db.Tx(ctx, func(tx *store.Tx) error { _, err := tx.AppendAudit(ctx, e); return err })
			if err == nil {
				t.Errorf("AppendAudit(%+v) succeeded, want error", e)
			}
		}
		if seq, _, _ := db.AuditHead(ctx); seq != 0 {
			t.Errorf("AuditHead = %d after rejected appends, want 0", seq)
		}
		if _, err := db.AuditEventBySeq(ctx, 1); err == nil || errors.Is(err, context.Canceled) {
			t.Errorf("AuditEventBySeq(1) = %v, want not found", err)
		}
	})
}

// Two replicas on one PostgreSQL append concurrently: the chain stays one
// unbroken sequence.
func TestAuditAppendAcrossReplicas(t *testing.T) {
	t.Parallel()
	dsn := storetest.PostgresDatabase(t)
	a := storetest.OpenDSN(t, dsn, storetest.Options{})
	b := storetest.OpenDSN(t, dsn, storetest.Options{})
	ctx := context.Background()
	const per = 10
	var wg sync.WaitGroup
	for _, db := range []*store.DB{a, b, a, b} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < per; i++ {
				if err := db.Tx(ctx, func(tx *store.Tx) error {
					_, err := tx.AppendAudit(ctx, store.Event{Actor: "system", Type: "test.replica"})
					return err
				}); err != nil {
					t.Errorf("append: %v", err)
					return
				}
			}
		}()
	}
	wg.Wait()
	v, err := b.VerifyAudit(ctx)
	if err != nil || !v.OK || v.Count != 4*per {
		t.Errorf("VerifyAudit = %+v, %v; want OK with %d events", v, err, 4*per)
	}
}
