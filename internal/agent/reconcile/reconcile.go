package reconcile

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/meshanics/meshanics/internal/agent/apply/file"
	"github.com/meshanics/meshanics/internal/agent/statefile"
	devicev1 "github.com/meshanics/meshanics/proto/meshanics/device/v1"
)

// Reconcile converges on desired (the assignments of one heartbeat). It
// blocks while it works (a probe can take minutes): call it from its own
// goroutine, never from the heartbeat loop. Only a journal write failure is
// returned; every assignment's fate is reported through the Reporter.
func (r *Reconciler) Reconcile(ctx context.Context, desired []*devicev1.Assignment) error {
	if err := r.Resume(ctx); err != nil {
		return err
	}
	want := map[string]bool{}
	var errs []error
	for _, a := range desired {
		if ctx.Err() != nil {
			break
		}
		want[a.GetId()] = true
		if err := r.one(ctx, a); err != nil {
			errs = append(errs, err)
		}
	}
	if ctx.Err() == nil {
		errs = append(errs, r.dropUndesired(want), r.retryRollbacks(ctx, want))
	}
	return errors.Join(errs...)
}

// retryRollbacks retries, once their backoff has passed, the rollbacks of
// assignments the server no longer sends: a rollback runs to its end
// whether or not the server still wants the assignment.
func (r *Reconciler) retryRollbacks(ctx context.Context, want map[string]bool) error {
	now := r.opts.Now().UnixMilli()
	r.mu.Lock()
	var due []*statefile.Task
	for _, id := range sortedKeys(r.j.Tasks) {
		if t := r.j.Tasks[id]; !want[id] && Phase(t.Phase) == RollingBack && t.NextAttemptMs <= now {
			due = append(due, t)
		}
	}
	r.mu.Unlock()
	for _, t := range due {
		if err := r.drive(ctx, t); err != nil {
			return err
		}
	}
	return nil
}

