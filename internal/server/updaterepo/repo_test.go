package updaterepo

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/theupdateframework/go-tuf/v2/metadata"

	"github.com/meshanics/meshanics/internal/artifact"
	"github.com/meshanics/meshanics/internal/ceremony"
	"github.com/meshanics/meshanics/internal/errdefs"
	"github.com/meshanics/meshanics/internal/server/store"
	"github.com/meshanics/meshanics/internal/server/store/storetest"
)

// dirBlobs is a minimal blob store for tests: files named by sha256.
type dirBlobs string

func (d dirBlobs) Open(sum string) (*os.File, error) {
	if len(sum) != 64 || strings.ContainsAny(sum, "/.") {
		return nil, errdefs.NotFound("no blob")
	}
	return os.Open(filepath.Join(string(d), sum))
}

func newRepo(t *testing.T, db *store.DB, dataDir string, now func() time.Time) *Repository {
	t.Helper()
	r, err := New(Config{DataDir: dataDir, DB: db, Blobs: dirBlobs(t.TempDir()), Now: now})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func model(name, version string) Target {
	c, _ := artifact.EncodeTargetCustom(artifact.Custom{Kind: "model", Name: name, Version: version, Manifest: &artifact.ModelManifest{Framework: "onnx", Metrics: map[string]float64{"f1": 0.5}}})
	return Target{Path: artifact.TargetPath("model", name, version, "m.onnx"), SHA256: strings.Repeat("ab", 32), Length: 3, Custom: c}
}

func TestOnlineKeysArePrivateFiles(t *testing.T) {
	dir := t.TempDir()
	newRepo(t, storetest.SQLite(t), dir, nil)
	ents, err := os.ReadDir(filepath.Join(dir, "tuf", "keys"))
	if err != nil || len(ents) != 3 {
		t.Fatalf("key dir has %d entries (%v), want snapshot, timestamp, publisher", len(ents), err)
	}
	for _, e := range ents {
		fi, _ := e.Info()
		if fi.Mode().Perm() != 0o600 {
			t.Errorf("%s mode %v, want 0600", e.Name(), fi.Mode().Perm())
		}
	}
}

func TestPublishBeforeInitIsUnavailable(t *testing.T) {
	r := newRepo(t, storetest.SQLite(t), t.TempDir(), nil)
	err := r.AddTarget(context.Background(), model("a", "1"), nil)
	if !errors.Is(err, errdefs.ErrUnavailable) {
		t.Fatalf("AddTarget before init = %v, want ErrUnavailable", err)
	}
	if _, err := r.TrustAnchor(context.Background()); !errors.Is(err, ErrNotInitialized) {
		t.Fatalf("TrustAnchor before init = %v, want ErrNotInitialized", err)
	}
}

func TestImportAndPublishOnBothEngines(t *testing.T) {
	storetest.ForEachEngine(t, func(t *testing.T, db *store.DB) {
		ctx := context.Background()
		r := newRepo(t, db, t.TempDir(), nil)
		if err := r.InitDev(ctx); err != nil {
			t.Fatal(err)
		}
		if err := r.AddTarget(ctx, model("a", "1"), nil); err != nil {
			t.Fatal(err)
		}
		err := r.AddTarget(ctx, model("a", "1"), nil)
		if !errors.Is(err, errdefs.ErrConflict) {
			t.Fatalf("AddTarget(duplicate) = %v, want ErrConflict", err)
		}
		info, err := r.Trust(ctx)
		if err != nil {
			t.Fatal(err)
		}
		got := map[string]int64{}
		for _, ri := range info.Roles {
			got[ri.Role] = ri.Version
		}
		want := map[string]int64{"root": 1, "targets": 1, "publisher": 2, "snapshot": 2, "timestamp": 2}
		for k, v := range want {
			if got[k] != v {
				t.Errorf("Trust() %s version = %d, want %d (all: %v)", k, got[k], v, got)
			}
		}
		// The mirror on disk has consistent-snapshot names.
		for _, f := range []string{"1.root.json", "1.targets.json", "2.publisher.json", "2.snapshot.json", "timestamp.json"} {
			if _, err := os.Stat(filepath.Join(r.repoDir, f)); err != nil {
				t.Errorf("mirror %s: %v", f, err)
			}
		}
	})
}

// Two replicas (two Repository values over one database) publishing at
// once agree on one linear history.
func TestReplicasAgreeOnVersions(t *testing.T) {
	storetest.ForEachEngine(t, func(t *testing.T, db *store.DB) {
		ctx := context.Background()
		dir := t.TempDir()
		r1 := newRepo(t, db, dir, nil)
		if err := r1.InitDev(ctx); err != nil {
			t.Fatal(err)
		}
		r2 := newRepo(t, db, dir, nil) // same key directory, like a copied one
		var wg sync.WaitGroup
		errs := make(chan error, 10)
		for i := range 10 {
			r := r1
			if i%2 == 1 {
				r = r2
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				errs <- r.AddTarget(ctx, model("a", string(rune('a'+i))), nil)
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			if err != nil {
				t.Fatal(err)
			}
		}
		d, err := db.TUFDoc(ctx, "publisher", 0)
		if err != nil {
			t.Fatal(err)
		}
		p, _ := metadata.Targets().FromBytes(d.Body)
		if len(p.Signed.Targets) != 10 || p.Signed.Version != 11 {
			t.Fatalf("publisher v%d with %d targets, want v11 with 10", p.Signed.Version, len(p.Signed.Targets))
		}
	})
}

func TestImportValidation(t *testing.T) {
	ctx := context.Background()
	db := storetest.SQLite(t)
	dir := t.TempDir()
	r := newRepo(t, db, dir, nil)
	online, err := r.OnlineKeys(ctx)
	if err != nil {
		t.Fatal(err)
	}
	cdir := t.TempDir()
	if _, err := ceremony.Init(cdir, ceremony.InitOptions{RootKeys: 2, RootThreshold: 2, Online: online, Now: time.Now()}); err != nil {
		t.Fatal(err)
	}
	roots, targets, err := ceremony.Bundle(cdir)
	if err != nil {
		t.Fatal(err)
	}
	// Targets alone, before any root: refused.
	if _, err := r.Import(ctx, ImportRequest{Targets: targets}, "user:admin"); !errors.Is(err, errdefs.ErrInvalid) {
		t.Fatalf("Import(targets only, no root) = %v, want ErrInvalid", err)
	}
	// A root whose online keys are not this server's: refused.
	otherDir := t.TempDir()
	other := newRepo(t, storetest.SQLite(t), t.TempDir(), nil)
	otherOnline, _ := other.OnlineKeys(ctx)
	if _, err := ceremony.Init(otherDir, ceremony.InitOptions{Online: otherOnline, Now: time.Now()}); err != nil {
		t.Fatal(err)
	}
	oroots, otargets, _ := ceremony.Bundle(otherDir)
	if _, err := r.Import(ctx, ImportRequest{Roots: raw(oroots), Targets: otargets}, "user:admin"); !errors.Is(err, errdefs.ErrInvalid) {
		t.Fatalf("Import(foreign online keys) = %v, want ErrInvalid", err)
	}
	// A root missing one of its two required signatures: refused.
	weak, _ := metadata.Root().FromBytes(roots[0])
	weak.Signatures = weak.Signatures[:1]
	wb, _ := weak.ToBytes(false)
	if _, err := r.Import(ctx, ImportRequest{Roots: raw([][]byte{wb}), Targets: targets}, "user:admin"); !errors.Is(err, errdefs.ErrInvalid) {
		t.Fatalf("Import(root under threshold) = %v, want ErrInvalid", err)
	}
	// Nothing stored so far.
	if _, err := r.TrustAnchor(ctx); !errors.Is(err, ErrNotInitialized) {
		t.Fatalf("after refused imports TrustAnchor = %v, want ErrNotInitialized", err)
	}
	// The real thing.
	res, err := r.Import(ctx, ImportRequest{Roots: raw(roots), Targets: targets}, "user:admin")
	if err != nil || res.RootVersion != 1 || res.TargetsVersion != 1 {
		t.Fatalf("Import = %+v, %v; want root 1, targets 1", res, err)
	}
	// The same again: nothing new.
	if _, err := r.Import(ctx, ImportRequest{Roots: raw(roots), Targets: targets}, "user:admin"); !errors.Is(err, errdefs.ErrConflict) {
		t.Fatalf("Import(same again) = %v, want ErrConflict", err)
	}
	// A root signed only by the new keys (a compromised server forging a
	// rotation) is refused: it must carry the old threshold.
	forged := metadata.Root(time.Now().Add(time.Hour))
	for _, role := range []string{"snapshot", "timestamp", "targets"} {
		cur, _ := metadata.Root().FromBytes(roots[0])
		for _, id := range cur.Signed.Roles[role].KeyIDs {
			_ = forged.Signed.AddKey(cur.Signed.Keys[id], role)
		}
	}
	nk, _ := ceremony.NewKey("root")
	_ = forged.Signed.AddKey(nk.Public(), "root")
	forged.Signed.Version = 2
	_ = ceremony.Sign(forged, nk)
	fb, _ := forged.ToBytes(false)
	if _, err := r.Import(ctx, ImportRequest{Roots: raw([][]byte{fb})}, "user:admin"); !errors.Is(err, errdefs.ErrInvalid) {
		t.Fatalf("Import(root not signed by the old keys) = %v, want ErrInvalid", err)
	}
	// An older targets version after a newer one: refused.
	if _, err := ceremony.RotatePublisher(cdir, online.Publisher, time.Now()); err != nil {
		t.Fatal(err)
	}
	_, t2, _ := ceremony.Bundle(cdir)
	if _, err := r.Import(ctx, ImportRequest{Targets: t2}, "user:admin"); err != nil {
		t.Fatalf("Import(targets v2) = %v", err)
	}
	if _, err := r.Import(ctx, ImportRequest{Targets: targets}, "user:admin"); !errors.Is(err, errdefs.ErrInvalid) {
		t.Fatalf("Import(targets v1 after v2) = %v, want ErrInvalid", err)
	}
	// Every accepted import left an audit event.
	evs, _, err := db.ListAudit(ctx, store.AuditFilter{}, store.Page{})
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, e := range evs {
		if e.Type == "trust.imported" {
			n++
		}
	}
	if n != 2 {
		t.Fatalf("%d trust.imported audit events, want 2", n)
	}
}

func raw(bs [][]byte) []json.RawMessage {
	out := make([]json.RawMessage, len(bs))
	for i, b := range bs {
		out[i] = b
	}
	return out
}

// Run re-signs the timestamp every hour (fake time in a synctest bubble).
func TestRunResignsTimestampHourly(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		db := storetest.SQLiteWith(t, storetest.Options{Now: time.Now})
		r := newRepo(t, db, t.TempDir(), time.Now)
		r.interval = 10 * time.Minute
		if err := r.InitDev(ctx); err != nil {
			t.Fatal(err)
		}
		done := make(chan error)
		go func() { done <- r.Run(ctx) }()
		time.Sleep(3*time.Hour + time.Minute)
		synctest.Wait()
		ts, err := db.TUFDoc(ctx, "timestamp", 0)
		if err != nil {
			t.Fatal(err)
		}
		if ts.Version != 4 {
			t.Errorf("after 3h the timestamp is v%d, want v4 (initial + 3 hourly)", ts.Version)
		}
		cancel()
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	})
}

type testClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *testClock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *testClock) add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// Maintain renews publisher and snapshot once half their life has passed,
// and keeps every role valid as time goes on.
func TestMaintainRenewsBeforeExpiry(t *testing.T) {
	ctx := context.Background()
	clk := &testClock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	db := storetest.SQLiteWith(t, storetest.Options{Now: clk.Now})
	r := newRepo(t, db, t.TempDir(), clk.Now)
	if err := r.InitDev(ctx); err != nil {
		t.Fatal(err)
	}
	versions := func() map[string]int64 {
		m := map[string]int64{}
		for _, role := range []string{"publisher", "snapshot", "timestamp"} {
			d, err := db.TUFDoc(ctx, role, 0)
			if err != nil {
				t.Fatal(err)
			}
			if !d.Expires.After(clk.Now()) {
				t.Fatalf("%s v%d expired at %v (now %v)", role, d.Version, d.Expires, clk.Now())
			}
			m[role] = d.Version
		}
		return m
	}
	clk.add(30 * time.Minute)
	if err := r.Maintain(ctx); err != nil {
		t.Fatal(err)
	}
	if v := versions(); v["timestamp"] != 1 {
		t.Fatalf("after 30 min: %v, want nothing re-signed", v)
	}
	clk.add(31 * time.Minute)
	if err := r.Maintain(ctx); err != nil {
		t.Fatal(err)
	}
	if v := versions(); v["timestamp"] != 2 || v["snapshot"] != 1 {
		t.Fatalf("after 61 min: %v, want only the timestamp re-signed", v)
	}
	for range 50 {
		clk.add(23 * time.Hour)
		if err := r.Maintain(ctx); err != nil {
			t.Fatal(err)
		}
		versions()
	}
	if v := versions(); v["publisher"] < 2 || v["snapshot"] < 10 {
		t.Fatalf("after 48 days: %v, want publisher and snapshot renewed", v)
	}
}

