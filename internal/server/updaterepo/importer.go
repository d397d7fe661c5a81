package updaterepo

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"slices"

	"github.com/theupdateframework/go-tuf/v2/metadata"

	"github.com/meshanics/meshanics/internal/ceremony"
	"github.com/meshanics/meshanics/internal/errdefs"
	"github.com/meshanics/meshanics/internal/server/store"
)

// Import bounds: the whole request, one document, and the root chain length.
const (
	MaxImportBytes  = 4 << 20
	MaxDocBytes     = 512 << 10
	MaxImportRoots  = 64
	auditTypeImport = "trust.imported"
)

// ImportRequest is the body of POST /api/v1/trust/metadata: root versions
// in ascending order (the chain from the ceremony's export; versions the
// server already trusts are skipped) and optionally a new targets.json.
type ImportRequest struct {
	Roots   []json.RawMessage `json:"roots"`
	Targets json.RawMessage   `json:"targets,omitempty"`
}

// ImportResult reports what the server trusts after an import.
type ImportResult struct {
	RootVersion    int64 `json:"root_version"`
	TargetsVersion int64 `json:"targets_version"`
	ImportedRoots  int   `json:"imported_roots"`
	ImportedTarget bool  `json:"imported_targets"`
}

// ParseImport decodes an import request from untrusted bytes: bounded
// sizes, strict JSON, every document a JSON object.
func ParseImport(data []byte) (ImportRequest, error) {
	var req ImportRequest
	if len(data) > MaxImportBytes {
		return req, errdefs.Invalid(fmt.Sprintf("import is larger than %d bytes", MaxImportBytes))
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		return req, errdefs.Invalid("import body must be {\"roots\":[…],\"targets\":{…}}")
	}
	if dec.More() {
		return req, errdefs.Invalid("import body has trailing data")
	}
	if len(req.Roots) > MaxImportRoots {
		return req, errdefs.Invalid(fmt.Sprintf("import carries more than %d root versions", MaxImportRoots))
	}
	if len(req.Roots) == 0 && len(req.Targets) == 0 {
		return req, errdefs.Invalid("import carries neither root nor targets metadata")
	}
	for _, d := range append(slices.Clone(req.Roots), req.Targets) {
		if len(d) > MaxDocBytes {
			return req, errdefs.Invalid(fmt.Sprintf("a metadata document is larger than %d bytes", MaxDocBytes))
		}
	}
	if string(req.Targets) == "null" {
		req.Targets = nil
	}
	return req, nil
}

// Import validates root and targets metadata signed by the offline ceremony
// and makes it current: each new root is signed by a threshold of the
// previous root's keys and its own, versions increase by one, the shape is
// Meshanics' (ceremony.CheckShape), the online keys it names are keys this
// server holds, nothing is expired. The server never needs an offline key.
// Publisher (if its key changed), snapshot and timestamp are re-signed in
// the same transaction, with an audit event by actor.
func (r *Repository) Import(ctx context.Context, req ImportRequest, actor string) (ImportResult, error) {
	var res ImportResult
	err := r.change(ctx, func(tx *store.Tx, b *builder) error {
		res = ImportResult{}
		if err := r.applyImport(b, req, &res); err != nil {
			return err
		}
		_, err := tx.AppendAudit(ctx, store.Event{Actor: actor, Type: auditTypeImport, Subject: "trust", Data: res})
		return err
	})
	return res, err
}

func invalid(format string, args ...any) error { return errdefs.Invalid(fmt.Sprintf(format, args...)) }

