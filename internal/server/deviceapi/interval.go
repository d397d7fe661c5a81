package deviceapi

import (
	"math"
	"net"
	"sync/atomic"
	"time"
)

// intervalGranularity keeps the handed-out interval from changing on every
// device that comes or goes.
const intervalGranularity = 5 * time.Second

// agentJitter is the ±10 % the agent adds to the interval (SPEC §3).
const agentJitter = 1.1

// WidenCap is the widest interval that keeps the stored offline rule
// correct. The store judges a device offline when last_seen is older than
// 3 × the interval on its record (the base; set at enrollment and when the
// device API starts), and last_seen in the database lags by up to one
// flush; so a widened interval w must satisfy
// w × 1.1 + flush ≤ 3 × base. Rounded down to 5 s, never below base.
func WidenCap(base, flush time.Duration) time.Duration {
	w := time.Duration(float64(3*base-flush) / agentJitter)
	w = w.Truncate(intervalGranularity)
	return max(w, base)
}

// AdaptiveInterval is the heartbeat interval for a replica that sees online
// devices and wants to stay under budget heartbeats per second (issue 7):
// max(base, online/budget), rounded up to 5 s, at most limit (never below
// base). budget ≤ 0 disables widening.
func AdaptiveInterval(base time.Duration, online int, budget float64, limit time.Duration) time.Duration {
	if budget <= 0 || online <= 0 {
		return base
	}
	secs := float64(online) / budget
	if secs <= base.Seconds() {
		return base
	}
	want := time.Duration(math.Ceil(secs/intervalGranularity.Seconds())) * intervalGranularity
	want = min(want, limit)
	return max(want, base)
}

// intervalPolicy holds the current interval and the online count it was
// computed from; the poll loop updates both, RPCs read them.
type intervalPolicy struct {
	base   time.Duration
	budget float64
	limit  time.Duration
	cur    atomic.Int64 // nanoseconds
	online atomic.Int64
}

func newIntervalPolicy(base time.Duration, budget float64, limit time.Duration) *intervalPolicy {
	p := &intervalPolicy{base: base, budget: budget, limit: limit}
	p.cur.Store(int64(base))
	return p
}

func (p *intervalPolicy) current() time.Duration { return time.Duration(p.cur.Load()) }

func (p *intervalPolicy) onlineCount() int { return int(p.online.Load()) }

// update records the online count (devices seen within 3 × the interval)
// and recomputes the interval for the larger of it and connected, the
// device connections open on this replica. Every connected device is about
// to heartbeat: counting connections lets a fleet that connects at once
// (after a restart, or a reconnect storm) be told the widened interval in
// its first answers, instead of only once its heartbeats have arrived at
// the base interval's rate (docs/benchmarks.md, the 100,000-device runs).
func (p *intervalPolicy) update(online, connected int) time.Duration {
	p.online.Store(int64(online))
	d := AdaptiveInterval(p.base, max(online, connected), p.budget, p.limit)
	p.cur.Store(int64(d))
	return d
}

// countingListener counts the connections it accepted that are still
// open (a device holds one); the count includes connections still in
// their TLS handshake.
type countingListener struct {
	net.Listener
	open *atomic.Int64
}

func (l countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	l.open.Add(1)
	return &countedConn{Conn: c, open: l.open}, nil
}

type countedConn struct {
	net.Conn
	open   *atomic.Int64
	closed atomic.Bool
}

func (c *countedConn) Close() error {
	if c.closed.CompareAndSwap(false, true) {
		c.open.Add(-1)
	}
	return c.Conn.Close()
}