// Resume runs once, at the first call: it applies Recover to every task the
// journal holds, cleans what a crash left behind, and finishes rollbacks
// and reverts at once, whether or not the server still wants them.
func (r *Reconciler) Resume(ctx context.Context) error {
	if r.resumed {
		return nil
	}
	r.mu.Lock()
	ids := slices.Sorted(maps.Keys(r.j.Tasks))
	slots := slices.Sorted(maps.Keys(r.j.Slots))
	r.mu.Unlock()
	for _, name := range slots {
		if err := r.layout.CleanTemps(name); err != nil {
			r.log.Warn("clean temps", "slot", name, "err", err)
		}
		r.prune(name) // a crash may have come between a terminal write and its prune
	}
	r.forget(ctx)
	for _, id := range ids {
		t := r.task(id)
		next, outcome, detail := Recover(Phase(t.Phase), Phase(t.Outcome))
		r.log.Info("recover", "assignment", id, "phase", t.Phase, "next", next)
		if next == Downloading {
			r.removePartial(t)
		}
		err := r.edit(func(*statefile.Journal) {
			t.Phase, t.Outcome = string(next), string(outcome)
			if detail != "" {
				t.Detail = detail
			}
		})
		if err != nil {
			return err
		}
		if next != Downloading {
			if err := r.drive(ctx, t); err != nil {
				return err
			}
		}
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	r.resumed = true
	return nil
}

func (r *Reconciler) task(id string) *statefile.Task {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.j.Tasks[id]
}

// one handles one desired assignment.
func (r *Reconciler) one(ctx context.Context, a *devicev1.Assignment) error {
	id := a.GetId()
	if err := validID(id); err != nil {
		r.log.Warn("ignoring assignment", "err", err)
		return nil
	}
	r.mu.Lock()
	done, isDone := r.j.FindDone(id)
	t := r.j.Tasks[id]
	r.mu.Unlock()
	if isDone {
		if !r.reported[id] {
			r.report(ctx, &statefile.Task{AssignmentID: id}, Phase(done.State), done.Detail)
		}
		return nil
	}
	if t == nil {
		var err error
		t, err = newTask(a, r.opts.Now().UnixMilli())
		if err != nil {
			p := Failed
			if t.Action == ActionRevert {
				p = RevertFailed
			}
			return r.finish(ctx, t, p, "invalid assignment: "+err.Error(), false)
		}
		if p, detail, finished := r.shortcut(t); finished {
			return r.finish(ctx, t, p, detail, false)
		}
		if err := r.edit(func(j *statefile.Journal) { j.Tasks[id] = t }); err != nil {
			return err
		}
		r.crashpoint("saved:new")
		r.report(ctx, t, Phase(t.Phase), "")
	}
	if t.NextAttemptMs > r.opts.Now().UnixMilli() {
		return nil // in backoff after a transient problem
	}
	return r.drive(ctx, t)
}

// shortcut settles an assignment that needs no side effect: the version is
// already running, or a revert has nothing to do or nothing to go back to.
// Otherwise it fills in the revert plan.
func (r *Reconciler) shortcut(t *statefile.Task) (Phase, string, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	s := r.j.Slots[t.Artifact.Name]
	var cur, prev *statefile.Artifact
	if s != nil {
		cur, prev = s.Current, s.Previous
	}
	if t.Action == ActionApply {
		if same(cur, &t.Artifact) {
			return Healthy, "already installed", true
		}
		return "", "", false
	}
	switch {
	case t.RevertTo == nil && cur == nil:
		return Reverted, "nothing installed", true
	case t.RevertTo != nil && cur != nil && cur.Version == t.RevertTo.Version:
		return Reverted, "already running " + cur.Version, true
	case !same(cur, &t.Artifact):
		// A revert undoes the assignment's artifact; the slot runs
		// something else, so there is nothing of it to undo (and no reason
		// to change what runs).
		return Reverted, fmt.Sprintf("not running %s; nothing to revert", t.Artifact.Version), true
	case t.RevertTo == nil:
		t.Artifact, t.Prior = *cur, cur // remove cur
	case prev != nil && prev.Version == t.RevertTo.Version && (t.RevertTo.SHA256 == "" || t.RevertTo.SHA256 == prev.SHA256):
		t.Artifact, t.Prior = *prev, cur
		if t.Artifact.Kind == "config" {
			t.Artifact.Backup = r.backupDir(t)
		}
	default:
		return RevertFailed, fmt.Sprintf("version %s is not kept on the device", t.RevertTo.Version), true
	}
	return "", "", false
}

func same(a, b *statefile.Artifact) bool {
	return a != nil && b != nil && a.Name == b.Name && a.Version == b.Version && a.SHA256 == b.SHA256
}

// drive runs t until it ends, pauses for a retry, or ctx ends (then the
// persisted phase is what Recover sees at the next start).
func (r *Reconciler) drive(ctx context.Context, t *statefile.Task) error {
	for {
		if ctx.Err() != nil {
			return nil
		}
		p := Phase(t.Phase)
		var ev Event
		var detail string
		switch p {
		case Downloading:
			ev, detail = r.download(ctx, t)
		case Verifying:
			ev, detail = r.verify(ctx, t)
		case Applying:
			ev, detail = r.activate(ctx, t)
		case Probing:
			ev, detail = r.probe(ctx, t)
		case RollingBack:
			ev, detail = r.rollback(ctx, t)
		case Reverting:
			ev, detail = r.revert(ctx, t)
		default:
			return r.finish(ctx, t, Failed, "internal: task in phase "+t.Phase, false)
		}
		if ctx.Err() != nil {
			return nil
		}
		next, outcome, ok := Next(p, Phase(t.Outcome), ev)
		switch {
		case !ok:
			return r.finish(ctx, t, Failed, fmt.Sprintf("internal: %s in phase %s", ev, p), false)
		case ev == EvTransient:
			return r.transient(ctx, t, p, detail)
		case ev == EvUndoFailed && t.UndoAttempts+1 < MaxUndoAttempts:
			return r.retryUndo(ctx, t, detail)
		case next.Terminal():
			return r.finish(ctx, t, next, detail, true)
		}
		prevState := p.Reported()
		err := r.edit(func(*statefile.Journal) {
			t.Phase, t.Outcome = string(next), string(outcome)
			if detail != "" {
				t.Detail = detail
			}
		})
		if err != nil {
			return err
		}
		r.crashpoint("saved:" + string(next))
		if next.Reported() != prevState {
			r.report(ctx, t, next, "")
		}
	}
}

// transient keeps t non-terminal and schedules a retry with backoff.
func (r *Reconciler) transient(ctx context.Context, t *statefile.Task, p Phase, detail string) error {
	r.removePartial(t)
	wait := r.opts.Backoff(t.Attempts + 1)
	err := r.edit(func(*statefile.Journal) {
		t.Phase = string(Downloading)
		t.Attempts++
		t.NextAttemptMs = r.opts.Now().Add(wait).UnixMilli()
		t.Detail = detail
	})
	if err != nil {
		return err
	}
	r.crashpoint("saved:retry")
	r.log.Info("transient problem; will retry", "assignment", t.AssignmentID, "phase", p, "attempt", t.Attempts, "in", wait, "detail", detail)
	if strings.HasPrefix(detail, verificationPrefix) {
		p = Verifying
	}
	r.report(ctx, t, p, fmt.Sprintf("%s; retry %d in %s", detail, t.Attempts, wait.Round(time.Second)))
	return nil
}

// MaxUndoAttempts is how many times a rollback is tried before the
// assignment ends failed.
const MaxUndoAttempts = 5

// retryUndo keeps a failed rollback in flight and schedules another try
// with backoff (also tried at the next start): the runtime may still be
// starting after a reboot, or be briefly unavailable, and giving up at
// once would leave what runs unknown.
func (r *Reconciler) retryUndo(ctx context.Context, t *statefile.Task, detail string) error {
	wait := r.opts.Backoff(t.UndoAttempts + 1)
	err := r.edit(func(*statefile.Journal) {
		t.UndoAttempts++
		t.NextAttemptMs = r.opts.Now().Add(wait).UnixMilli()
	})
	if err != nil {
		return err
	}
	r.crashpoint("saved:undo-retry")
	r.log.Warn("rollback failed; will retry", "assignment", t.AssignmentID, "attempt", t.UndoAttempts, "in", wait, "detail", detail)
	r.report(ctx, t, RollingBack, fmt.Sprintf("%s; retry %d of %d in %s", detail, t.UndoAttempts, MaxUndoAttempts-1, wait.Round(time.Second)))
	return nil
}

// finish records a terminal outcome (and, when applied, the slot change it
// implies) in one journal write, reports it, then prunes what the journal
// no longer references.
func (r *Reconciler) finish(ctx context.Context, t *statefile.Task, p Phase, detail string, applied bool) error {
	if detail == "" {
		detail = t.Detail
	}
	err := r.edit(func(j *statefile.Journal) {
		if applied {
			for _, a := range r.settleSlot(j, t, p) {
				if _, ok := r.opts.Appliers[a.Kind].(Forgetter); ok {
					j.Forget = append(j.Forget, a)
				}
			}
		}
		delete(j.Tasks, t.AssignmentID)
		j.AddDone(statefile.Done{AssignmentID: t.AssignmentID, State: string(p), Detail: detail, StartedMs: t.StartedMs, AtMs: r.opts.Now().UnixMilli()})
	})
	if err != nil {
		return err
	}
	r.crashpoint("saved:" + string(p))
	r.log.Info("assignment finished", "assignment", t.AssignmentID, "artifact", t.Artifact.Name, "version", t.Artifact.Version, "state", p, "detail", detail)
	r.report(ctx, t, p, detail)
	if t.Artifact.Name != "" {
		r.prune(t.Artifact.Name)
		r.forget(ctx)
		r.crashpoint("did:prune")
	}
	return nil
}

// forget lets appliers that keep their own store (container images) drop
// the versions finish queued in the journal; the queue outlives a crash, so
// Resume completes it. A version referenced again meanwhile (by a slot or
// an assignment in flight) is skipped. Best effort: a failure only leaks
// disk, never changes what runs.
func (r *Reconciler) forget(ctx context.Context) {
	r.mu.Lock()
	pending := slices.Clone(r.j.Forget)
	r.mu.Unlock()
	if len(pending) == 0 {
		return
	}
	for _, a := range pending {
		f, ok := r.opts.Appliers[a.Kind].(Forgetter)
		if !ok || r.referenced(a) {
			continue
		}
		fctx, cancel := context.WithTimeout(ctx, r.opts.Deadlines.Rollback)
		if err := f.Forget(fctx, a); err != nil {
			r.log.Warn("forget old version", "artifact", a.Name, "version", a.Version, "err", err)
		}
		cancel()
	}
	err := r.edit(func(j *statefile.Journal) {
		j.Forget = slices.DeleteFunc(j.Forget, func(a *statefile.Artifact) bool { return slices.Contains(pending, a) })
	})
	if err != nil {
		r.log.Warn("forget old versions", "err", err)
	}
}

// referenced reports whether a slot or an assignment in flight still needs
// the stored bytes of a.
func (r *Reconciler) referenced(a *statefile.Artifact) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	var used []*statefile.Artifact
	for _, s := range r.j.Slots {
		for _, k := range []*statefile.Artifact{s.Current, s.Previous} {
			if k != nil {
				used = append(used, k)
			}
		}
	}
	for _, t := range r.j.Tasks {
		used = append(used, &t.Artifact)
	}
	return slices.ContainsFunc(used, func(k *statefile.Artifact) bool {
		return (k.Name == a.Name && k.Version == a.Version) ||
			(k.Container != nil && a.Container != nil && k.Container.Image == a.Container.Image)
	})
}

