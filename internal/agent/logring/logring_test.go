package logring

import (
	"bytes"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"
)

func TestHandlerKeepsLastLinesAndPassesOn(t *testing.T) {
	var out bytes.Buffer
	ring := NewRing(3)
	log := slog.New(New(slog.NewTextHandler(&out, nil), ring, slog.LevelInfo)).With("component", "test")
	for i := range 5 {
		log.Info("line", "n", i)
	}
	log.Debug("hidden")
	got := string(ring.Snapshot(time.Time{}, 0))
	lines := strings.Split(strings.TrimSuffix(got, "\n"), "\n")
	if len(lines) != 3 || !strings.Contains(lines[0], "n=2") || !strings.Contains(lines[2], "n=4") || !strings.Contains(lines[2], "component=test") {
		t.Errorf("Snapshot() = %q, want lines n=2..4 with component", got)
	}
	if strings.Count(out.String(), "\n") != 5 {
		t.Errorf("wrapped handler got %q, want 5 lines", out.String())
	}
	if got := ring.Snapshot(time.Time{}, 1); !strings.Contains(string(got), "n=4") || strings.Count(string(got), "\n") != 1 {
		t.Errorf("Snapshot(max 1) = %q", got)
	}
	if got := ring.Snapshot(time.Now().Add(time.Hour), 0); len(got) != 0 {
		t.Errorf("Snapshot(since future) = %q, want empty", got)
	}
}

func TestLongLinesAreBounded(t *testing.T) {
	ring := NewRing(2)
	log := slog.New(New(slog.DiscardHandler, ring, slog.LevelInfo))
	log.Info(strings.Repeat("x", 10*maxLine))
	if n := len(ring.Snapshot(time.Time{}, 0)); n > maxLine {
		t.Errorf("line kept %d bytes, want at most %d", n, maxLine)
	}
}

func TestConcurrentUse(t *testing.T) {
	ring := NewRing(50)
	log := slog.New(New(slog.DiscardHandler, ring, slog.LevelInfo))
	done := make(chan struct{})
	for g := range 4 {
		go func() {
			defer func() { done <- struct{}{} }()
			for i := range 100 {
				log.Info(fmt.Sprint(g, i))
				ring.Snapshot(time.Time{}, 10)
			}
		}()
	}
	for range 4 {
		<-done
	}
	if n := strings.Count(string(ring.Snapshot(time.Time{}, 0)), "\n"); n != 50 {
		t.Errorf("ring holds %d lines, want 50", n)
	}
}
