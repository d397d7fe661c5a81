package updaterepo

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"fmt"

	"github.com/theupdateframework/go-tuf/v2/metadata"

	"github.com/meshanics/meshanics/internal/artifact"
	"github.com/meshanics/meshanics/internal/errdefs"
	"github.com/meshanics/meshanics/internal/server/store"
)

// Target is one artifact file to sign into publisher metadata.
type Target struct {
	Path   string          // artifacts/<kind>/<name>/<version>/<file>
	SHA256 string          // hex
	Length int64           // bytes
	Custom json.RawMessage // artifact.Custom
}

// AddTarget signs t into publisher metadata (publisher, snapshot and
// timestamp version+1) in one transaction together with whatever also
// writes on the same tx (the artifact row and its audit event). When
// AddTarget returns nil the artifact is served signed: there is no
// unsigned state.
func (r *Repository) AddTarget(ctx context.Context, t Target, also func(tx *store.Tx) error) error {
	if _, _, _, _, err := artifact.ParseTargetPath(t.Path); err != nil {
		return errdefs.Invalid(err.Error())
	}
	sum, err := hex.DecodeString(t.SHA256)
	if err != nil || len(sum) != 32 {
		return errdefs.Invalid("target sha256 must be 64 hex digits")
	}
	if t.Length < 0 {
		return errdefs.Invalid("target length must not be negative")
	}
	return r.change(ctx, func(tx *store.Tx, b *builder) error {
		if b.st.root == nil || b.st.targets == nil || b.st.publisher == nil {
			return ErrNotInitialized
		}
		if also != nil {
			if err := also(tx); err != nil {
				return err
			}
		}
		if _, dup := b.st.publisher.Signed.Targets[t.Path]; dup {
			return errdefs.Conflict(fmt.Sprintf("target %s is already signed", t.Path))
		}
		tf := &metadata.TargetFiles{Length: t.Length, Hashes: metadata.Hashes{"sha256": sum}, Path: t.Path}
		if len(t.Custom) > 0 {
			c := json.RawMessage(append([]byte(nil), t.Custom...))
			tf.Custom = &c
		}
		b.st.publisher.Signed.Targets[t.Path] = tf
		if err := b.bumpPublisher(); err != nil {
			return err
		}
		return b.bumpSnapshot()
	})
}
