package deviceapi

import (
	"math"
	"sync/atomic"
	"time"
)

// MaxHeartbeatInterval caps widening: past it, offline detection (3× the
// interval) would be too slow to be useful, and the fleet needs more
// replicas rather than longer intervals.
const MaxHeartbeatInterval = 10 * time.Minute

// intervalGranularity keeps the handed-out interval from changing on every
// device that comes or goes.
const intervalGranularity = 5 * time.Second

// AdaptiveInterval is the heartbeat interval for a replica that sees online
// devices and wants to stay under budget heartbeats per second (issue 7):
// max(base, online/budget), rounded up to 5 s, at most MaxHeartbeatInterval
// (but never below base). budget ≤ 0 disables widening.
func AdaptiveInterval(base time.Duration, online int, budget float64) time.Duration {
	if budget <= 0 || online <= 0 {
		return base
	}
	secs := float64(online) / budget
	if secs <= base.Seconds() {
		return base
	}
	want := time.Duration(math.Ceil(secs/intervalGranularity.Seconds())) * intervalGranularity
	want = min(want, MaxHeartbeatInterval)
	return max(want, base)
}

// intervalPolicy holds the current interval and the online count it was
// computed from; the poll loop updates both, RPCs read them.
type intervalPolicy struct {
	base   time.Duration
	budget float64
	cur    atomic.Int64 // nanoseconds
	online atomic.Int64
}

func newIntervalPolicy(base time.Duration, budget float64) *intervalPolicy {
	p := &intervalPolicy{base: base, budget: budget}
	p.cur.Store(int64(base))
	return p
}

func (p *intervalPolicy) current() time.Duration { return time.Duration(p.cur.Load()) }

func (p *intervalPolicy) onlineCount() int { return int(p.online.Load()) }

// update records the online count and recomputes the interval.
func (p *intervalPolicy) update(online int) time.Duration {
	p.online.Store(int64(online))
	d := AdaptiveInterval(p.base, online, p.budget)
	p.cur.Store(int64(d))
	return d
}
