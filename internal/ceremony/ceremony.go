package ceremony

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/meshanics/meshanics/internal/atomicfile"
	"github.com/theupdateframework/go-tuf/v2/metadata"
)

// Layout of a ceremony directory (-keys DIR):
//
//	DIR/root-<id>.key, DIR/targets-<id>.key   offline private keys, 0600
//	DIR/retired/                               keys rotated out
//	DIR/metadata/N.root.json                   every root version (the chain)
//	DIR/metadata/root.json, targets.json       current signed metadata
const metadataDir = "metadata"

// InitOptions configures a new trust root.
type InitOptions struct {
	RootKeys      int // number of root keys (default 1)
	RootThreshold int // signatures needed (default 1)
	Online        OnlineKeys
	Now           time.Time
}

// State is the current metadata of a ceremony directory.
type State struct {
	Root    *metadata.Metadata[metadata.RootType]
	Targets *metadata.Metadata[metadata.TargetsType]
	Keys    []*PrivateKey
}

// Init creates root and targets keys in dir and signs root v1 and targets
// v1. It refuses a directory that already holds a root.
func Init(dir string, o InitOptions) (*State, error) {
	if o.RootKeys == 0 {
		o.RootKeys = 1
	}
	if o.RootThreshold == 0 {
		o.RootThreshold = 1
	}
	if o.RootKeys < 1 || o.RootKeys > 16 || o.RootThreshold < 1 || o.RootThreshold > o.RootKeys {
		return nil, fmt.Errorf("want 1 <= root threshold (%d) <= root keys (%d) <= 16", o.RootThreshold, o.RootKeys)
	}
	if err := o.Online.Validate(); err != nil {
		return nil, err
	}
	if _, err := os.Stat(filepath.Join(dir, metadataDir, "root.json")); err == nil {
		return nil, fmt.Errorf("%s already holds a trust root; use rotate-root", dir)
	}
	now := o.Now.UTC()
	var rootKeys []*PrivateKey
	for range o.RootKeys {
		k, err := NewKey(RoleRoot)
		if err != nil {
			return nil, err
		}
		rootKeys = append(rootKeys, k)
	}
	tk, err := NewKey(RoleTargets)
	if err != nil {
		return nil, err
	}
	root := metadata.Root(now.Add(RootExpiry))
	root.Signed.ConsistentSnapshot = true
	for _, k := range rootKeys {
		if err := root.Signed.AddKey(k.Public(), RoleRoot); err != nil {
			return nil, fmt.Errorf("add root key: %w", err)
		}
	}
	root.Signed.Roles[RoleRoot].Threshold = o.RootThreshold
	if err := root.Signed.AddKey(tk.Public(), RoleTargets); err != nil {
		return nil, fmt.Errorf("add targets key: %w", err)
	}
	if err := setOnline(root, o.Online); err != nil {
		return nil, err
	}
	targets := metadata.Targets(now.Add(TargetsExpiry))
	setPublisher(targets, o.Online.Publisher)
	st := &State{Root: root, Targets: targets, Keys: append(rootKeys, tk)}
	if err := Sign(root, rootKeys...); err != nil {
		return nil, err
	}
	if err := Sign(targets, tk); err != nil {
		return nil, err
	}
	if err := CheckShape(root, targets); err != nil {
		return nil, err
	}
	for _, k := range st.Keys {
		if err := WriteKey(dir, k); err != nil {
			return nil, err
		}
	}
	if err := st.save(dir); err != nil {
		return nil, err
	}
	return st, nil
}

// setOnline replaces the snapshot and timestamp keys of root.
func setOnline(root *metadata.Metadata[metadata.RootType], o OnlineKeys) error {
	for _, role := range []string{RoleSnapshot, RoleTimestamp} {
		for _, id := range slices.Clone(root.Signed.Roles[role].KeyIDs) {
			if err := root.Signed.RevokeKey(id, role); err != nil {
				return fmt.Errorf("revoke %s key: %w", role, err)
			}
		}
	}
	if err := root.Signed.AddKey(o.Snapshot, RoleSnapshot); err != nil {
		return fmt.Errorf("add snapshot key: %w", err)
	}
	if err := root.Signed.AddKey(o.Timestamp, RoleTimestamp); err != nil {
		return fmt.Errorf("add timestamp key: %w", err)
	}
	root.Signed.Roles[RoleSnapshot].Threshold = 1
	root.Signed.Roles[RoleTimestamp].Threshold = 1
	return nil
}

// setPublisher makes targets delegate PublisherPaths to exactly pub.
func setPublisher(targets *metadata.Metadata[metadata.TargetsType], pub *metadata.Key) {
	id := KeyID(pub)
	targets.Signed.Delegations = &metadata.Delegations{
		Keys: map[string]*metadata.Key{id: pub},
		Roles: []metadata.DelegatedRole{{
			Name:        RolePublisher,
			KeyIDs:      []string{id},
			Threshold:   1,
			Terminating: true,
			Paths:       slices.Clone(PublisherPaths),
		}},
	}
}

