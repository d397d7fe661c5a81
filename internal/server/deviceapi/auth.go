package deviceapi

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/singleflight"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"

	"github.com/meshanics/meshanics/internal/errdefs"
	"github.com/meshanics/meshanics/internal/server/ca"
	"github.com/meshanics/meshanics/internal/server/store"
)

// device is the authenticated caller of one RPC.
type device struct {
	ca.Identity
}

type deviceKey struct{}

func withDevice(ctx context.Context, d device) context.Context {
	return context.WithValue(ctx, deviceKey{}, d)
}

// callerOf returns the device the interceptor authenticated. Handlers are
// only reachable through the interceptor, so a missing value is a bug,
// reported as unauthenticated rather than trusted.
func callerOf(ctx context.Context) (device, error) {
	d, ok := ctx.Value(deviceKey{}).(device)
	if !ok {
		return device{}, fmt.Errorf("%w: no device identity on the call", errdefs.ErrUnauthenticated)
	}
	return d, nil
}

// authenticate derives the caller from the verified peer certificate and
// checks that the certificate is the device's current one. Nothing in a
// request body takes part.
func (s *Server) authenticate(ctx context.Context) (device, error) {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return device{}, fmt.Errorf("%w: no peer", errdefs.ErrUnauthenticated)
	}
	info, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok {
		return device{}, fmt.Errorf("%w: not a TLS connection", errdefs.ErrUnauthenticated)
	}
	id, err := s.ident.PeerIdentity(&info.State)
	if err != nil {
		return device{}, fmt.Errorf("%w: %v", errdefs.ErrUnauthenticated, err)
	}
	state, err := s.cache.get(ctx, id.Name, id.Serial, s.now())
	if err != nil {
		return device{}, fmt.Errorf("check certificate of %s: %w", id.Name, err)
	}
	switch state {
	case store.CertCurrent:
		return device{id}, nil
	case store.CertDecommissioned:
		s.presence.Forget(id.Name) // no longer online, nothing more to flush
		return device{}, errdefs.ErrDecommissioned
	case store.CertRevoked:
		return device{}, unauthenticated("this certificate has been superseded; use the current one or re-enroll")
	default:
		return device{}, unauthenticated("unknown device certificate")
	}
}

func unauthenticated(msg string) error {
	return &kindMsg{kind: errdefs.ErrUnauthenticated, msg: msg}
}

// kindMsg is an errdefs kind with a client-safe message, for the kinds
// errdefs has no constructor for.
type kindMsg struct {
	kind error
	msg  string
}

func (e *kindMsg) Error() string { return e.msg }
func (e *kindMsg) Unwrap() error { return e.kind }

// authCache remembers the store's verdict per (name, serial) so that a
// steady-state RPC reads nothing from the database.
//
// Bounds on staleness (docs/device-api.md): Invalidate (called by the
// operator API after a decommission on this replica) and the change poll
// (changes committed anywhere) drop entries as soon as they are stale. While
// the change poll is healthy an entry is trusted for feedTTL (long: the poll
// is what bounds staleness, and a long TTL is what keeps heartbeats
// read-free); without a healthy poll, for ttl. A verdict other than store.CertCurrent is re-read once
// recheckAfter has passed, so a certificate issued a moment ago (renewal or
// enrollment on another replica) is accepted at once rather than after ttl.
type authCache struct {
	src     Devices
	ttl     time.Duration
	feedTTL time.Duration
	// feedOK is when the change poll last succeeded (unix nanoseconds, 0 =
	// never); it counts as healthy for feedGrace.
	feedOK    atomic.Int64
	feedGrace time.Duration
	sf        singleflight.Group

	mu   sync.Mutex
	byID map[string]map[string]authEntry // name → serial → entry
	// epoch counts invalidations; a read that started before one does not
	// fill the cache (invalidations are rare: decommissions, replacements).
	epoch uint64
}

type authEntry struct {
	state   store.CertState
	fetched time.Time
}

const (
	recheckAfter     = time.Second
	storeReadTimeout = 5 * time.Second
)

// feedTTL is how long an entry is trusted while the change poll is healthy.
const feedTTL = 30 * time.Minute

func newAuthCache(src Devices, ttl, feedGrace time.Duration) *authCache {
	return &authCache{src: src, ttl: ttl, feedTTL: max(ttl, feedTTL), feedGrace: feedGrace, byID: make(map[string]map[string]authEntry)}
}

// feedSucceeded records a successful change poll that started at t (all
// changes committed before t minus the overlap have been applied).
func (c *authCache) feedSucceeded(t time.Time) { c.feedOK.Store(t.UnixNano()) }

// trustFor is how long an entry is trusted at now.
func (c *authCache) trustFor(now time.Time) time.Duration {
	if ok := c.feedOK.Load(); ok != 0 && now.Sub(time.Unix(0, ok)) < c.feedGrace {
		return c.feedTTL
	}
	return c.ttl
}

func (c *authCache) get(ctx context.Context, name, serial string, now time.Time) (store.CertState, error) {
	c.mu.Lock()
	e, ok := c.byID[name][serial]
	epoch := c.epoch
	c.mu.Unlock()
	if ok {
		age := now.Sub(e.fetched)
		if age >= 0 && age < c.trustFor(now) && (e.state == store.CertCurrent || e.state == store.CertDecommissioned || age < recheckAfter) {
			return e.state, nil
		}
	}
	// One store read per (name, serial) however many RPCs wait for it, so a
	// fleet reconnecting after a restart does not stampede the database.
	v, err, _ := c.sf.Do(name+"\x00"+serial, func() (any, error) {
		// Detached from the first caller's cancellation: other callers
		// share this read.
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), storeReadTimeout)
		defer cancel()
		state, err := c.src.CertAuth(rctx, name, serial)
		if err != nil {
			return store.CertUnknown, err
		}
		c.mu.Lock()
		defer c.mu.Unlock()
		if c.epoch == epoch { // not invalidated while we read
			m := c.byID[name]
			if m == nil {
				m = make(map[string]authEntry, 1)
				c.byID[name] = m
			}
			m[serial] = authEntry{state: state, fetched: now}
		}
		return state, nil
	})
	if err != nil {
		return store.CertUnknown, err
	}
	return v.(store.CertState), nil
}

// invalidate drops every entry of the names.
func (c *authCache) invalidate(names ...string) {
	if len(names) == 0 {
		return
	}
	c.mu.Lock()
	for _, n := range names {
		delete(c.byID, n)
	}
	c.epoch++
	c.mu.Unlock()
}

// clear drops every entry.
func (c *authCache) clear() {
	c.mu.Lock()
	c.byID = make(map[string]map[string]authEntry)
	c.epoch++
	c.mu.Unlock()
}

// prune drops expired entries so memory follows the live fleet.
func (c *authCache) prune(now time.Time) {
	ttl := c.trustFor(now)
	c.mu.Lock()
	defer c.mu.Unlock()
	for name, m := range c.byID {
		for serial, e := range m {
			if now.Sub(e.fetched) >= ttl {
				delete(m, serial)
			}
		}
		if len(m) == 0 {
			delete(c.byID, name)
		}
	}
}
