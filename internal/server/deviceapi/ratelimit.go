package deviceapi

import (
	"sync"
	"time"
)

// Every RPC but Heartbeat writes to the database (Register, status
// reports, log uploads, renewals). One device may not turn that into a
// write flood: each device gets a token bucket per replica. The bucket is
// generous for a well-behaved agent, which reports a handful of states per
// assignment and registers once per connection.
const (
	writeBurst = 60
	writeRate  = 1.0 // tokens per second
)

// writeLimiter is safe for concurrent use.
type writeLimiter struct {
	burst float64
	rate  float64

	mu      sync.Mutex
	buckets map[string]*bucket // by device name
}

type bucket struct {
	tokens float64
	at     time.Time
}

func newWriteLimiter(burst, rate float64) *writeLimiter {
	return &writeLimiter{burst: burst, rate: rate, buckets: make(map[string]*bucket)}
}

// allow takes one token of device's bucket at now, if there is one.
func (l *writeLimiter) allow(device string, now time.Time) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	b, ok := l.buckets[device]
	if !ok {
		b = &bucket{tokens: l.burst, at: now}
		l.buckets[device] = b
	}
	if elapsed := now.Sub(b.at); elapsed > 0 {
		b.tokens = min(l.burst, b.tokens+elapsed.Seconds()*l.rate)
		b.at = now
	}
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}

// prune forgets full buckets (they equal a fresh one).
func (l *writeLimiter) prune(now time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for name, b := range l.buckets {
		if b.tokens+now.Sub(b.at).Seconds()*l.rate >= l.burst {
			delete(l.buckets, name)
		}
	}
}