// settleSlot is the slot change a terminal phase implies; it returns the
// artifacts the slot referenced (or was trying) and no longer does.
func (r *Reconciler) settleSlot(j *statefile.Journal, t *statefile.Task, p Phase) []*statefile.Artifact {
	name := t.Artifact.Name
	var before []*statefile.Artifact
	if s := j.Slots[name]; s != nil {
		before = append(before, s.Current, s.Previous)
	}
	next := t.Artifact
	before = append(before, &next, t.Prior)
	switch {
	case p == Healthy:
		s := j.Slot(name)
		if t.Prior == nil && t.Artifact.Kind == "config" {
			s.Original = t.Artifact.Backup
		}
		s.Previous, s.Current = t.Prior, &next
	case p == Reverted && t.RevertTo == nil:
		delete(j.Slots, name)
	case p == Reverted:
		s := j.Slot(name)
		s.Previous, s.Current = t.Prior, &next
	}
	var keep []*statefile.Artifact
	if s := j.Slots[name]; s != nil {
		keep = []*statefile.Artifact{s.Current, s.Previous}
	}
	var dropped []*statefile.Artifact
	for _, a := range before {
		if a != nil && !slices.ContainsFunc(keep, func(k *statefile.Artifact) bool { return sameStore(k, a) }) &&
			!slices.ContainsFunc(dropped, func(d *statefile.Artifact) bool { return sameStore(d, a) }) {
			dropped = append(dropped, a)
		}
	}
	return dropped
}

