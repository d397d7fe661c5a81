package updaterepo

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/theupdateframework/go-tuf/v2/metadata"

	"github.com/meshanics/meshanics/internal/ceremony"
	"github.com/meshanics/meshanics/internal/errdefs"
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

// A root or targets that asks for more than one signature on an online
// role is refused: the server signs each with one key, so every device
// would refuse what it serves.
func TestImportRefusesOnlineThresholdAboveOne(t *testing.T) {
	ctx := context.Background()
	r := newRepo(t, storetest.SQLite(t), t.TempDir(), nil)
	online, err := r.OnlineKeys(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, role := range []string{ceremony.RoleSnapshot, ceremony.RoleTimestamp, ceremony.RolePublisher} {
		t.Run(role, func(t *testing.T) {
			cdir := t.TempDir()
			st, err := ceremony.Init(cdir, ceremony.InitOptions{Online: online, Now: time.Now()})
			if err != nil {
				t.Fatal(err)
			}
			extra, err := ceremony.NewKey(role)
			if err != nil {
				t.Fatal(err)
			}
			var rootKeys, targetsKeys []*ceremony.PrivateKey
			for _, k := range st.Keys {
				if k.Role == ceremony.RoleRoot {
					rootKeys = append(rootKeys, k)
				} else {
					targetsKeys = append(targetsKeys, k)
				}
			}
			if role == ceremony.RolePublisher {
				d := st.Targets.Signed.Delegations
				d.Keys[extra.ID] = extra.Public()
				d.Roles[0].KeyIDs = append(d.Roles[0].KeyIDs, extra.ID)
				d.Roles[0].Threshold = 2
			} else {
				if err := st.Root.Signed.AddKey(extra.Public(), role); err != nil {
					t.Fatal(err)
				}
				st.Root.Signed.Roles[role].Threshold = 2
			}
			if err := ceremony.Sign(st.Root, rootKeys...); err != nil {
				t.Fatal(err)
			}
			if err := ceremony.Sign(st.Targets, targetsKeys...); err != nil {
				t.Fatal(err)
			}
			rb, _ := st.Root.ToBytes(false)
			tb, _ := st.Targets.ToBytes(false)
			_, err = r.Import(ctx, ImportRequest{Roots: raw([][]byte{rb}), Targets: tb}, "user:admin")
			if !errors.Is(err, errdefs.ErrInvalid) || !strings.Contains(err.Error(), "threshold 1") {
				t.Fatalf("Import(%s threshold 2) = %v, want ErrInvalid about the threshold", role, err)
			}
			if _, err := r.TrustAnchor(ctx); !errors.Is(err, ErrNotInitialized) {
				t.Fatalf("a refused import left a trust anchor: %v", err)
			}
		})
	}
}
