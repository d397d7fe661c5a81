package ceremony

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/theupdateframework/go-tuf/v2/metadata"
)

func onlineKeys(t *testing.T) OnlineKeys {
	t.Helper()
	var o OnlineKeys
	for _, p := range []struct {
		role string
		dst  **metadata.Key
	}{{RoleSnapshot, &o.Snapshot}, {RoleTimestamp, &o.Timestamp}, {RolePublisher, &o.Publisher}} {
		k, err := NewKey(p.role)
		if err != nil {
			t.Fatal(err)
		}
		*p.dst = k.Public()
	}
	return o
}

var now = time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)

func TestInitWritesPrivateKeysAndSignedMetadata(t *testing.T) {
	dir := t.TempDir()
	st, err := Init(dir, InitOptions{RootKeys: 3, RootThreshold: 2, Online: onlineKeys(t), Now: now})
	if err != nil {
		t.Fatal(err)
	}
	keys, err := LoadKeys(dir)
	if err != nil || len(keys) != 4 {
		t.Fatalf("LoadKeys = %d keys, %v; want 3 root + 1 targets", len(keys), err)
	}
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		if strings.HasSuffix(e.Name(), ".key") {
			fi, _ := e.Info()
			if fi.Mode().Perm() != 0o600 {
				t.Errorf("%s mode %v, want 0600", e.Name(), fi.Mode().Perm())
			}
		}
	}
	if err := st.Root.VerifyDelegate(RoleRoot, st.Root); err != nil {
		t.Errorf("root not signed by its threshold: %v", err)
	}
	if err := st.Root.VerifyDelegate(RoleTargets, st.Targets); err != nil {
		t.Errorf("targets not signed under root: %v", err)
	}
	if got := st.Root.Signed.Roles[RoleRoot].Threshold; got != 2 {
		t.Errorf("root threshold = %d, want 2", got)
	}
	if !st.Root.Signed.ConsistentSnapshot {
		t.Error("consistent snapshots off")
	}
	if got, want := st.Root.Signed.Expires, now.Add(RootExpiry); !got.Equal(want) {
		t.Errorf("root expires %v, want %v", got, want)
	}
	if _, err := Init(dir, InitOptions{Online: onlineKeys(t), Now: now}); err == nil {
		t.Error("second Init in the same directory succeeded, want refusal")
	}
}

func TestInitRejectsBadThreshold(t *testing.T) {
	if _, err := Init(t.TempDir(), InitOptions{RootKeys: 2, RootThreshold: 3, Online: onlineKeys(t), Now: now}); err == nil {
		t.Fatal("Init(threshold 3 of 2 keys) succeeded, want error")
	}
	if _, err := Init(t.TempDir(), InitOptions{Online: OnlineKeys{}, Now: now}); err == nil {
		t.Fatal("Init without online keys succeeded, want error")
	}
}

