// Package ratelimit is a per-address token-bucket limiter for the
// unauthenticated endpoints of the web listener (POST /login in operatorapi,
// POST /api/v1/enroll in the enrollment handler). Any server package may
// import it; it imports only the standard library.
package ratelimit

import (
	"net"
	"net/http"
	"sync"
	"time"
)

// Limiter allows Burst requests per key at once and refills at Rate per
// second. It is safe for concurrent use. The number of tracked keys is
// bounded so that a flood of distinct addresses cannot grow memory without
// limit: when the table is full, buckets that have refilled completely are
// dropped, and if none has, the request is refused (fail closed).
type Limiter struct {
	rate    float64 // tokens per second
	burst   float64
	maxKeys int
	now     func() time.Time

	mu      sync.Mutex
	buckets map[string]*bucket
}

type bucket struct {
	tokens float64
	last   time.Time
}

// Config sets a limiter's shape. Zero fields take the defaults named.
type Config struct {
	Rate    float64          // tokens per second (default 0.2: one every 5 s)
	Burst   int              // bucket size (default 10)
	MaxKeys int              // tracked addresses (default 65536)
	Now     func() time.Time // clock (default time.Now)
}

// New returns a limiter with cfg's shape.
func New(cfg Config) *Limiter {
	if cfg.Rate <= 0 {
		cfg.Rate = 0.2
	}
	if cfg.Burst <= 0 {
		cfg.Burst = 10
	}
	if cfg.MaxKeys <= 0 {
		cfg.MaxKeys = 65536
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Limiter{
		rate:    cfg.Rate,
		burst:   float64(cfg.Burst),
		maxKeys: cfg.MaxKeys,
		now:     cfg.Now,
		buckets: make(map[string]*bucket),
	}
}

// Allow spends one token of key's bucket and reports whether there was one.
func (l *Limiter) Allow(key string) bool {
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	b, ok := l.buckets[key]
	if !ok {
		if len(l.buckets) >= l.maxKeys && !l.evictFullLocked(now) {
			return false
		}
		b = &bucket{tokens: l.burst, last: now}
		l.buckets[key] = b
	}
	l.refill(b, now)
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}

func (l *Limiter) refill(b *bucket, now time.Time) {
	if el := now.Sub(b.last).Seconds(); el > 0 {
		b.tokens += el * l.rate
		if b.tokens > l.burst {
			b.tokens = l.burst
		}
	}
	b.last = now
}

// evictFullLocked drops every bucket that has refilled completely (it holds
// no information a fresh bucket would not) and reports whether room was made.
func (l *Limiter) evictFullLocked(now time.Time) bool {
	for k, b := range l.buckets {
		l.refill(b, now)
		if b.tokens >= l.burst {
			delete(l.buckets, k)
		}
	}
	return len(l.buckets) < l.maxKeys
}

// Len reports how many keys are tracked (for tests and metrics).
func (l *Limiter) Len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.buckets)
}

// AddressKey is the key of a request: the IP of the TCP peer. Forwarding
// headers are ignored on purpose: the web listener terminates TLS itself, so
// X-Forwarded-For would only be a way for a client to choose its own bucket.
func AddressKey(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

// Middleware refuses a request with 429 and a JSON error body when its
// address has no token left, and otherwise calls next.
func (l *Limiter) Middleware(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !l.Allow(AddressKey(r)) {
			w.Header().Set("Content-Type", "application/json")
			w.Header().Set("Retry-After", "5")
			w.WriteHeader(http.StatusTooManyRequests)
			_, _ = w.Write([]byte(`{"error":"too many requests from this address; wait and retry"}` + "\n"))
			return
		}
		next.ServeHTTP(w, r)
	})
}
