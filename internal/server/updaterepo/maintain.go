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
	return r.change(ctx, func(_ *store.Tx, b *builder) error {
		st := b.st
		if st.root == nil || st.targets == nil || st.publisher == nil || st.snapshot == nil || st.timestamp == nil {
			return nil
		}
		due := func(expires time.Time, life time.Duration) bool { return expires.Sub(b.now) < life/2 }
		if due(st.publisher.Signed.Expires, ceremony.PublisherExpiry) {
			if err := b.bumpPublisher(); err != nil {
				return err
			}
			return b.bumpSnapshot()
		}
		if due(st.snapshot.Signed.Expires, ceremony.SnapshotExpiry) {
			return b.bumpSnapshot()
		}
		issued := st.timestamp.Signed.Expires.Add(-ceremony.TimestampExpiry)
		if b.now.Sub(issued) >= TimestampInterval {
			return b.bumpTimestamp(nil)
		}
		return nil
	})
}