// sameStore reports whether a and b need the same stored bytes: the same
// version, or the same container image under two versions.
func sameStore(a, b *statefile.Artifact) bool {
	if a == nil || b == nil {
		return false
	}
	if a.Version == b.Version {
		return true
	}
	return a.Container != nil && b.Container != nil && a.Container.Image == b.Container.Image
}

// dropUndesired forgets downloads the server no longer asks for.
func (r *Reconciler) dropUndesired(want map[string]bool) error {
	r.mu.Lock()
	var drop []*statefile.Task
	for id, t := range r.j.Tasks {
		if !want[id] && Phase(t.Phase) == Downloading {
			drop = append(drop, t)
		}
	}
	r.mu.Unlock()
	for _, t := range drop {
		if err := r.edit(func(j *statefile.Journal) { delete(j.Tasks, t.AssignmentID) }); err != nil {
			return err
		}
		r.removePartial(t)
		r.prune(t.Artifact.Name)
	}
	return nil
}

func (r *Reconciler) removePartial(t *statefile.Task) {
	staged, err := r.layout.StagedFile(t.Artifact.Name, t.Artifact.Version, fileName(t.Artifact.TargetPath))
	if err != nil {
		return
	}
	if err := os.Remove(file.PartialFile(staged)); err != nil && !errors.Is(err, os.ErrNotExist) {
		r.log.Warn("remove partial download", "err", err)
	}
	// Directories the download made and nothing else uses: remove only
	// succeeds on an empty directory, so a staged or current version stays.
	versionDir := filepath.Dir(staged)
	for _, d := range []string{versionDir, filepath.Dir(versionDir), r.layout.SlotDir(t.Artifact.Name)} {
		if os.Remove(d) != nil {
			break
		}
	}
}
