package updaterepo

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/theupdateframework/go-tuf/v2/metadata"

	"github.com/meshanics/meshanics/internal/ceremony"
	"github.com/meshanics/meshanics/internal/errdefs"
	"github.com/meshanics/meshanics/internal/server/store"
)

// RoleInfo describes one role in the trust center (GET /api/v1/trust).
type RoleInfo struct {
	Role      string    `json:"role"`
	Online    bool      `json:"online"`
	Version   int64     `json:"version"`
	Expires   time.Time `json:"expires"`
	Threshold int       `json:"threshold"`
	KeyIDs    []string  `json:"keyids"`
	Paths     []string  `json:"paths,omitempty"`
	// ServerHoldsKey is true for an online role whose key is on this
	// server (false means this replica cannot sign it).
	ServerHoldsKey bool `json:"server_holds_key,omitempty"`
}

// TrustInfo is the trust center document.
type TrustInfo struct {
	Initialized        bool       `json:"initialized"`
	ConsistentSnapshot bool       `json:"consistent_snapshot"`
	Roles              []RoleInfo `json:"roles"`
}

// Trust reports key ids, thresholds, versions and expiry of every role.
func (r *Repository) Trust(ctx context.Context) (TrustInfo, error) {
	var st *state
	err := r.db.Read(ctx, func(tx *store.Tx) error {
		var err error
		st, err = loadState(ctx, tx)
		return err
	})
	if err != nil {
		return TrustInfo{}, err
	}
	info := TrustInfo{Roles: []RoleInfo{}}
	if st.root == nil {
		return info, nil
	}
	info.Initialized = true
	info.ConsistentSnapshot = st.root.Signed.ConsistentSnapshot
	rootRole := func(name string, version int64, expires time.Time) RoleInfo {
		rr := st.root.Signed.Roles[name]
		online := name == ceremony.RoleSnapshot || name == ceremony.RoleTimestamp
		ri := RoleInfo{Role: name, Online: online, Version: version, Expires: expires, Threshold: rr.Threshold, KeyIDs: slices.Clone(rr.KeyIDs)}
		if online {
			ri.ServerHoldsKey = r.holdsAny(name, rr.KeyIDs)
		}
		return ri
	}
	info.Roles = append(info.Roles, rootRole(ceremony.RoleRoot, st.root.Signed.Version, st.root.Signed.Expires))
	if st.targets != nil {
		info.Roles = append(info.Roles, rootRole(ceremony.RoleTargets, st.targets.Signed.Version, st.targets.Signed.Expires))
		for _, d := range st.targets.Signed.Delegations.Roles {
			ri := RoleInfo{Role: d.Name, Online: true, Threshold: d.Threshold, KeyIDs: slices.Clone(d.KeyIDs), Paths: slices.Clone(d.Paths)}
			ri.ServerHoldsKey = r.holdsAny(d.Name, d.KeyIDs)
			if st.publisher != nil && d.Name == ceremony.RolePublisher {
				ri.Version, ri.Expires = st.publisher.Signed.Version, st.publisher.Signed.Expires
			}
			info.Roles = append(info.Roles, ri)
		}
	}
	if st.snapshot != nil {
		info.Roles = append(info.Roles, rootRole(ceremony.RoleSnapshot, st.snapshot.Signed.Version, st.snapshot.Signed.Expires))
	}
	if st.timestamp != nil {
		info.Roles = append(info.Roles, rootRole(ceremony.RoleTimestamp, st.timestamp.Signed.Version, st.timestamp.Signed.Expires))
	}
	return info, nil
}

// TrustAnchor returns the current root.json: the anchor a device pins at
// enrollment. It returns ErrNotInitialized before the first import.
func (r *Repository) TrustAnchor(ctx context.Context) (json.RawMessage, error) {
	d, err := r.db.TUFDoc(ctx, ceremony.RoleRoot, 0)
	if errors.Is(err, errdefs.ErrNotFound) {
		return nil, ErrNotInitialized
	}
	if err != nil {
		return nil, fmt.Errorf("trust anchor: %w", err)
	}
	return json.RawMessage(d.Body), nil
}

