// Package ceremony is the offline half of Meshanics' update trust (SPEC §5):
// it creates and rotates the root and targets roles whose keys never touch
// the server, and defines the shape both sides agree on (role names, the
// terminating publisher delegation, expiries, the online-keys document).
//
// Importers: meshctl (the ceremony commands), the server's update
// repository (shape validation on import, and the -dev ceremony). The agent
// never imports it: devices only need go-tuf's updater and a pinned root.
package ceremony

import (
	"encoding/json"
	"fmt"
	"slices"
	"time"

	"github.com/theupdateframework/go-tuf/v2/metadata"
)

// Role names. publisher is the only delegated role.
const (
	RoleRoot      = metadata.ROOT
	RoleTargets   = metadata.TARGETS
	RoleSnapshot  = metadata.SNAPSHOT
	RoleTimestamp = metadata.TIMESTAMP
	RolePublisher = "publisher"
)

// PublisherPaths is the terminating delegation of SPEC §5 ("artifacts/*").
// go-tuf matches delegation patterns one path component at a time ("*"
// never crosses "/"), so the pattern that covers every
// artifacts/<kind>/<name>/<version>/<file> path, and nothing else, has one
// "*" per component.
var PublisherPaths = []string{"artifacts/*/*/*/*"}

// Default expiries (SPEC §5).
const (
	RootExpiry      = 365 * 24 * time.Hour
	TargetsExpiry   = 365 * 24 * time.Hour
	PublisherExpiry = 90 * 24 * time.Hour
	SnapshotExpiry  = 7 * 24 * time.Hour
	TimestampExpiry = 24 * time.Hour
)

// OnlineKeys is the document the server exports (GET
// /api/v1/trust/online-keys) and the ceremony reads: the public halves of
// the server's online keys.
type OnlineKeys struct {
	Snapshot  *metadata.Key `json:"snapshot"`
	Timestamp *metadata.Key `json:"timestamp"`
	Publisher *metadata.Key `json:"publisher"`
}

// MaxOnlineKeysBytes bounds the online-keys document.
const MaxOnlineKeysBytes = 16 << 10

// ParseOnlineKeys decodes and checks an online-keys document.
func ParseOnlineKeys(data []byte) (OnlineKeys, error) {
	var ok OnlineKeys
	if len(data) > MaxOnlineKeysBytes {
		return ok, fmt.Errorf("online keys document is larger than %d bytes", MaxOnlineKeysBytes)
	}
	if err := json.Unmarshal(data, &ok); err != nil {
		return ok, fmt.Errorf("decode online keys: %w", err)
	}
	return ok, ok.Validate()
}

// Validate checks that all three keys are present, usable and distinct.
func (o OnlineKeys) Validate() error {
	ids := map[string]string{}
	for role, k := range map[string]*metadata.Key{RoleSnapshot: o.Snapshot, RoleTimestamp: o.Timestamp, RolePublisher: o.Publisher} {
		if k == nil {
			return fmt.Errorf("online keys: %s key missing", role)
		}
		if _, err := k.ToPublicKey(); err != nil {
			return fmt.Errorf("online keys: %s key unusable: %w", role, err)
		}
		id, err := k.ID()
		if err != nil {
			return fmt.Errorf("online keys: %s key id: %w", role, err)
		}
		if other, dup := ids[id]; dup {
			return fmt.Errorf("online keys: %s and %s share one key", role, other)
		}
		ids[id] = role
	}
	return nil
}

// KeyID returns k's TUF key id ("" if k cannot be encoded).
func KeyID(k *metadata.Key) string {
	if k == nil {
		return ""
	}
	id, err := k.ID()
	if err != nil {
		return ""
	}
	return id
}