func TestLoadKeysRefusesLooseMode(t *testing.T) {
	dir := t.TempDir()
	k, _ := NewKey(RoleRoot)
	if err := WriteKey(dir, k); err != nil {
		t.Fatal(err)
	}
	ents, _ := os.ReadDir(dir)
	if err := os.Chmod(filepath.Join(dir, ents[0].Name()), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadKeys(dir); err == nil {
		t.Fatal("LoadKeys of a 0644 key succeeded, want refusal")
	}
}

func TestRotateRootChainsSignatures(t *testing.T) {
	dir := t.TempDir()
	st1, err := Init(dir, InitOptions{RootKeys: 2, RootThreshold: 2, Online: onlineKeys(t), Now: now})
	if err != nil {
		t.Fatal(err)
	}
	v1 := *st1.Root
	st2, err := RotateRoot(dir, RotateRootOptions{RootKeys: 1, RootThreshold: 1, Now: now})
	if err != nil {
		t.Fatal(err)
	}
	if st2.Root.Signed.Version != 2 {
		t.Fatalf("rotated root version %d, want 2", st2.Root.Signed.Version)
	}
	if err := v1.VerifyDelegate(RoleRoot, st2.Root); err != nil {
		t.Errorf("v2 not signed by v1's threshold: %v", err)
	}
	if err := st2.Root.VerifyDelegate(RoleRoot, st2.Root); err != nil {
		t.Errorf("v2 not signed by its own keys: %v", err)
	}
	retired, _ := os.ReadDir(filepath.Join(dir, "retired"))
	if len(retired) != 2 {
		t.Errorf("retired %d keys, want the 2 old root keys", len(retired))
	}
	roots, targets, err := Bundle(dir)
	if err != nil || len(roots) != 2 || len(targets) == 0 {
		t.Fatalf("Bundle = %d roots, %d bytes targets, %v; want 2 roots and targets", len(roots), len(targets), err)
	}
	out := t.TempDir()
	files, err := Export(dir, out)
	if err != nil || len(files) != 4 {
		t.Fatalf("Export = %v, %v; want 1.root.json 2.root.json root.json targets.json", files, err)
	}
}

func TestRotatePublisherRedelegates(t *testing.T) {
	dir := t.TempDir()
	if _, err := Init(dir, InitOptions{Online: onlineKeys(t), Now: now}); err != nil {
		t.Fatal(err)
	}
	k, _ := NewKey(RolePublisher)
	st, err := RotatePublisher(dir, k.Public(), now)
	if err != nil {
		t.Fatal(err)
	}
	if ids := PublisherKeyIDs(st.Targets); len(ids) != 1 || ids[0] != k.ID || st.Targets.Signed.Version != 2 {
		t.Fatalf("targets v%d delegates to %v, want v2 delegating to %s", st.Targets.Signed.Version, ids, k.ID)
	}
	if err := CheckShape(st.Root, st.Targets); err != nil {
		t.Fatal(err)
	}
}

func TestCheckShapeRejects(t *testing.T) {
	dir := t.TempDir()
	st, err := Init(dir, InitOptions{Online: onlineKeys(t), Now: now})
	if err != nil {
		t.Fatal(err)
	}
	cases := map[string]func(r *metadata.Metadata[metadata.RootType], tg *metadata.Metadata[metadata.TargetsType]){
		"non-terminating": func(_ *metadata.Metadata[metadata.RootType], tg *metadata.Metadata[metadata.TargetsType]) {
			tg.Signed.Delegations.Roles[0].Terminating = false
		},
		"wider paths": func(_ *metadata.Metadata[metadata.RootType], tg *metadata.Metadata[metadata.TargetsType]) {
			tg.Signed.Delegations.Roles[0].Paths = []string{"*"}
		},
		"targets signs targets": func(_ *metadata.Metadata[metadata.RootType], tg *metadata.Metadata[metadata.TargetsType]) {
			tg.Signed.Targets["artifacts/model/a/1/f"] = metadata.TargetFile()
		},
		"no consistent snapshots": func(r *metadata.Metadata[metadata.RootType], _ *metadata.Metadata[metadata.TargetsType]) {
			r.Signed.ConsistentSnapshot = false
		},
		"online key shared with root": func(r *metadata.Metadata[metadata.RootType], _ *metadata.Metadata[metadata.TargetsType]) {
			r.Signed.Roles[RoleSnapshot].KeyIDs = r.Signed.Roles[RoleRoot].KeyIDs
		},
	}
	for name, mutate := range cases {
		t.Run(name, func(t *testing.T) {
			root, _ := metadata.Root().FromBytes(mustBytes(t, st.Root))
			tg, _ := metadata.Targets().FromBytes(mustBytes(t, st.Targets))
			mutate(root, tg)
			if err := CheckShape(root, tg); err == nil {
				t.Fatal("CheckShape accepted it, want error")
			}
		})
	}
}

func mustBytes[T metadata.Roles](t *testing.T, m *metadata.Metadata[T]) []byte {
	t.Helper()
	b, err := m.ToBytes(false)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestParseOnlineKeys(t *testing.T) {
	if _, err := ParseOnlineKeys([]byte(`{"snapshot":null}`)); err == nil {
		t.Error("ParseOnlineKeys(missing keys) succeeded")
	}
	o := onlineKeys(t)
	o.Timestamp = o.Snapshot
	if err := o.Validate(); err == nil {
		t.Error("Validate(shared key) succeeded")
	}
}
