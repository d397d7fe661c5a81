package store_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/meshanics/meshanics/internal/errdefs"
	"github.com/meshanics/meshanics/internal/server/store"
)

func TestTUFDocuments(t *testing.T) {
	forEachEngine(t, func(t *testing.T, db *store.DB) {
		ctx := context.Background()
		exp := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
		if _, err := db.TUFDoc(ctx, "root", 0); !errors.Is(err, errdefs.ErrNotFound) {
			t.Fatalf("TUFDoc(empty) = %v, want ErrNotFound", err)
		}
		err := db.Tx(ctx, func(tx *store.Tx) error {
			return tx.InsertTUF(ctx,
				store.TUFDoc{Role: "root", Version: 1, Body: []byte(`{"v":1}`), Expires: exp},
				store.TUFDoc{Role: "root", Version: 2, Body: []byte(`{"v":2}`), Expires: exp})
		})
		if err != nil {
			t.Fatal(err)
		}
		d, err := db.TUFDoc(ctx, "root", 0)
		if err != nil || d.Version != 2 || string(d.Body) != `{"v":2}` || !d.Expires.Equal(exp) {
			t.Fatalf("TUFDoc(root, latest) = %+v, %v", d, err)
		}
		if d, err := db.TUFDoc(ctx, "root", 1); err != nil || string(d.Body) != `{"v":1}` {
			t.Fatalf("TUFDoc(root, 1) = %+v, %v", d, err)
		}
		// The same role and version again: another replica won.
		err = db.Tx(ctx, func(tx *store.Tx) error {
			return tx.InsertTUF(ctx, store.TUFDoc{Role: "root", Version: 2, Body: []byte(`{}`), Expires: exp})
		})
		if !errors.Is(err, store.ErrTUFStale) || errors.Is(err, errdefs.ErrConflict) {
			t.Fatalf("InsertTUF(duplicate) = %v, want ErrTUFStale (and not ErrConflict)", err)
		}
		// Timestamps are pruned to the newest ones.
		err = db.Tx(ctx, func(tx *store.Tx) error {
			for v := int64(1); v <= 60; v++ {
				if err := tx.InsertTUF(ctx, store.TUFDoc{Role: "timestamp", Version: v, Body: []byte(fmt.Sprint(v)), Expires: exp}); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := db.TUFDoc(ctx, "timestamp", 1); !errors.Is(err, errdefs.ErrNotFound) {
			t.Errorf("timestamp v1 still stored after 60 versions: %v", err)
		}
		if d, err := db.TUFDoc(ctx, "timestamp", 0); err != nil || d.Version != 60 {
			t.Errorf("latest timestamp = %+v, %v; want v60", d, err)
		}
		err = db.Read(ctx, func(tx *store.Tx) error {
			d, err := tx.LatestTUF(ctx, "root")
			if err == nil && d.Version != 2 {
				err = fmt.Errorf("LatestTUF(root) = v%d", d.Version)
			}
			if err != nil {
				return err
			}
			all, err := tx.TUFHistory(ctx, "root", 10)
			if err != nil || len(all) != 2 || all[0].Version != 1 || string(all[1].Body) != `{"v":2}` || all[1].Role != "root" {
				return fmt.Errorf("TUFHistory(root, 10) = %+v, %v; want v1, v2", all, err)
			}
			newest, err := tx.TUFHistory(ctx, "timestamp", 3)
			if err != nil || len(newest) != 3 || newest[0].Version != 58 || newest[2].Version != 60 {
				return fmt.Errorf("TUFHistory(timestamp, 3) = %+v, %v; want v58..v60", newest, err)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	})
}

func TestArtifacts(t *testing.T) {
	forEachEngine(t, func(t *testing.T, db *store.DB) {
		ctx := context.Background()
		put := func(name, version, kind string) error {
			return db.Tx(ctx, func(tx *store.Tx) error {
				return tx.InsertArtifact(ctx, store.Artifact{Name: name, Version: version, Kind: kind,
					TargetPath: "artifacts/" + kind + "/" + name + "/" + version + "/f", SHA256: "ab", Length: 3,
					Custom: json.RawMessage(`{"kind":"` + kind + `"}`), PublishedBy: "user:alice"})
			})
		}
		for _, a := range [][3]string{{"det", "1", "model"}, {"det", "2", "model"}, {"web", "1", "container"}} {
			if err := put(a[0], a[1], a[2]); err != nil {
				t.Fatal(err)
			}
		}
		err := put("det", "1", "model")
		if !errors.Is(err, errdefs.ErrConflict) || errdefs.PublicMessage(err) != "artifact det@1 already exists" {
			t.Fatalf("InsertArtifact(duplicate) = %v, want ErrConflict naming det@1", err)
		}
		a, err := db.Artifact(ctx, "det", "2")
		if err != nil || a.Kind != "model" || a.Length != 3 || a.PublishedBy != "user:alice" || string(a.Custom) != `{"kind":"model"}` || a.CreatedAt.IsZero() {
			t.Fatalf("Artifact(det, 2) = %+v, %v", a, err)
		}
		if _, err := db.Artifact(ctx, "det", "9"); !errors.Is(err, errdefs.ErrNotFound) {
			t.Fatalf("Artifact(missing) = %v, want ErrNotFound", err)
		}
		var items []store.Artifact
		var total int
		err = db.Read(ctx, func(tx *store.Tx) error {
			var err error
			items, total, err = tx.ListArtifacts(ctx, store.ArtifactFilter{Name: "det"}, store.Page{Limit: 1})
			return err
		})
		if err != nil || total != 2 || len(items) != 1 {
			t.Fatalf("ListArtifacts(name=det, limit 1) = %d items, total %d, %v", len(items), total, err)
		}
		err = db.Read(ctx, func(tx *store.Tx) error {
			var err error
			items, total, err = tx.ListArtifacts(ctx, store.ArtifactFilter{Kind: "container"}, store.Page{})
			return err
		})
		if err != nil || total != 1 || items[0].Name != "web" {
			t.Fatalf("ListArtifacts(kind=container) = %+v, total %d, %v", items, total, err)
		}
		err = db.Read(ctx, func(tx *store.Tx) error {
			_, err := tx.GetArtifact(ctx, "web", "1")
			return err
		})
		if err != nil {
			t.Fatalf("GetArtifact = %v", err)
		}
	})
}
