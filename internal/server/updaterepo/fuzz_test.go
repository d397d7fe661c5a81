package updaterepo

import (
	"context"
	"errors"
	"testing"

	"github.com/meshanics/meshanics/internal/errdefs"
	"github.com/meshanics/meshanics/internal/server/store/storetest"
)

// FuzzImport feeds untrusted bytes through the import parser and, when
// they parse, through validation against an initialized repository: it
// must never panic, and anything it accepts must leave a trust anchor
// that is still valid root metadata (here: nothing random is accepted).
func FuzzImport(f *testing.F) {
	f.Add([]byte(`{"roots":[],"targets":{}}`))
	f.Add([]byte(`{"roots":[{"signed":{"_type":"root","version":2},"signatures":[]}]}`))
	f.Add([]byte(`{"targets":{"signed":{"_type":"targets","version":9,"delegations":{"roles":[{"name":"publisher","paths":["*"]}]}},"signatures":[]}}`))
	f.Add([]byte(`{"roots":[null,1,"x"]}`))
	f.Add([]byte(`{}`))
	db := storetest.SQLite(f)
	r, err := New(Config{DataDir: f.TempDir(), DB: db, Blobs: dirBlobs(f.TempDir())})
	if err != nil {
		f.Fatal(err)
	}
	ctx := context.Background()
	if err := r.InitDev(ctx); err != nil {
		f.Fatal(err)
	}
	anchor, _ := r.TrustAnchor(ctx)
	f.Fuzz(func(t *testing.T, data []byte) {
		req, err := ParseImport(data)
		if err != nil {
			if !errors.Is(err, errdefs.ErrInvalid) {
				t.Fatalf("ParseImport error %v is not ErrInvalid", err)
			}
			return
		}
		if _, err := r.Import(ctx, req, "user:fuzz"); err == nil {
			t.Fatalf("Import accepted fuzzed metadata %q", data)
		}
		got, _ := r.TrustAnchor(ctx)
		if string(got) != string(anchor) {
			t.Fatal("a refused import changed the trust anchor")
		}
	})
}
