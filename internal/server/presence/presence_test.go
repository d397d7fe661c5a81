package presence

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/google/go-cmp/cmp"
)

// fakeSink keeps every batch it was given, like a store would keep rows.
type fakeSink struct {
	mu      sync.Mutex
	fail    error
	batches []map[string]time.Time
	rows    map[string]time.Time
}

func (f *fakeSink) TouchDevices(_ context.Context, seen map[string]time.Time) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.fail != nil {
		return f.fail
	}
	f.batches = append(f.batches, maps.Clone(seen))
	if f.rows == nil {
		f.rows = make(map[string]time.Time)
	}
	for k, v := range seen {
		if v.After(f.rows[k]) {
			f.rows[k] = v
		}
	}
	return nil
}

func (f *fakeSink) snapshot() (int, map[string]time.Time) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.batches), maps.Clone(f.rows)
}

func newTracker(t *testing.T, sink Sink, maxBatch int) *Tracker {
	t.Helper()
	tr, err := New(Config{Sink: sink, Log: slog.New(slog.NewTextHandler(io.Discard, nil)), MaxBatch: maxBatch})
	if err != nil {
		t.Fatal(err)
	}
	return tr
}

var t0 = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

func TestFlushBatchesAndKeepsLatest(t *testing.T) {
	sink := &fakeSink{}
	tr := newTracker(t, sink, 1000)
	want := make(map[string]time.Time)
	for i := range 2500 {
		name := fmt.Sprintf("dev-%d", i)
		tr.Seen(name, t0)
		tr.Seen(name, t0.Add(time.Duration(i)*time.Millisecond))
		tr.Seen(name, t0) // an older, reordered heartbeat must not win
		want[name] = t0.Add(time.Duration(i) * time.Millisecond)
	}
	if err := tr.Flush(t.Context()); err != nil {
		t.Fatal(err)
	}
	batches, rows := sink.snapshot()
	if batches != 3 {
		t.Errorf("Flush of 2500 devices with MaxBatch 1000 made %d TouchDevices calls, want 3", batches)
	}
	if diff := cmp.Diff(want, rows); diff != "" {
		t.Errorf("stored last_seen (-want +got):\n%s", diff)
	}
	// Nothing changed: nothing is written.
	if err := tr.Flush(t.Context()); err != nil {
		t.Fatal(err)
	}
	if n, _ := sink.snapshot(); n != 3 {
		t.Errorf("Flush with nothing new made %d calls in all, want still 3", n)
	}
}

func TestFlushFailureIsRetried(t *testing.T) {
	sink := &fakeSink{fail: errors.New("database is locked")}
	tr := newTracker(t, sink, 10)
	tr.Seen("a", t0)
	tr.Seen("b", t0)
	if err := tr.Flush(t.Context()); err == nil {
		t.Fatal("Flush with a failing sink = nil, want error")
	}
	tr.Seen("a", t0.Add(time.Second)) // newer heartbeat meanwhile
	sink.mu.Lock()
	sink.fail = nil
	sink.mu.Unlock()
	if err := tr.Flush(t.Context()); err != nil {
		t.Fatal(err)
	}
	_, rows := sink.snapshot()
	want := map[string]time.Time{"a": t0.Add(time.Second), "b": t0}
	if diff := cmp.Diff(want, rows); diff != "" {
		t.Errorf("after retry (-want +got):\n%s", diff)
	}
}

func TestOnlineWindowAndForget(t *testing.T) {
	tr := newTracker(t, &fakeSink{}, 0)
	tr.Seen("old", t0)
	tr.Seen("fresh", t0.Add(80*time.Second))
	tr.Seen("gone", t0.Add(80*time.Second))
	tr.Forget("gone")
	if got := tr.Online(t0.Add(100*time.Second), 90*time.Second); got != 1 {
		t.Errorf("Online(window 90s) = %d, want 1 (only fresh)", got)
	}
	if _, ok := tr.LastSeen("gone"); ok {
		t.Error("LastSeen(forgotten device) found, want not found")
	}
}

func TestRunFlushesPeriodicallyAndOnShutdown(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		sink := &fakeSink{}
		tr := newTracker(t, sink, 0)
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan error, 1)
		go func() { done <- tr.Run(ctx) }()

		tr.Seen("a", t0)
		time.Sleep(DefaultFlushInterval + time.Millisecond)
		synctest.Wait()
		if n, rows := sink.snapshot(); n != 1 || !rows["a"].Equal(t0) {
			t.Fatalf("after one interval: %d batches, rows %v; want 1 batch with a", n, rows)
		}

		tr.Seen("b", t0) // recorded just before shutdown
		cancel()
		if err := <-done; err != nil {
			t.Fatalf("Run = %v, want nil", err)
		}
		if _, rows := sink.snapshot(); !rows["b"].Equal(t0) {
			t.Errorf("heartbeat recorded before shutdown was not flushed: rows %v", rows)
		}
	})
}
