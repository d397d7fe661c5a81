package reconcile

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/meshanics/meshanics/internal/agent/apply/file"
	"github.com/meshanics/meshanics/internal/agent/statefile"
	"github.com/meshanics/meshanics/internal/atomicfile"
	devicev1 "github.com/meshanics/meshanics/proto/meshanics/device/v1"
)

// Deadlines bound every phase; nothing waits forever. Verification has
// none of its own: TUF and the cross-check hash run while the bytes stream
// (under Download), the rest of it is a local rename and an image pull
// (under Download too).
type Deadlines struct {
	Download time.Duration // fetch, and the image pull while verifying
	Apply    time.Duration // activation, including a reload
	Rollback time.Duration // undo, remove, revert
	Probe    time.Duration // slack added to the probe's own worst case
}

// DefaultDeadlines are used for zero fields.
var DefaultDeadlines = Deadlines{Download: 30 * time.Minute, Apply: 10 * time.Minute, Rollback: 10 * time.Minute, Probe: 30 * time.Second}

// Options are the reconciler's dependencies.
type Options struct {
	DataDir  string             // journal at <data>/update/journal.json, artifacts under <data>/artifacts
	Fetcher  Fetcher            // nil: OTA not configured, every apply fails
	Reporter Reporter           // ReportArtifactStatus
	Appliers map[string]Applier // by artifact kind; a missing kind fails its assignments
	Prober   Prober
	Log      *slog.Logger
	Now      func() time.Time // nil: time.Now
	// Backoff is the wait before retry n (1-based) of a transient problem;
	// nil: 30 s doubling up to 30 min.
	Backoff   func(n int) time.Duration
	Deadlines Deadlines
	// Crashpoint, when set, is called at every boundary between a journal
	// write and a side effect, with a stable name. The crash tests kill
	// the process there; production leaves it nil.
	Crashpoint func(name string)
}

// Reconciler owns the update journal. Reconcile and Resume must not run
// concurrently with each other (the agent calls them from one goroutine);
// Installed is safe from any goroutine.
type Reconciler struct {
	opts    Options
	log     *slog.Logger
	layout  file.Layout
	journal string // path

	resumed bool
	// reported remembers terminal outcomes sent since start, so a repeated
	// assignment is re-reported once per process, not every heartbeat.
	reported map[string]bool

	mu sync.Mutex // guards j; held only to read or copy, never across I/O
	j  *statefile.Journal
}

// New loads (or starts) the journal under opts.DataDir.
func New(opts Options) (*Reconciler, error) {
	if opts.DataDir == "" || opts.Reporter == nil || opts.Prober == nil {
		return nil, fmt.Errorf("reconcile: data dir, reporter and prober are required")
	}
	if opts.Log == nil {
		opts.Log = slog.New(slog.DiscardHandler)
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Backoff == nil {
		opts.Backoff = defaultBackoff
	}
	opts.Deadlines = withDefaults(opts.Deadlines)
	dir := filepath.Join(opts.DataDir, "update")
	// The journal is private; the artifact tree is readable so that the
	// services consuming a model (<data>/artifacts/<name>/current) can.
	for d, perm := range map[string]os.FileMode{dir: 0o700, filepath.Join(opts.DataDir, "artifacts"): 0o755} {
		if err := os.MkdirAll(d, perm); err != nil {
			return nil, fmt.Errorf("reconcile: %w", err)
		}
	}
	if err := atomicfile.CleanTemps(dir); err != nil {
		return nil, fmt.Errorf("reconcile: %w", err)
	}
	path := filepath.Join(dir, "journal.json")
	j, err := statefile.LoadJournal(path)
	if err != nil {
		return nil, fmt.Errorf("reconcile: %w", err)
	}
	return &Reconciler{
		opts: opts, log: opts.Log.With("component", "reconcile"), journal: path,
		layout:   file.Layout{Root: filepath.Join(opts.DataDir, "artifacts")},
		reported: map[string]bool{}, j: j,
	}, nil
}

func withDefaults(d Deadlines) Deadlines {
	def := DefaultDeadlines
	for _, p := range []struct{ v, def *time.Duration }{{&d.Download, &def.Download}, {&d.Apply, &def.Apply}, {&d.Rollback, &def.Rollback}, {&d.Probe, &def.Probe}} {
		if *p.v <= 0 {
			*p.v = *p.def
		}
	}
	return d
}

func defaultBackoff(n int) time.Duration {
	d := 30 * time.Second
	for i := 1; i < n && d < 30*time.Minute; i++ {
		d *= 2
	}
	return min(d, 30*time.Minute)
}

// Installed is what each slot runs now, for Register and Heartbeat.
func (r *Reconciler) Installed() []*devicev1.InstalledArtifact {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []*devicev1.InstalledArtifact
	for _, name := range sortedKeys(r.j.Slots) {
		s := r.j.Slots[name]
		if s.Current == nil {
			continue
		}
		ia := &devicev1.InstalledArtifact{Kind: s.Current.Kind, Name: s.Current.Name, Version: s.Current.Version, Sha256: s.Current.SHA256}
		if s.Previous != nil {
			ia.PreviousVersion = s.Previous.Version
		}
		out = append(out, ia)
	}
	return out
}

// save writes the journal; every side effect waits for it.
func (r *Reconciler) save() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if err := statefile.SaveJSON(r.journal, r.j); err != nil {
		return fmt.Errorf("save journal: %w", err)
	}
	return nil
}

// edit changes the journal under the lock and saves it.
func (r *Reconciler) edit(f func(j *statefile.Journal)) error {
	r.mu.Lock()
	f(r.j)
	r.mu.Unlock()
	return r.save()
}

func (r *Reconciler) crashpoint(name string) {
	if r.opts.Crashpoint != nil {
		r.opts.Crashpoint(name)
	}
}

func (r *Reconciler) report(ctx context.Context, t *statefile.Task, p Phase, detail string) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 15*time.Second)
	defer cancel()
	err := r.opts.Reporter.Report(ctx, t.AssignmentID, p.Reported().String(), detail)
	if err != nil {
		r.log.Warn("report status", "assignment", t.AssignmentID, "state", p.Reported(), "err", err)
		return
	}
	if p.Terminal() {
		if len(r.reported) >= 4*statefile.MaxDone {
			clear(r.reported) // worst case: one more re-report each
		}
		r.reported[t.AssignmentID] = true
	}
}

func sortedKeys[V any](m map[string]V) []string { return slices.Sorted(maps.Keys(m)) }