// OnlineKeys returns the public online keys the ceremony should name: for
// each role, a key this server holds that no trusted root or targets
// version has named yet (a freshly rotated one), else the one in use. A key
// that was named once and is no longer (rotated out, perhaps compromised)
// is never offered again.
func (r *Repository) OnlineKeys(ctx context.Context) (ceremony.OnlineKeys, error) {
	var st *state
	var named map[string]bool
	err := r.db.Read(ctx, func(tx *store.Tx) error {
		var err error
		if st, err = loadState(ctx, tx); err != nil {
			return err
		}
		named, err = everNamed(ctx, tx)
		return err
	})
	if err != nil {
		return ceremony.OnlineKeys{}, err
	}
	inUse := map[string]bool{}
	if st.root != nil {
		for _, role := range []string{ceremony.RoleSnapshot, ceremony.RoleTimestamp} {
			for _, id := range st.root.Signed.Roles[role].KeyIDs {
				inUse[id] = true
			}
		}
	}
	for _, id := range ceremony.PublisherKeyIDs(st.targets) {
		inUse[id] = true
	}
	pick := func(role string) *metadata.Key {
		r.mu.Lock()
		defer r.mu.Unlock()
		var used, fresh *metadata.Key
		for _, k := range r.keys {
			switch {
			case k.Role != role:
			case inUse[k.ID]:
				used = k.Public()
			case !named[k.ID]:
				fresh = k.Public() // the last one generated wins
			}
		}
		if fresh != nil {
			return fresh
		}
		return used
	}
	return ceremony.OnlineKeys{
		Snapshot:  pick(ceremony.RoleSnapshot),
		Timestamp: pick(ceremony.RoleTimestamp),
		Publisher: pick(ceremony.RolePublisher),
	}, nil
}

// maxKeyHistory bounds how many root and targets versions everNamed reads.
const maxKeyHistory = 1000

// everNamed returns the ids of every online key (snapshot, timestamp,
// publisher) that a stored root or targets version has named.
func everNamed(ctx context.Context, tx *store.Tx) (map[string]bool, error) {
	named := map[string]bool{}
	roots, err := tx.TUFHistory(ctx, ceremony.RoleRoot, maxKeyHistory)
	if err != nil {
		return nil, err
	}
	for _, d := range roots {
		root, err := metadata.Root().FromBytes(d.Body)
		if err != nil {
			return nil, fmt.Errorf("stored root version %d: %w", d.Version, err)
		}
		for _, role := range []string{ceremony.RoleSnapshot, ceremony.RoleTimestamp} {
			if rr := root.Signed.Roles[role]; rr != nil {
				for _, id := range rr.KeyIDs {
					named[id] = true
				}
			}
		}
	}
	targets, err := tx.TUFHistory(ctx, ceremony.RoleTargets, maxKeyHistory)
	if err != nil {
		return nil, err
	}
	for _, d := range targets {
		t, err := metadata.Targets().FromBytes(d.Body)
		if err != nil {
			return nil, fmt.Errorf("stored targets version %d: %w", d.Version, err)
		}
		for _, id := range ceremony.PublisherKeyIDs(t) {
			named[id] = true
		}
	}
	return named, nil
}

// RotateOnlineKey generates a new key for an online role (after a
// suspected compromise). It takes effect once the ceremony names it
// (rotate-publisher, or rotate-root for snapshot/timestamp) and the result
// is imported; until then the old key keeps signing.
func (r *Repository) RotateOnlineKey(ctx context.Context, role, actor string) (*metadata.Key, error) {
	switch role {
	case ceremony.RoleSnapshot, ceremony.RoleTimestamp, ceremony.RolePublisher:
	default:
		return nil, errdefs.Invalid("role must be snapshot, timestamp or publisher")
	}
	k, err := ceremony.NewKey(role)
	if err != nil {
		return nil, err
	}
	err = r.db.Tx(ctx, func(tx *store.Tx) error {
		_, err := tx.AppendAudit(ctx, store.Event{Actor: actor, Type: "trust.online_key_generated", Subject: role, Data: map[string]string{"keyid": k.ID}})
		return err
	})
	if err != nil {
		return nil, err
	}
	if err := ceremony.WriteKey(r.keysDir, k); err != nil {
		return nil, fmt.Errorf("rotate online key: %w", err)
	}
	r.mu.Lock()
	r.keys = append(r.keys, k)
	r.mu.Unlock()
	r.log.Warn("generated a new online key; run the ceremony to delegate to it", "key", k)
	return k.Public(), nil
}
