package ratelimit

import (
	"net/http"
	"net/http/httptest"
	"testing"
	"time"
)

type fakeClock struct{ t time.Time }

func (c *fakeClock) Now() time.Time { return c.t }

func TestAllowBurstThenRefill(t *testing.T) {
	c := &fakeClock{t: time.Unix(1000, 0)}
	l := New(Config{Rate: 1, Burst: 3, Now: c.Now})
	for i := range 3 {
		if !l.Allow("a") {
			t.Fatalf("Allow(a) #%d = false, want true within burst", i)
		}
	}
	if l.Allow("a") {
		t.Fatal("Allow(a) after burst = true, want false")
	}
	if !l.Allow("b") {
		t.Fatal("Allow(b) = false, want true: other addresses have their own bucket")
	}
	c.t = c.t.Add(1500 * time.Millisecond)
	if !l.Allow("a") {
		t.Fatal("Allow(a) after 1.5s at 1/s = false, want true")
	}
	if l.Allow("a") {
		t.Fatal("second Allow(a) after 1.5s = true, want false (only one token refilled)")
	}
}

func TestBoundedKeys(t *testing.T) {
	c := &fakeClock{t: time.Unix(1000, 0)}
	l := New(Config{Rate: 1, Burst: 2, MaxKeys: 2, Now: c.Now})
	l.Allow("a")
	l.Allow("b")
	if l.Allow("c") {
		t.Fatal("Allow(c) with a full table of non-full buckets = true, want false (fail closed)")
	}
	c.t = c.t.Add(10 * time.Second) // a and b refill completely and may be forgotten
	if !l.Allow("c") {
		t.Fatal("Allow(c) after refill = false, want true")
	}
	if n := l.Len(); n > 2 {
		t.Fatalf("Len() = %d, want <= 2", n)
	}
}

func TestMiddleware(t *testing.T) {
	c := &fakeClock{t: time.Unix(1000, 0)}
	l := New(Config{Rate: 0.001, Burst: 1, Now: c.Now})
	h := l.Middleware(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusNoContent) }))
	do := func(remote, xff string) int {
		r := httptest.NewRequest("POST", "/login", nil)
		r.RemoteAddr = remote
		if xff != "" {
			r.Header.Set("X-Forwarded-For", xff)
		}
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		return w.Code
	}
	if got := do("192.0.2.1:1000", ""); got != http.StatusNoContent {
		t.Fatalf("first request = %d, want 204", got)
	}
	if got := do("192.0.2.1:2000", "198.51.100.7"); got != http.StatusTooManyRequests {
		t.Fatalf("second request from same IP (other port, spoofed XFF) = %d, want 429", got)
	}
	if got := do("192.0.2.2:1000", ""); got != http.StatusNoContent {
		t.Fatalf("request from another IP = %d, want 204", got)
	}
}