// CheckShape verifies the structure Meshanics relies on, beyond signatures:
// consistent snapshots; root, targets, snapshot and timestamp roles with at
// least one key and a satisfiable threshold; no online key in root or
// targets; targets signs no target itself and delegates exactly one
// terminating role, publisher, over PublisherPaths.
func CheckShape(root *metadata.Metadata[metadata.RootType], targets *metadata.Metadata[metadata.TargetsType]) error {
	r := root.Signed
	if r.Type != metadata.ROOT {
		return fmt.Errorf("root metadata has type %q", r.Type)
	}
	if !r.ConsistentSnapshot {
		return fmt.Errorf("root must enable consistent snapshots")
	}
	for _, name := range []string{RoleRoot, RoleTargets, RoleSnapshot, RoleTimestamp} {
		role, ok := r.Roles[name]
		if !ok || role == nil {
			return fmt.Errorf("root names no %s role", name)
		}
		if role.Threshold < 1 || role.Threshold > len(role.KeyIDs) {
			return fmt.Errorf("root: %s threshold %d with %d keys", name, role.Threshold, len(role.KeyIDs))
		}
		for _, id := range role.KeyIDs {
			if _, ok := r.Keys[id]; !ok {
				return fmt.Errorf("root: %s key %s not listed", name, id)
			}
		}
	}
	if len(r.Roles) != 4 {
		return fmt.Errorf("root must name exactly root, targets, snapshot and timestamp")
	}
	offline := append(slices.Clone(r.Roles[RoleRoot].KeyIDs), r.Roles[RoleTargets].KeyIDs...)
	for _, online := range []string{RoleSnapshot, RoleTimestamp} {
		for _, id := range r.Roles[online].KeyIDs {
			if slices.Contains(offline, id) {
				return fmt.Errorf("root: %s shares a key with an offline role", online)
			}
		}
	}
	if targets == nil {
		return nil
	}
	t := targets.Signed
	if t.Type != metadata.TARGETS {
		return fmt.Errorf("targets metadata has type %q", t.Type)
	}
	if len(t.Targets) != 0 {
		return fmt.Errorf("targets must not sign targets itself; artifacts are the publisher's")
	}
	d := t.Delegations
	if d == nil || d.SuccinctRoles != nil || len(d.Roles) != 1 {
		return fmt.Errorf("targets must delegate exactly one role, %s", RolePublisher)
	}
	p := d.Roles[0]
	if p.Name != RolePublisher || !p.Terminating || len(p.PathHashPrefixes) != 0 || !slices.Equal(p.Paths, PublisherPaths) {
		return fmt.Errorf("targets must delegate %v to %s, terminating", PublisherPaths, RolePublisher)
	}
	if p.Threshold < 1 || p.Threshold > len(p.KeyIDs) {
		return fmt.Errorf("targets: publisher threshold %d with %d keys", p.Threshold, len(p.KeyIDs))
	}
	for _, id := range p.KeyIDs {
		if _, ok := d.Keys[id]; !ok {
			return fmt.Errorf("targets: publisher key %s not listed", id)
		}
		if slices.Contains(offline, id) {
			return fmt.Errorf("targets: publisher shares a key with an offline role")
		}
	}
	return nil
}

// PublisherKeyIDs returns the key ids targets delegates publisher to.
func PublisherKeyIDs(targets *metadata.Metadata[metadata.TargetsType]) []string {
	if targets == nil || targets.Signed.Delegations == nil {
		return nil
	}
	for _, r := range targets.Signed.Delegations.Roles {
		if r.Name == RolePublisher {
			return r.KeyIDs
		}
	}
	return nil
}

// Sign replaces m's signatures with one from each key.
func Sign[T metadata.Roles](m *metadata.Metadata[T], keys ...*PrivateKey) error {
	m.ClearSignatures()
	seen := map[string]bool{}
	for _, k := range keys {
		if seen[k.ID] {
			continue
		}
		seen[k.ID] = true
		s, err := k.Signer()
		if err != nil {
			return err
		}
		if _, err := m.Sign(s); err != nil {
			return fmt.Errorf("sign with %s: %w", k, err)
		}
	}
	return nil
}
