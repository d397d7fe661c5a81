package tufclient

import (
	"bytes"
	"errors"
	"os"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/theupdateframework/go-tuf/v2/metadata"
	"google.golang.org/protobuf/proto"

	"github.com/meshanics/meshanics/internal/ceremony"
	"github.com/meshanics/meshanics/internal/errdefs"
	devicev1 "github.com/meshanics/meshanics/proto/meshanics/device/v1"
)

// The attack suite of issue 3: each case runs against the real repository
// over a real mutual-TLS listener, and in each the device refuses and
// writes nothing into its artifact area.

func targetURL(a *devicev1.Artifact) string {
	dir, base := path.Split(a.GetTargetPath())
	return "/targets/" + dir + a.GetSha256() + "." + base
}

func TestFetchVerifiedTarget(t *testing.T) {
	e := newEnv(t)
	data := bytes.Repeat([]byte("model"), 1000)
	a := e.publish("detector", "1.0.0", data)
	custom, err := e.client.FetchFile(e.ctx, a, filepath.Join(e.artDir, "m"))
	if err != nil {
		t.Fatalf("FetchFile = %v, want nil", err)
	}
	got, _ := os.ReadFile(filepath.Join(e.artDir, "m"))
	if !bytes.Equal(got, data) || custom.Manifest == nil || custom.Manifest.Framework != "onnx" {
		t.Fatalf("FetchFile wrote %d bytes, custom %+v; want the published %d bytes and the onnx manifest", len(got), custom, len(data))
	}
	var buf bytes.Buffer
	if _, err := e.client.Fetch(e.ctx, a, &buf); err != nil || !bytes.Equal(buf.Bytes(), data) {
		t.Fatalf("Fetch = %v (%d bytes), want the published bytes", err, buf.Len())
	}
}

func TestAttackTamperedTarget(t *testing.T) {
	e := newEnv(t)
	data := bytes.Repeat([]byte("A"), 4096)
	a := e.publish("detector", "1.0.0", data)
	evil := bytes.Repeat([]byte("B"), len(data))
	e.tamper.set(targetURL(a), evil)
	e.mustRefuse(a, ErrVerification, "does not match the signed")
}

func TestAttackEndlessData(t *testing.T) {
	e := newEnv(t)
	data := bytes.Repeat([]byte("A"), 4096)
	a := e.publish("detector", "1.0.0", data)
	e.tamper.set(targetURL(a), append(data, bytes.Repeat([]byte("A"), 1<<20)...))
	e.mustRefuse(a, ErrVerification, "endless data")
}

func TestAttackEndlessMetadata(t *testing.T) {
	e := newEnv(t)
	a := e.publish("detector", "1.0.0", []byte("x"))
	e.tamper.set("/metadata/timestamp.json", bytes.Repeat([]byte(" "), 1<<20))
	e.mustRefuse(a, ErrVerification, &metadata.ErrDownloadLengthMismatch{})
}

func TestAttackRollbackTimestamp(t *testing.T) {
	e := newEnv(t)
	a1 := e.publish("detector", "1.0.0", []byte("one"))
	oldTS := e.doc(ceremony.RoleTimestamp, 0)
	a2 := e.publish("detector", "2.0.0", []byte("two"))
	if err := e.fetch(a2); err != nil { // device now trusts the newer timestamp
		t.Fatal(err)
	}
	os.Remove(filepath.Join(e.artDir, a2.Name+"-"+a2.Version))
	e.tamper.set("/metadata/timestamp.json", oldTS)
	e.mustRefuse(a1, ErrVerification, &metadata.ErrBadVersionNumber{})
}

func TestAttackRollbackSnapshot(t *testing.T) {
	e := newEnv(t)
	e.publish("detector", "1.0.0", []byte("one"))
	oldSnap := e.doc(ceremony.RoleSnapshot, 0)
	a2 := e.publish("detector", "2.0.0", []byte("two"))
	if err := e.fetch(a2); err != nil {
		t.Fatal(err)
	}
	os.Remove(filepath.Join(e.artDir, a2.Name+"-"+a2.Version))
	// A server holding the timestamp key points a fresh timestamp at the
	// older snapshot.
	old, _ := metadata.Snapshot().FromBytes(oldSnap)
	cur, _ := metadata.Timestamp().FromBytes(e.doc(ceremony.RoleTimestamp, 0))
	ts := metadata.Timestamp(e.clock.Now().Add(time.Hour))
	ts.Signed.Version = cur.Signed.Version + 1
	ts.Signed.Meta["snapshot.json"] = metaOf(old.Signed.Version, oldSnap)
	e.tamper.set("/metadata/timestamp.json", signed(t, ts, e.onlineKey(ceremony.RoleTimestamp)))
	e.mustRefuse(a2, ErrVerification, &metadata.ErrBadVersionNumber{})
}