func (r *Repository) applyImport(b *builder, req ImportRequest, res *ImportResult) error {
	st := b.st
	cur := st.root
	for i, raw := range req.Roots {
		nr, err := metadata.Root().FromBytes(raw)
		if err != nil {
			return invalid("root #%d is not valid root metadata", i+1)
		}
		if nr.Signed.Type != metadata.ROOT {
			return invalid("root #%d has type %q", i+1, nr.Signed.Type)
		}
		v := nr.Signed.Version
		if cur != nil && v <= cur.Signed.Version {
			continue // already trusted; the export carries the whole chain
		}
		switch {
		case cur == nil && v != 1:
			return invalid("the first root must be version 1, not %d", v)
		case cur != nil && v != cur.Signed.Version+1:
			return invalid("root version %d does not follow the trusted version %d", v, cur.Signed.Version)
		}
		if cur != nil {
			if err := cur.VerifyDelegate(metadata.ROOT, nr); err != nil {
				return invalid("root version %d is not signed by a threshold of the trusted root's keys", v)
			}
		}
		if err := nr.VerifyDelegate(metadata.ROOT, nr); err != nil {
			return invalid("root version %d is not signed by a threshold of its own root keys", v)
		}
		if err := ceremony.CheckShape(nr, nil); err != nil {
			return invalid("root version %d: %v", v, err)
		}
		b.add(ceremony.RoleRoot, v, raw, nr.Signed.Expires)
		res.ImportedRoots++
		cur = nr
	}
	if cur == nil {
		return invalid("no root metadata: the first import needs root.json (version 1)")
	}
	if cur.Signed.IsExpired(b.now) {
		return invalid("root version %d expired at %s", cur.Signed.Version, cur.Signed.Expires)
	}
	for _, role := range []string{ceremony.RoleSnapshot, ceremony.RoleTimestamp} {
		if !r.holdsAny(role, cur.Signed.Roles[role].KeyIDs) {
			return invalid("root names %s keys this server does not hold; export the online keys from this server (meshctl trust online-keys)", role)
		}
		// The server signs each online role with one key: a higher
		// threshold would make every device refuse what it signs.
		if th := cur.Signed.Roles[role].Threshold; th != 1 {
			return invalid("root sets the %s threshold to %d; online roles are signed with one key (threshold 1)", role, th)
		}
	}
	st.root = cur

	targets := st.targets
	if len(req.Targets) > 0 {
		nt, err := metadata.Targets().FromBytes(req.Targets)
		if err != nil || nt.Signed.Type != metadata.TARGETS {
			return invalid("targets is not valid targets metadata")
		}
		if err := cur.VerifyDelegate(metadata.TARGETS, nt); err != nil {
			return invalid("targets version %d is not signed by a threshold of the targets keys root names", nt.Signed.Version)
		}
		newer := targets == nil || nt.Signed.Version > targets.Signed.Version
		if !newer && nt.Signed.Version != targets.Signed.Version {
			return invalid("targets version %d is older than the trusted version %d", nt.Signed.Version, targets.Signed.Version)
		}
		if newer {
			if err := ceremony.CheckShape(cur, nt); err != nil {
				return invalid("targets version %d: %v", nt.Signed.Version, err)
			}
			if nt.Signed.IsExpired(b.now) {
				return invalid("targets version %d expired at %s", nt.Signed.Version, nt.Signed.Expires)
			}
			b.add(ceremony.RoleTargets, nt.Signed.Version, req.Targets, nt.Signed.Expires)
			res.ImportedTarget = true
			targets = nt
			st.targets, st.targetsRaw = nt, req.Targets
		}
	}
	if targets == nil {
		return invalid("no targets metadata: the first import needs targets.json")
	}
	if err := cur.VerifyDelegate(metadata.TARGETS, targets); err != nil {
		return invalid("the trusted targets metadata is not signed by the new root's targets keys; import a targets.json signed with them")
	}
	if !r.holdsAny(ceremony.RolePublisher, ceremony.PublisherKeyIDs(targets)) {
		return invalid("targets delegates to a publisher key this server does not hold; export the online keys from this server (meshctl trust online-keys)")
	}
	if th := publisherThreshold(targets); th != 1 {
		return invalid("targets sets the publisher threshold to %d; the publisher signs with one key (threshold 1)", th)
	}
	if res.ImportedRoots == 0 && !res.ImportedTarget {
		return errdefs.Conflict(fmt.Sprintf("nothing new to import: root version %d and targets version %d are already trusted", cur.Signed.Version, targets.Signed.Version))
	}
	res.RootVersion, res.TargetsVersion = cur.Signed.Version, targets.Signed.Version
	// Re-sign the publisher when it does not exist yet or its key changed.
	if st.publisher == nil || targets.VerifyDelegate(ceremony.RolePublisher, st.publisher) != nil {
		if err := b.bumpPublisher(); err != nil {
			return err
		}
	}
	return b.bumpSnapshot()
}

func (r *Repository) holdsAny(role string, ids []string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, k := range r.keys {
		if k.Role == role && slices.Contains(ids, k.ID) {
			return true
		}
	}
	return false
}

func publisherThreshold(targets *metadata.Metadata[metadata.TargetsType]) int {
	if targets.Signed.Delegations == nil {
		return 0
	}
	for _, d := range targets.Signed.Delegations.Roles {
		if d.Name == ceremony.RolePublisher {
			return d.Threshold
		}
	}
	return 0
}
