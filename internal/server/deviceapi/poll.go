package deviceapi

import (
	"context"
	"sync"
	"time"

	"github.com/meshanics/meshanics/internal/server/store"
)

// maxPendingLogs bounds one poll of pending log requests. Operators create
// log requests by hand; more than this at once wait for the next poll.
const maxPendingLogs = 5000

// feedGraceFactor: the change poll counts as healthy for this many poll
// intervals after its last success; after that cache entries fall back to
// the short CacheTTL.
const feedGraceFactor = 5

// changeFeedLimit is the most names store.DevicesChangedSince returns; an
// answer that long may be truncated.
const changeFeedLimit = 10000

// changeOverlap widens each change poll backwards, so clock skew between
// replicas and commits that land just after a poll are not missed. Dropping
// an entry twice costs one store read.
const changeOverlap = 10 * time.Second

// pollLoop refreshes, every poll interval, what heartbeats hand out or rely
// on without reading the store themselves: pending log requests, the cache
// entries of devices other replicas changed, the online count and the
// heartbeat interval.
func (s *Server) pollLoop(ctx context.Context) error {
	tick := time.NewTicker(s.poll)
	defer tick.Stop()
	since := s.now()
	for {
		now := s.now()
		if err := s.pollLogs(ctx); err != nil && ctx.Err() == nil {
			s.log.Warn("poll pending log requests", "err", err)
		}
		if s.changes != nil {
			names, err := s.changes.DevicesChangedSince(ctx, since.Add(-changeOverlap))
			if err != nil {
				if ctx.Err() == nil {
					s.log.Warn("poll device changes", "err", err)
				}
			} else {
				if len(names) >= changeFeedLimit {
					// The store caps the answer; some changes may be
					// missing, so nothing cached can be vouched for.
					s.cache.clear()
					s.installedSeen.clear()
				} else {
					s.cache.invalidate(names...)
					s.installedSeen.forget(names...)
				}
				since = now
				s.cache.feedSucceeded(now)
			}
		}
		s.interval.update(s.presence.Online(now, 3*s.interval.current()), int(s.conns.Load()))
		s.cache.prune(now)
		s.writes.prune(now)
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
	}
}

func (s *Server) pollLogs(ctx context.Context) error {
	reqs, err := s.logs.PendingLogRequests(ctx, maxPendingLogs)
	if err != nil {
		return err
	}
	s.pending.replace(reqs)
	return nil
}

// pendingLogs is the latest poll of pending log requests, by device.
type pendingLogs struct {
	mu       sync.RWMutex
	byDevice map[string][]store.PendingLog // guarded by mu
}

func newPendingLogs() *pendingLogs {
	return &pendingLogs{byDevice: map[string][]store.PendingLog{}}
}

func (p *pendingLogs) replace(reqs []store.PendingLog) {
	m := make(map[string][]store.PendingLog)
	for _, r := range reqs {
		m[r.Device] = append(m[r.Device], r)
	}
	p.mu.Lock()
	p.byDevice = m
	p.mu.Unlock()
}

func (p *pendingLogs) forDevice(device string) []store.PendingLog {
	p.mu.RLock()
	defer p.mu.RUnlock()
	return p.byDevice[device]
}

// done removes a request fulfilled on this replica at once, so the device
// is not asked again before the next poll.
func (p *pendingLogs) done(device, id string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	rs := p.byDevice[device]
	out := make([]store.PendingLog, 0, len(rs))
	for _, r := range rs {
		if r.ID != id {
			out = append(out, r)
		}
	}
	p.byDevice[device] = out
}