// Load reads the keys and current metadata of a ceremony directory.
func Load(dir string) (*State, error) {
	keys, err := LoadKeys(dir)
	if err != nil {
		return nil, err
	}
	root, err := metadata.Root().FromFile(filepath.Join(dir, metadataDir, "root.json"))
	if err != nil {
		return nil, fmt.Errorf("%s holds no trust root (run meshctl tuf init): %w", dir, err)
	}
	targets, err := metadata.Targets().FromFile(filepath.Join(dir, metadataDir, "targets.json"))
	if err != nil {
		return nil, fmt.Errorf("read targets: %w", err)
	}
	return &State{Root: root, Targets: targets, Keys: keys}, nil
}

// keysFor returns the private keys this directory holds for ids.
func (s *State) keysFor(ids []string) []*PrivateKey {
	var out []*PrivateKey
	for _, k := range s.Keys {
		if slices.Contains(ids, k.ID) {
			out = append(out, k)
		}
	}
	return out
}

func (s *State) save(dir string) error {
	mdir := filepath.Join(dir, metadataDir)
	if err := os.MkdirAll(mdir, 0o700); err != nil {
		return fmt.Errorf("metadata directory: %w", err)
	}
	rb, err := s.Root.ToBytes(true)
	if err != nil {
		return fmt.Errorf("encode root: %w", err)
	}
	tb, err := s.Targets.ToBytes(true)
	if err != nil {
		return fmt.Errorf("encode targets: %w", err)
	}
	if err := atomicfile.WriteFile(filepath.Join(mdir, strconv.FormatInt(s.Root.Signed.Version, 10)+".root.json"), rb, 0o644); err != nil {
		return err
	}
	if err := atomicfile.WriteFile(filepath.Join(mdir, "root.json"), rb, 0o644); err != nil {
		return err
	}
	return atomicfile.WriteFile(filepath.Join(mdir, "targets.json"), tb, 0o644)
}

// RotateRootOptions configures a root rotation. Zero values keep the
// current setting; Online, when set, replaces the snapshot and timestamp
// keys in root and the publisher key in targets.
type RotateRootOptions struct {
	RootKeys      int
	RootThreshold int
	Online        *OnlineKeys
	Now           time.Time
}

// RotateRoot replaces every root key with fresh ones and signs root
// version+1 with a threshold of the old keys and of the new ones, so a
// device holding the old root can follow. Old key files move to retired/.
func RotateRoot(dir string, o RotateRootOptions) (*State, error) {
	st, err := Load(dir)
	if err != nil {
		return nil, err
	}
	old := *st.Root.Signed.Roles[RoleRoot] // a copy: the role is rewritten below
	if o.RootKeys == 0 {
		o.RootKeys = len(old.KeyIDs)
	}
	if o.RootThreshold == 0 {
		o.RootThreshold = min(old.Threshold, o.RootKeys)
	}
	if o.RootKeys < 1 || o.RootKeys > 16 || o.RootThreshold < 1 || o.RootThreshold > o.RootKeys {
		return nil, fmt.Errorf("want 1 <= root threshold (%d) <= root keys (%d) <= 16", o.RootThreshold, o.RootKeys)
	}
	oldKeys := st.keysFor(old.KeyIDs)
	if len(oldKeys) < old.Threshold {
		return nil, fmt.Errorf("%s holds %d of the %d current root keys needed", dir, len(oldKeys), old.Threshold)
	}
	var newKeys []*PrivateKey
	for range o.RootKeys {
		k, err := NewKey(RoleRoot)
		if err != nil {
			return nil, err
		}
		newKeys = append(newKeys, k)
	}
	now := o.Now.UTC()
	root := st.Root
	for _, id := range slices.Clone(old.KeyIDs) {
		if err := root.Signed.RevokeKey(id, RoleRoot); err != nil {
			return nil, fmt.Errorf("revoke root key: %w", err)
		}
	}
	for _, k := range newKeys {
		if err := root.Signed.AddKey(k.Public(), RoleRoot); err != nil {
			return nil, fmt.Errorf("add root key: %w", err)
		}
	}
	root.Signed.Roles[RoleRoot].Threshold = o.RootThreshold
	if o.Online != nil {
		if err := o.Online.Validate(); err != nil {
			return nil, err
		}
		if err := setOnline(root, *o.Online); err != nil {
			return nil, err
		}
		if err := st.bumpTargets(now, o.Online.Publisher); err != nil {
			return nil, err
		}
	}
	root.Signed.Version++
	root.Signed.Expires = now.Add(RootExpiry)
	if err := Sign(root, append(oldKeys[:old.Threshold:old.Threshold], newKeys...)...); err != nil {
		return nil, err
	}
	if err := CheckShape(root, st.Targets); err != nil {
		return nil, err
	}
	for _, k := range newKeys {
		if err := WriteKey(dir, k); err != nil {
			return nil, err
		}
	}
	if err := st.save(dir); err != nil {
		return nil, err
	}
	for _, k := range oldKeys {
		if err := RetireKey(dir, k); err != nil {
			return nil, err
		}
	}
	st.Keys = slices.DeleteFunc(st.Keys, func(k *PrivateKey) bool { return slices.Contains(oldKeys, k) })
	st.Keys = append(st.Keys, newKeys...)
	return st, nil
}