func TestAttackRollbackTargets(t *testing.T) {
	e := newEnv(t)
	e.publish("detector", "1.0.0", []byte("one"))
	oldPub := e.doc(ceremony.RolePublisher, 0)
	a2 := e.publish("detector", "2.0.0", []byte("two"))
	if err := e.fetch(a2); err != nil {
		t.Fatal(err)
	}
	os.Remove(filepath.Join(e.artDir, a2.Name+"-"+a2.Version))
	// A server holding the snapshot and timestamp keys signs a new
	// snapshot naming the older publisher metadata.
	op, _ := metadata.Targets().FromBytes(oldPub)
	curSnap, _ := metadata.Snapshot().FromBytes(e.doc(ceremony.RoleSnapshot, 0))
	snap := metadata.Snapshot(e.clock.Now().Add(time.Hour))
	snap.Signed.Version = curSnap.Signed.Version + 1
	snap.Signed.Meta = map[string]*metadata.MetaFiles{
		"targets.json":   curSnap.Signed.Meta["targets.json"],
		"publisher.json": metaOf(op.Signed.Version, oldPub),
	}
	snapRaw := signed(t, snap, e.onlineKey(ceremony.RoleSnapshot))
	curTS, _ := metadata.Timestamp().FromBytes(e.doc(ceremony.RoleTimestamp, 0))
	ts := metadata.Timestamp(e.clock.Now().Add(time.Hour))
	ts.Signed.Version = curTS.Signed.Version + 1
	ts.Signed.Meta["snapshot.json"] = metaOf(snap.Signed.Version, snapRaw)
	e.tamper.set("/metadata/"+strconv.FormatInt(snap.Signed.Version, 10)+".snapshot.json", snapRaw)
	e.tamper.set("/metadata/timestamp.json", signed(t, ts, e.onlineKey(ceremony.RoleTimestamp)))
	e.mustRefuse(a2, ErrVerification, &metadata.ErrBadVersionNumber{})
}

func TestAttackFreeze(t *testing.T) {
	e := newEnv(t)
	a := e.publish("detector", "1.0.0", []byte("one"))
	// The server stops re-signing; a day later the device refuses the
	// stale timestamp with an "expired" error it can report.
	e.clock.Advance(25 * time.Hour)
	e.mustRefuse(a, errdefs.ErrExpired, "timestamp.json is expired")
}

func TestAttackWrongKey(t *testing.T) {
	e := newEnv(t)
	a := e.publish("detector", "1.0.0", []byte("one"))
	rogue, err := ceremony.NewKey(ceremony.RoleTimestamp)
	if err != nil {
		t.Fatal(err)
	}
	cur, _ := metadata.Timestamp().FromBytes(e.doc(ceremony.RoleTimestamp, 0))
	ts := metadata.Timestamp(e.clock.Now().Add(time.Hour))
	ts.Signed.Version = cur.Signed.Version + 1
	ts.Signed.Meta = cur.Signed.Meta
	e.tamper.set("/metadata/timestamp.json", signed(t, ts, rogue))
	e.mustRefuse(a, ErrVerification, &metadata.ErrUnsignedMetadata{})
}

func TestAttackMixAndMatch(t *testing.T) {
	e := newEnv(t)
	a1 := e.publish("detector", "1.0.0", []byte("one"))
	oldPub := e.doc(ceremony.RolePublisher, 0)
	e.publish("detector", "2.0.0", []byte("two"))
	cur, _ := metadata.Targets().FromBytes(e.doc(ceremony.RolePublisher, 0))
	// The current snapshot names publisher version N; serve version N-1's
	// (validly signed) document under that name.
	e.tamper.set("/metadata/"+strconv.FormatInt(cur.Signed.Version, 10)+".publisher.json", oldPub)
	e.mustRefuse(a1, ErrVerification, &metadata.ErrLengthOrHashMismatch{})
}

