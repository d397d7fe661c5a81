package tufclient

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/theupdateframework/go-tuf/v2/metadata"

	"github.com/meshanics/meshanics/internal/ceremony"
	"github.com/meshanics/meshanics/internal/server/store"
)

// rotateRoot runs the offline ceremony's rotate-root on the dev ceremony
// directory and imports the result, as an operator would.
func (e *env) rotateRoot(opts ceremony.RotateRootOptions) {
	e.t.Helper()
	opts.Now = e.clock.Now()
	if _, err := ceremony.RotateRoot(e.repo.DevCeremonyDir(), opts); err != nil {
		e.t.Fatal(err)
	}
	if _, err := e.repo.ImportDir(e.ctx, e.repo.DevCeremonyDir(), store.ActorSystem); err != nil {
		e.t.Fatal(err)
	}
}

func cachedRootVersion(t *testing.T, e *env) int64 {
	t.Helper()
	r, err := metadata.Root().FromFile(filepath.Join(e.devDir, "tuf", "metadata", "root.json"))
	if err != nil {
		t.Fatal(err)
	}
	return r.Signed.Version
}

func TestRootRotatedTwiceClientFollows(t *testing.T) {
	e := newEnv(t)
	a1 := e.publish("detector", "1.0.0", []byte("one"))
	if err := e.fetch(a1); err != nil {
		t.Fatal(err)
	}
	e.rotateRoot(ceremony.RotateRootOptions{RootKeys: 3, RootThreshold: 2})
	e.rotateRoot(ceremony.RotateRootOptions{RootKeys: 2, RootThreshold: 2})
	a2 := e.publish("detector", "2.0.0", []byte("two"))
	if err := e.fetch(a2); err != nil {
		t.Fatalf("fetch after two root rotations = %v, want nil", err)
	}
	if v := cachedRootVersion(t, e); v != 3 {
		t.Fatalf("device trusts root version %d, want 3", v)
	}
	// A device enrolled long ago, pinning root v1 with an empty cache,
	// walks the chain too.
	if err := os.RemoveAll(filepath.Join(e.devDir, "tuf")); err != nil {
		t.Fatal(err)
	}
	fresh := e.newClient(e.rootJSON)
	if _, err := fresh.FetchFile(e.ctx, a1, filepath.Join(e.artDir, "again")); err != nil {
		t.Fatalf("fresh client from root v1 = %v, want nil", err)
	}
	if v := cachedRootVersion(t, e); v != 3 {
		t.Fatalf("fresh device trusts root version %d, want 3", v)
	}
}

func TestRotatedOnlineKeysReachDevices(t *testing.T) {
	e := newEnv(t)
	a1 := e.publish("detector", "1.0.0", []byte("one"))
	if err := e.fetch(a1); err != nil {
		t.Fatal(err)
	}
	// Publisher key compromise: the server makes a new key, the ceremony
	// re-delegates to it, the server imports; old signatures no longer count.
	pub, err := e.repo.RotateOnlineKey(e.ctx, ceremony.RolePublisher, store.ActorSystem)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ceremony.RotatePublisher(e.repo.DevCeremonyDir(), pub, e.clock.Now()); err != nil {
		t.Fatal(err)
	}
	if _, err := e.repo.ImportDir(e.ctx, e.repo.DevCeremonyDir(), store.ActorSystem); err != nil {
		t.Fatal(err)
	}
	a2 := e.publish("detector", "2.0.0", []byte("two"))
	if err := e.fetch(a2); err != nil {
		t.Fatalf("fetch after publisher rotation = %v, want nil", err)
	}
	pm, err := metadata.Targets().FromBytes(e.doc(ceremony.RolePublisher, 0))
	if err != nil {
		t.Fatal(err)
	}
	if len(pm.Signatures) != 1 || pm.Signatures[0].KeyID != ceremony.KeyID(pub) {
		t.Fatalf("publisher signed by %+v, want only the rotated key %s", pm.Signatures, ceremony.KeyID(pub))
	}
}

// Snapshot and timestamp keys are replaced through a root rotation (they
// are named by root): a device that trusted metadata signed by the old
// keys follows, and a timestamp signed by the old key is refused after.
func TestRotatedSnapshotAndTimestampKeysReachDevices(t *testing.T) {
	e := newEnv(t)
	a1 := e.publish("detector", "1.0.0", []byte("one"))
	if err := e.fetch(a1); err != nil {
		t.Fatal(err)
	}
	oldTS := e.onlineKey(ceremony.RoleTimestamp)
	for _, role := range []string{ceremony.RoleSnapshot, ceremony.RoleTimestamp} {
		if _, err := e.repo.RotateOnlineKey(e.ctx, role, store.ActorSystem); err != nil {
			t.Fatal(err)
		}
	}
	online, err := e.repo.OnlineKeys(e.ctx)
	if err != nil {
		t.Fatal(err)
	}
	if ceremony.KeyID(online.Timestamp) == oldTS.ID {
		t.Fatal("online keys still offer the old timestamp key")
	}
	e.rotateRoot(ceremony.RotateRootOptions{Online: &online})
	a2 := e.publish("detector", "2.0.0", []byte("two"))
	if err := e.fetch(a2); err != nil {
		t.Fatalf("fetch after the snapshot and timestamp keys were rotated = %v, want nil", err)
	}
	ts, err := metadata.Timestamp().FromBytes(e.doc(ceremony.RoleTimestamp, 0))
	if err != nil || len(ts.Signatures) != 1 || ts.Signatures[0].KeyID != ceremony.KeyID(online.Timestamp) {
		t.Fatalf("timestamp signed by %+v (%v), want only the new key", ts.Signatures, err)
	}
	// The old timestamp key (a compromised server's) no longer counts.
	forged := metadata.Timestamp(e.clock.Now().Add(time.Hour))
	forged.Signed.Version = ts.Signed.Version + 1
	forged.Signed.Meta = ts.Signed.Meta
	e.tamper.set("/metadata/timestamp.json", signed(t, forged, oldTS))
	for _, a := range []string{a1.Name + "-" + a1.Version, a2.Name + "-" + a2.Version} {
		os.Remove(filepath.Join(e.artDir, a))
	}
	e.mustRefuse(a2, ErrVerification, &metadata.ErrUnsignedMetadata{})
}
