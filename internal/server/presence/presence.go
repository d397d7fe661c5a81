// Package presence tracks device liveness in memory so that a heartbeat
// costs no synchronous database write (SPEC §12): each heartbeat records
// last_seen in a sharded map, and Run flushes what changed to the store in
// batches every few seconds and once more on shutdown.
//
// Only deviceapi and the server composition root import it. A *Tracker is
// safe for concurrent use.
package presence

import (
	"context"
	"errors"
	"fmt"
	"hash/maphash"
	"log/slog"
	"maps"
	"sync"
	"sync/atomic"
	"time"
)

// Sink receives flushed last_seen times. The store implements it with one
// statement (or transaction) per batch; a name it does not know is skipped,
// not an error.
type Sink interface {
	TouchDevices(ctx context.Context, seen map[string]time.Time) error
}

// Defaults.
const (
	DefaultFlushInterval = 5 * time.Second
	DefaultMaxBatch      = 1000
	// shutdownFlushTimeout bounds the final flush after Run's context ends.
	shutdownFlushTimeout = 10 * time.Second
	numShards            = 64
)

// Config is everything a Tracker needs.
type Config struct {
	Sink Sink
	Log  *slog.Logger
	// FlushInterval is how often changed last_seen times reach the store
	// (default 5 s). It bounds how stale last_seen in the database is.
	FlushInterval time.Duration
	// MaxBatch caps the devices per TouchDevices call (default 1000).
	MaxBatch int
}

// Tracker holds last_seen per device.
type Tracker struct {
	sink     Sink
	log      *slog.Logger
	interval time.Duration
	maxBatch int
	seed     maphash.Seed
	shards   [numShards]shard

	// flushMu serialises flushes so a batch that failed is merged back before
	// the next one takes the dirty set.
	flushMu sync.Mutex
	flushes atomic.Int64
}

type shard struct {
	mu sync.Mutex
	// seen holds the latest heartbeat of every device this replica has seen.
	seen map[string]time.Time
	// dirty holds the entries of seen not yet flushed to the store.
	dirty map[string]time.Time
}

// New returns a Tracker. Sink is required.
func New(cfg Config) (*Tracker, error) {
	if cfg.Sink == nil {
		return nil, errors.New("presence: sink is required")
	}
	if cfg.Log == nil {
		return nil, errors.New("presence: logger is required")
	}
	if cfg.FlushInterval <= 0 {
		cfg.FlushInterval = DefaultFlushInterval
	}
	if cfg.MaxBatch <= 0 {
		cfg.MaxBatch = DefaultMaxBatch
	}
	t := &Tracker{
		sink:     cfg.Sink,
		log:      cfg.Log.With("component", "presence"),
		interval: cfg.FlushInterval,
		maxBatch: cfg.MaxBatch,
		seed:     maphash.MakeSeed(),
	}
	for i := range t.shards {
		t.shards[i].seen = make(map[string]time.Time)
		t.shards[i].dirty = make(map[string]time.Time)
	}
	return t, nil
}

func (t *Tracker) shard(name string) *shard {
	return &t.shards[maphash.String(t.seed, name)%numShards]
}

// Seen records a heartbeat of device at now. Times never go backwards.
func (t *Tracker) Seen(device string, now time.Time) {
	s := t.shard(device)
	s.mu.Lock()
	if prev, ok := s.seen[device]; !ok || now.After(prev) {
		s.seen[device] = now
		s.dirty[device] = now
	}
	s.mu.Unlock()
}

// LastSeen returns the last heartbeat this replica recorded for device.
func (t *Tracker) LastSeen(device string) (time.Time, bool) {
	s := t.shard(device)
	s.mu.Lock()
	defer s.mu.Unlock()
	v, ok := s.seen[device]
	return v, ok
}

// Forget drops device (decommissioned, or its record deleted): it is no
// longer counted online and nothing more is flushed for it.
func (t *Tracker) Forget(device string) {
	s := t.shard(device)
	s.mu.Lock()
	delete(s.seen, device)
	delete(s.dirty, device)
	s.mu.Unlock()
}

// Online counts devices whose last heartbeat here is within window of now
// (SPEC §3: window = 3 × interval). Devices seen longer ago than window are
// pruned, so memory follows the live fleet.
func (t *Tracker) Online(now time.Time, window time.Duration) int {
	cutoff := now.Add(-window)
	n := 0
	for i := range t.shards {
		s := &t.shards[i]
		s.mu.Lock()
		for name, at := range s.seen {
			if at.Before(cutoff) {
				if _, pending := s.dirty[name]; !pending {
					delete(s.seen, name)
				}
				continue
			}
			n++
		}
		s.mu.Unlock()
	}
	return n
}

// Flushes counts completed flushes that wrote at least one batch.
func (t *Tracker) Flushes() int64 { return t.flushes.Load() }

// Flush writes every changed last_seen to the sink in batches of at most
// MaxBatch. Batches that fail are kept (merged with newer heartbeats) for the
// next flush.
func (t *Tracker) Flush(ctx context.Context) error {
	t.flushMu.Lock()
	defer t.flushMu.Unlock()
	pending := make(map[string]time.Time)
	for i := range t.shards {
		s := &t.shards[i]
		s.mu.Lock()
		if len(s.dirty) > 0 {
			maps.Copy(pending, s.dirty)
			s.dirty = make(map[string]time.Time)
		}
		s.mu.Unlock()
	}
	if len(pending) == 0 {
		return nil
	}
	batch := make(map[string]time.Time, min(len(pending), t.maxBatch))
	var errs []error
	wrote := false
	send := func() {
		if err := t.sink.TouchDevices(ctx, batch); err != nil {
			errs = append(errs, err)
			t.restore(batch)
		} else {
			wrote = true
		}
		batch = make(map[string]time.Time, min(len(pending), t.maxBatch))
	}
	for name, at := range pending {
		batch[name] = at
		if len(batch) == t.maxBatch {
			send()
		}
	}
	if len(batch) > 0 {
		send()
	}
	if wrote {
		t.flushes.Add(1)
	}
	if len(errs) > 0 {
		return fmt.Errorf("flush last_seen: %w", errors.Join(errs...))
	}
	return nil
}

// restore puts a failed batch back into the dirty set, unless a newer
// heartbeat (or Forget) superseded it meanwhile.
func (t *Tracker) restore(batch map[string]time.Time) {
	for name, at := range batch {
		s := t.shard(name)
		s.mu.Lock()
		if cur, ok := s.seen[name]; ok && !cur.After(at) {
			if _, newer := s.dirty[name]; !newer {
				s.dirty[name] = at
			}
		}
		s.mu.Unlock()
	}
}

// Run flushes every FlushInterval until ctx ends, then flushes once more
// with a fresh deadline so no heartbeat recorded before shutdown is lost.
func (t *Tracker) Run(ctx context.Context) error {
	tick := time.NewTicker(t.interval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), shutdownFlushTimeout)
			defer cancel()
			if err := t.Flush(fctx); err != nil {
				return fmt.Errorf("final presence flush: %w", err)
			}
			return nil
		case <-tick.C:
			if err := t.Flush(ctx); err != nil && ctx.Err() == nil {
				t.log.Warn("presence flush failed; will retry", "err", err)
			}
		}
	}
}