func TestAttackPublisherOutsideDelegation(t *testing.T) {
	e := newEnv(t)
	legit := e.publish("detector", "1.0.0", []byte("one"))
	// A compromised server (publisher, snapshot, timestamp keys) signs a
	// target outside artifacts/*.
	evil := []byte("#!/bin/sh\nrm -rf /\n")
	sum, n, err := e.blobs.Put(bytes.NewReader(evil), 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	pub, _ := metadata.Targets().FromBytes(e.doc(ceremony.RolePublisher, 0))
	const evilPath = "firmware/boot/x/1/init.sh"
	tf, _ := metadata.TargetFile().FromBytes(evilPath, evil, "sha256")
	pub.Signed.Targets[evilPath] = tf
	pub.Signed.Version++
	pubRaw := signed(t, pub, e.onlineKey(ceremony.RolePublisher))
	curSnap, _ := metadata.Snapshot().FromBytes(e.doc(ceremony.RoleSnapshot, 0))
	snap := metadata.Snapshot(e.clock.Now().Add(time.Hour))
	snap.Signed.Version = curSnap.Signed.Version + 1
	snap.Signed.Meta = map[string]*metadata.MetaFiles{
		"targets.json":   curSnap.Signed.Meta["targets.json"],
		"publisher.json": metaOf(pub.Signed.Version, pubRaw),
	}
	snapRaw := signed(t, snap, e.onlineKey(ceremony.RoleSnapshot))
	curTS, _ := metadata.Timestamp().FromBytes(e.doc(ceremony.RoleTimestamp, 0))
	ts := metadata.Timestamp(e.clock.Now().Add(time.Hour))
	ts.Signed.Version = curTS.Signed.Version + 1
	ts.Signed.Meta["snapshot.json"] = metaOf(snap.Signed.Version, snapRaw)
	e.tamper.set("/metadata/"+strconv.FormatInt(pub.Signed.Version, 10)+".publisher.json", pubRaw)
	e.tamper.set("/metadata/"+strconv.FormatInt(snap.Signed.Version, 10)+".snapshot.json", snapRaw)
	e.tamper.set("/metadata/timestamp.json", signed(t, ts, e.onlineKey(ceremony.RoleTimestamp)))

	// The forged chain itself verifies (the server holds these keys): the
	// device accepts the new publisher version and still resolves the
	// legitimate target through it...
	if _, err := e.client.targetInfo(e.ctx, legit.TargetPath); err != nil {
		t.Fatalf("the forged but validly signed metadata was refused (%v); the test would prove nothing", err)
	}
	cached, err := metadata.Targets().FromFile(filepath.Join(e.devDir, "tuf", "metadata", "publisher.json"))
	if err != nil || cached.Signed.Version != pub.Signed.Version {
		t.Fatalf("device trusts publisher %v (%v), want the forged version %d", cached, err, pub.Signed.Version)
	}
	// ...but go-tuf's delegation walk does not find the forged target (the
	// terminating delegation does not cover the path) even though the
	// publisher signed it...
	if _, err := e.client.targetInfo(e.ctx, evilPath); err == nil || !strings.Contains(err.Error(), "not found") {
		t.Fatalf("targetInfo(%s) = %v, want target not found (outside the publisher's delegation)", evilPath, err)
	}
	// ...and an assignment naming it is refused before any download.
	e.mustRefuse(&devicev1.Artifact{Kind: "model", Name: "x", Version: "1", TargetPath: evilPath, Sha256: sum, Length: n}, ErrVerification, "target path")
}

func TestAttackAssignmentDigestDisagrees(t *testing.T) {
	e := newEnv(t)
	a := e.publish("detector", "1.0.0", []byte("one"))
	bad := proto.Clone(a).(*devicev1.Artifact)
	bad.Sha256 = hexSum([]byte("something else"))
	e.mustRefuse(bad, ErrVerification, "assignment says")
	short := proto.Clone(a).(*devicev1.Artifact)
	short.Length--
	e.mustRefuse(short, ErrVerification, "assignment says")
}

func TestExpiredMetadataIsReportedNotFatal(t *testing.T) {
	e := newEnv(t)
	a := e.publish("detector", "1.0.0", []byte("one"))
	e.clock.Advance(25 * time.Hour)
	err := e.fetch(a)
	if !errors.Is(err, errdefs.ErrExpired) {
		t.Fatalf("fetch with a frozen repository = %v, want ErrExpired", err)
	}
	// The server catches up (re-signs); the same client recovers.
	if err := e.repo.Maintain(e.ctx); err != nil {
		t.Fatal(err)
	}
	if err := e.fetch(a); err != nil {
		t.Fatalf("fetch after the repository re-signed = %v, want nil", err)
	}
}