// bumpTargets re-signs targets as version+1 with a fresh expiry, delegating
// to pub when it is not nil.
func (st *State) bumpTargets(now time.Time, pub *metadata.Key) error {
	tkeys := st.keysFor(st.Root.Signed.Roles[RoleTargets].KeyIDs)
	if len(tkeys) < st.Root.Signed.Roles[RoleTargets].Threshold {
		return fmt.Errorf("ceremony directory lacks the targets key")
	}
	if pub != nil {
		setPublisher(st.Targets, pub)
	}
	st.Targets.Signed.Version++
	st.Targets.Signed.Expires = now.Add(TargetsExpiry)
	return Sign(st.Targets, tkeys...)
}

// RotatePublisher re-delegates artifacts to a new publisher key (after the
// server generated a new one, e.g. following a compromise) as targets
// version+1.
func RotatePublisher(dir string, pub *metadata.Key, now time.Time) (*State, error) {
	if _, err := pub.ToPublicKey(); err != nil {
		return nil, fmt.Errorf("publisher key unusable: %w", err)
	}
	st, err := Load(dir)
	if err != nil {
		return nil, err
	}
	if err := st.bumpTargets(now.UTC(), pub); err != nil {
		return nil, err
	}
	if err := CheckShape(st.Root, st.Targets); err != nil {
		return nil, err
	}
	return st, st.save(dir)
}

// Resign renews the expiry of root and targets (versions+1) with the same
// keys: the yearly ceremony.
func Resign(dir string, now time.Time) (*State, error) {
	st, err := Load(dir)
	if err != nil {
		return nil, err
	}
	now = now.UTC()
	rr := st.Root.Signed.Roles[RoleRoot]
	rkeys := st.keysFor(rr.KeyIDs)
	if len(rkeys) < rr.Threshold {
		return nil, fmt.Errorf("%s holds %d of the %d root keys needed", dir, len(rkeys), rr.Threshold)
	}
	st.Root.Signed.Version++
	st.Root.Signed.Expires = now.Add(RootExpiry)
	if err := Sign(st.Root, rkeys...); err != nil {
		return nil, err
	}
	if err := st.bumpTargets(now, nil); err != nil {
		return nil, err
	}
	return st, st.save(dir)
}

// Export copies the root chain (N.root.json for every version) and the
// current targets.json into out, the bundle `meshctl tuf import` uploads.
// It returns the files written.
func Export(dir, out string) ([]string, error) {
	if _, err := Load(dir); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(out, 0o755); err != nil {
		return nil, fmt.Errorf("export directory: %w", err)
	}
	mdir := filepath.Join(dir, metadataDir)
	chain, err := RootChain(mdir)
	if err != nil {
		return nil, err
	}
	names := append(chain, "root.json", "targets.json")
	var written []string
	for _, n := range names {
		data, err := os.ReadFile(filepath.Join(mdir, n))
		if err != nil {
			return nil, fmt.Errorf("export %s: %w", n, err)
		}
		p := filepath.Join(out, n)
		if err := atomicfile.WriteFile(p, data, 0o644); err != nil {
			return nil, err
		}
		written = append(written, p)
	}
	return written, nil
}

// RootChain lists the N.root.json files of dir in version order.
func RootChain(dir string) ([]string, error) {
	ents, err := os.ReadDir(dir)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("read %s: %w", dir, err)
	}
	type v struct {
		n    int64
		name string
	}
	var vs []v
	for _, e := range ents {
		num, ok := strings.CutSuffix(e.Name(), ".root.json")
		if !ok {
			continue
		}
		n, err := strconv.ParseInt(num, 10, 64)
		if err != nil || n < 1 {
			continue
		}
		vs = append(vs, v{n, e.Name()})
	}
	sort.Slice(vs, func(i, j int) bool { return vs[i].n < vs[j].n })
	out := make([]string, len(vs))
	for i, x := range vs {
		out[i] = x.name
	}
	return out, nil
}

// Bundle reads what `meshctl tuf import` uploads from a ceremony or export
// directory: every N.root.json in version order and targets.json. dir may
// be the ceremony directory (its metadata/ subdirectory is used) or an
// export directory.
func Bundle(dir string) (roots [][]byte, targets []byte, err error) {
	if st, err := os.Stat(filepath.Join(dir, metadataDir)); err == nil && st.IsDir() {
		dir = filepath.Join(dir, metadataDir)
	}
	chain, err := RootChain(dir)
	if err != nil {
		return nil, nil, err
	}
	for _, n := range chain {
		b, err := os.ReadFile(filepath.Join(dir, n))
		if err != nil {
			return nil, nil, fmt.Errorf("read %s: %w", n, err)
		}
		roots = append(roots, b)
	}
	targets, err = os.ReadFile(filepath.Join(dir, "targets.json"))
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, nil, fmt.Errorf("read targets.json: %w", err)
	}
	if len(roots) == 0 && targets == nil {
		return nil, nil, fmt.Errorf("%s holds no N.root.json or targets.json", dir)
	}
	return roots, targets, nil
}
