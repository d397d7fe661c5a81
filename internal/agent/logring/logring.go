// Package logring keeps the agent's most recent log lines in memory: a
// slog.Handler wrapper that passes every record on and also formats it into
// a bounded ring. Outside systemd (no journal to read) a log pull sends the
// ring's content.
//
// Imported by cmd/meshanics-agent (to build the logger) and internal/agent
// (to read it). Safe for concurrent use.
package logring

import (
	"bytes"
	"context"
	"log/slog"
	"sync"
	"time"
)

// Defaults bound the ring's memory: at most lines × maxLine bytes.
const (
	DefaultLines = 2000
	maxLine      = 2048
)

// Ring is the bounded buffer of formatted lines.
type Ring struct {
	mu sync.Mutex
	// lines is a circular buffer; next is where the next line goes.
	lines []entry
	next  int
	full  bool
}

type entry struct {
	t    time.Time
	line []byte
}

// NewRing returns a ring keeping the last n lines (DefaultLines if n <= 0).
func NewRing(n int) *Ring {
	if n <= 0 {
		n = DefaultLines
	}
	return &Ring{lines: make([]entry, n)}
}

func (r *Ring) add(t time.Time, line []byte) {
	if len(line) > maxLine {
		line = append(line[:maxLine-4:maxLine-4], "…\n"...)
	}
	r.mu.Lock()
	r.lines[r.next] = entry{t: t, line: line}
	r.next = (r.next + 1) % len(r.lines)
	if r.next == 0 {
		r.full = true
	}
	r.mu.Unlock()
}

// Snapshot returns the newest maxLines lines (all if maxLines <= 0) logged
// at or after since (zero = no bound), oldest first, newline-terminated.
func (r *Ring) Snapshot(since time.Time, maxLines int) []byte {
	r.mu.Lock()
	defer r.mu.Unlock()
	var ordered []entry
	if r.full {
		ordered = append(ordered, r.lines[r.next:]...)
	}
	ordered = append(ordered, r.lines[:r.next]...)
	start := 0
	for start < len(ordered) && !since.IsZero() && ordered[start].t.Before(since) {
		start++
	}
	ordered = ordered[start:]
	if maxLines > 0 && len(ordered) > maxLines {
		ordered = ordered[len(ordered)-maxLines:]
	}
	var b bytes.Buffer
	for _, e := range ordered {
		b.Write(e.line)
	}
	return b.Bytes()
}

// Handler passes records to the wrapped handler and records them in the
// ring as logfmt lines.
type Handler struct {
	next slog.Handler
	text slog.Handler // formats into the ring; shares attrs/groups with next
	ring *Ring
}

// New wraps next; records at or above level also go to ring.
func New(next slog.Handler, ring *Ring, level slog.Leveler) *Handler {
	w := &ringWriter{ring: ring}
	return &Handler{next: next, ring: ring, text: slog.NewTextHandler(w, &slog.HandlerOptions{Level: level})}
}

// Ring returns the ring this handler writes to.
func (h *Handler) Ring() *Ring { return h.ring }

// Enabled implements slog.Handler.
func (h *Handler) Enabled(ctx context.Context, l slog.Level) bool {
	return h.next.Enabled(ctx, l) || h.text.Enabled(ctx, l)
}

// Handle implements slog.Handler.
func (h *Handler) Handle(ctx context.Context, r slog.Record) error {
	if h.text.Enabled(ctx, r.Level) {
		_ = h.text.Handle(ctx, r)
	}
	if h.next.Enabled(ctx, r.Level) {
		return h.next.Handle(ctx, r)
	}
	return nil
}

// WithAttrs implements slog.Handler.
func (h *Handler) WithAttrs(as []slog.Attr) slog.Handler {
	return &Handler{next: h.next.WithAttrs(as), text: h.text.WithAttrs(as), ring: h.ring}
}

// WithGroup implements slog.Handler.
func (h *Handler) WithGroup(name string) slog.Handler {
	return &Handler{next: h.next.WithGroup(name), text: h.text.WithGroup(name), ring: h.ring}
}

// ringWriter receives exactly one Write per record from slog.TextHandler.
type ringWriter struct{ ring *Ring }

func (w *ringWriter) Write(p []byte) (int, error) {
	w.ring.add(time.Now(), bytes.Clone(p))
	return len(p), nil
}