func TestHandlerServesConsistentNames(t *testing.T) {
	ctx := context.Background()
	blobDir := t.TempDir()
	r, err := New(Config{DataDir: t.TempDir(), DB: storetest.SQLite(t), Blobs: dirBlobs(blobDir)})
	if err != nil {
		t.Fatal(err)
	}
	if err := r.InitDev(ctx); err != nil {
		t.Fatal(err)
	}
	sum := strings.Repeat("cd", 32)
	if err := os.WriteFile(filepath.Join(blobDir, sum), []byte("abc"), 0o644); err != nil {
		t.Fatal(err)
	}
	h := r.Handler()
	for path, want := range map[string]int{
		"/metadata/timestamp.json":                                            200,
		"/metadata/1.root.json":                                               200,
		"/metadata/1.targets.json":                                            200,
		"/metadata/1.publisher.json":                                          200,
		"/metadata/1.snapshot.json":                                           200,
		"/metadata/2.root.json":                                               404,
		"/metadata/root.json":                                                 404,
		"/metadata/1.evil.json":                                               404,
		"/targets/artifacts/model/a/1/" + sum + ".m.onnx":                     200,
		"/targets/artifacts/model/a/1/m.onnx":                                 404,
		"/targets/artifacts/model/Bad!/1/" + sum + ".m.onnx":                  404,
		"/targets/artifacts/model/a/1/" + strings.Repeat("0", 64) + ".m.onnx": 404,
	} {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
		if rec.Code != want {
			t.Errorf("GET %s = %d, want %d", path, rec.Code, want)
		}
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/targets/artifacts/model/a/1/"+sum+".m.onnx", nil))
	if !bytes.Equal(rec.Body.Bytes(), []byte("abc")) {
		t.Errorf("target body = %q, want abc", rec.Body.Bytes())
	}
}
