package updaterepo

import (
	"context"
	"errors"
	"time"

	"github.com/meshanics/meshanics/internal/ceremony"
	"github.com/meshanics/meshanics/internal/server/store"
)

// TimestampInterval is how often the timestamp is re-signed even when
// nothing changed (SPEC §5), so a device can tell a fresh repository from
// a frozen one within a day.
const TimestampInterval = time.Hour

// Run re-signs metadata before it expires until ctx ends: the timestamp
// hourly, snapshot and publisher once less than half their lifetime is
// left. Every replica may run it; the database decides which signature
// wins.
func (r *Repository) Run(ctx context.Context) error {
	t := time.NewTicker(r.interval)
	defer t.Stop()
	for {
		if err := r.Maintain(ctx); err != nil && !errors.Is(err, context.Canceled) {
			r.log.Error("re-sign metadata", "err", err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// Maintain re-signs whatever is due now. It does nothing before the first
// import.
func (r *Repository) Maintain(ctx context.Context) error {
	// Decide on a read first, so an idle minute costs no write
	// transaction (SQLite has one writer).
	var st *state
	if err := r.db.Read(ctx, func(tx *store.Tx) error {
		var err error
		st, err = loadState(ctx, tx)
		return err
	}); err != nil {
		return err
	}
	if resignDue(st, r.now().UTC()) == nothingDue {
		return nil
	}
	return r.change(ctx, func(_ *store.Tx, b *builder) error {
		switch resignDue(b.st, b.now) {
		case publisherDue:
			if err := b.bumpPublisher(); err != nil {
				return err
			}
			return b.bumpSnapshot()
		case snapshotDue:
			return b.bumpSnapshot()
		case timestampDue:
			return b.bumpTimestamp(nil)
		}
		return nil // another replica did it meanwhile
	})
}

type due int

const (
	nothingDue due = iota
	timestampDue
	snapshotDue
	publisherDue
)

// resignDue is the re-signing policy: publisher and snapshot once less
// than half their lifetime is left, the timestamp an hour after it was
// signed. A re-signed publisher or snapshot re-signs what names it.
func resignDue(st *state, now time.Time) due {
	if st.root == nil || st.targets == nil || st.publisher == nil || st.snapshot == nil || st.timestamp == nil {
		return nothingDue
	}
	half := func(expires time.Time, life time.Duration) bool { return expires.Sub(now) < life/2 }
	switch {
	case half(st.publisher.Signed.Expires, ceremony.PublisherExpiry):
		return publisherDue
	case half(st.snapshot.Signed.Expires, ceremony.SnapshotExpiry):
		return snapshotDue
	case now.Sub(st.timestamp.Signed.Expires.Add(-ceremony.TimestampExpiry)) >= TimestampInterval:
		return timestampDue
	}
	return nothingDue
}
