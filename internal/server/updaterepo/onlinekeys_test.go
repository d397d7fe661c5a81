package updaterepo

import (
	"context"
	"testing"
	"time"

	"github.com/theupdateframework/go-tuf/v2/metadata"

	"github.com/meshanics/meshanics/internal/ceremony"
	"github.com/meshanics/meshanics/internal/server/store"
	"github.com/meshanics/meshanics/internal/server/store/storetest"
)

// After a key rotation the ceremony re-delegates to the new key; the old
// one (perhaps compromised) stays on disk but must never be offered to a
// later ceremony again: online-keys offers the key in use, or a fresh one.
func TestOnlineKeysNeverOfferARotatedOutKey(t *testing.T) {
	storetest.ForEachEngine(t, func(t *testing.T, db *store.DB) {
		ctx := context.Background()
		r := newRepo(t, db, t.TempDir(), nil)
		v1, err := r.OnlineKeys(ctx)
		if err != nil {
			t.Fatal(err)
		}
		cdir := t.TempDir()
		if _, err := ceremony.Init(cdir, ceremony.InitOptions{Online: v1, Now: time.Now()}); err != nil {
			t.Fatal(err)
		}
		if _, err := r.ImportDir(ctx, cdir, "user:admin"); err != nil {
			t.Fatal(err)
		}
		ids := func(o ceremony.OnlineKeys) [3]string {
			return [3]string{ceremony.KeyID(o.Snapshot), ceremony.KeyID(o.Timestamp), ceremony.KeyID(o.Publisher)}
		}
		if got, _ := r.OnlineKeys(ctx); ids(got) != ids(v1) {
			t.Fatalf("online keys after import = %v, want the ones in use %v", ids(got), ids(v1))
		}

		// Publisher compromise: a new key, re-delegated, imported.
		p2, err := r.RotateOnlineKey(ctx, ceremony.RolePublisher, "user:admin")
		if err != nil {
			t.Fatal(err)
		}
		offered, _ := r.OnlineKeys(ctx)
		if ceremony.KeyID(offered.Publisher) != ceremony.KeyID(p2) {
			t.Fatalf("online keys before the ceremony offer publisher %s, want the new %s", ceremony.KeyID(offered.Publisher), ceremony.KeyID(p2))
		}
		if _, err := ceremony.RotatePublisher(cdir, p2, time.Now()); err != nil {
			t.Fatal(err)
		}
		if _, err := r.ImportDir(ctx, cdir, "user:admin"); err != nil {
			t.Fatal(err)
		}
		after, _ := r.OnlineKeys(ctx)
		if got := ceremony.KeyID(after.Publisher); got != ceremony.KeyID(p2) {
			t.Fatalf("online keys after the publisher rotation offer %s (the rotated-out key is %s), want the new %s",
				got, ceremony.KeyID(v1.Publisher), ceremony.KeyID(p2))
		}

		// Timestamp rotation through rotate-root, then a root rotation
		// that reuses whatever online-keys offers: the old timestamp and
		// publisher keys stay out.
		ts2, err := r.RotateOnlineKey(ctx, ceremony.RoleTimestamp, "user:admin")
		if err != nil {
			t.Fatal(err)
		}
		o, _ := r.OnlineKeys(ctx)
		if _, err := ceremony.RotateRoot(cdir, ceremony.RotateRootOptions{Online: &o, Now: time.Now()}); err != nil {
			t.Fatal(err)
		}
		if _, err := r.ImportDir(ctx, cdir, "user:admin"); err != nil {
			t.Fatal(err)
		}
		o, _ = r.OnlineKeys(ctx)
		if _, err := ceremony.RotateRoot(cdir, ceremony.RotateRootOptions{Online: &o, Now: time.Now()}); err != nil {
			t.Fatal(err)
		}
		if _, err := r.ImportDir(ctx, cdir, "user:admin"); err != nil {
			t.Fatal(err)
		}
		st, err := ceremony.Load(cdir)
		if err != nil {
			t.Fatal(err)
		}
		want := [3]string{ceremony.KeyID(v1.Snapshot), ceremony.KeyID(ts2), ceremony.KeyID(p2)}
		got := [3]string{st.Root.Signed.Roles[metadata.SNAPSHOT].KeyIDs[0], st.Root.Signed.Roles[metadata.TIMESTAMP].KeyIDs[0], ceremony.PublisherKeyIDs(st.Targets)[0]}
		if got != want {
			t.Fatalf("after two root rotations the metadata names snapshot/timestamp/publisher %v, want %v", got, want)
		}
	})
}
