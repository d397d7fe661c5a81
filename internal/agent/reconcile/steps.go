package reconcile

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"time"

	"github.com/meshanics/meshanics/internal/agent/apply/file"
	"github.com/meshanics/meshanics/internal/agent/statefile"
	"github.com/meshanics/meshanics/internal/agent/tufclient"
	"github.com/meshanics/meshanics/internal/atomicfile"
	"github.com/meshanics/meshanics/internal/errdefs"
	devicev1 "github.com/meshanics/meshanics/proto/meshanics/device/v1"
)

// verificationPrefix marks a transient problem found by verification (TUF
// or the cross-check), reported as verifying rather than downloading.
const verificationPrefix = "verification: "

func fileName(targetPath string) string { return path.Base(targetPath) }

func (r *Reconciler) applier(kind string) (Applier, error) {
	a := r.opts.Appliers[kind]
	if a == nil {
		if kind == "container" {
			return nil, fmt.Errorf("no container runtime (-container-runtime=none or none found)")
		}
		return nil, fmt.Errorf("%s artifacts are not supported by this agent", kind)
	}
	return a, nil
}

// download streams the target into the partial file; the fetcher hashes
// and verifies it as it streams.
func (r *Reconciler) download(ctx context.Context, t *statefile.Task) (Event, string) {
	if r.opts.Fetcher == nil {
		return EvRejected, "OTA not configured"
	}
	if _, err := r.applier(t.Artifact.Kind); err != nil {
		return EvRejected, err.Error()
	}
	staged, err := r.layout.StagedFile(t.Artifact.Name, t.Artifact.Version, fileName(t.Artifact.TargetPath))
	if err != nil {
		return EvRejected, err.Error()
	}
	// Models are read by other services; configs and descriptors may hold
	// secrets and are placed with their own mode, so they stay private here.
	dirPerm, filePerm := os.FileMode(0o755), os.FileMode(0o644)
	if t.Artifact.Kind != "model" {
		dirPerm, filePerm = 0o700, 0o600
	}
	ctx, cancel := context.WithTimeout(ctx, r.opts.Deadlines.Download)
	defer cancel()
	// Nothing appears in the artifact area before TUF has verified the
	// metadata and the signed target's first bytes arrive: the partial
	// file and its directories are made on the first write (and removed
	// again, with the directories, when the download fails).
	pf := &lazyFile{open: func() (*os.File, error) {
		if err := os.MkdirAll(r.layout.SlotDir(t.Artifact.Name), 0o755); err != nil {
			return nil, err
		}
		if err := os.MkdirAll(filepath.Dir(staged), dirPerm); err != nil {
			return nil, err
		}
		return os.OpenFile(file.PartialFile(staged), os.O_WRONLY|os.O_CREATE|os.O_TRUNC, filePerm)
	}}
	defer pf.close()
	a := &devicev1.Artifact{Kind: t.Artifact.Kind, Name: t.Artifact.Name, Version: t.Artifact.Version,
		TargetPath: t.Artifact.TargetPath, Sha256: t.Artifact.SHA256, Length: t.Artifact.Length}
	sw := newStageWriter(pf)
	v, err := r.opts.Fetcher.Fetch(ctx, a, sw)
	n, werr := sw.Close()
	if err == nil && werr != nil {
		err = fmt.Errorf("staging: %w", werr)
	}
	if err == nil && n != v.Length {
		err = fmt.Errorf("%w: staged %d bytes, the fetcher verified %d", tufclient.ErrVerification, n, v.Length)
	}
	var f *os.File
	if err == nil {
		if f, err = pf.file(); err != nil { // an empty target wrote nothing yet
			err = fmt.Errorf("staging: %w", err)
		}
	}
	if errors.Is(err, tufclient.ErrVerification) {
		return EvTransient, verificationPrefix + err.Error()
	}
	if err != nil {
		return EvTransient, fmt.Sprintf("download: %v", err)
	}
	if err := f.Sync(); err != nil {
		return EvTransient, fmt.Sprintf("staging: %v", err)
	}
	r.crashpoint("did:fetch")
	custom := v.Custom
	if err := custom.Validate(); err != nil {
		return EvRejected, fmt.Sprintf("signed descriptor invalid: %v", err)
	}
	if custom.Kind != t.Artifact.Kind || custom.Name != t.Artifact.Name || custom.Version != t.Artifact.Version {
		return EvRejected, fmt.Sprintf("signed metadata names %s %s@%s, not the assigned artifact", custom.Kind, custom.Name, custom.Version)
	}
	t.StagedSHA256, t.StagedLength = v.SHA256, n
	t.Artifact.Config, t.Artifact.Container = custom.Config, custom.Container
	return EvFetched, ""
}

// verify cross-checks the staged bytes against the assignment, moves them
// to their staged name, pulls what the applier needs, and checks policy
// before anything runs. It fills in what a rollback will need (Prior, the
// config backup location), so entering Applying persists it first.
func (r *Reconciler) verify(ctx context.Context, t *statefile.Task) (Event, string) {
	staged, err := r.layout.StagedFile(t.Artifact.Name, t.Artifact.Version, fileName(t.Artifact.TargetPath))
	if err != nil {
		return EvRejected, err.Error()
	}
	if t.StagedSHA256 != t.Artifact.SHA256 || t.StagedLength != t.Artifact.Length {
		return EvTransient, fmt.Sprintf(verificationPrefix+"staged %d bytes sha256 %s, assignment says %d bytes sha256 %s",
			t.StagedLength, short(t.StagedSHA256), t.Artifact.Length, short(t.Artifact.SHA256))
	}
	if err := os.Rename(file.PartialFile(staged), staged); err != nil {
		return EvTransient, fmt.Sprintf("verification: %v", err)
	}
	// The rename, and the directories the download created, must be
	// durable before current can point at them (after a power loss the
	// journal must not name a version whose directory entry was lost).
	versionDir := filepath.Dir(staged)
	for _, d := range []string{versionDir, filepath.Dir(versionDir), r.layout.SlotDir(t.Artifact.Name), r.layout.Root} {
		if err := atomicfile.SyncDir(d); err != nil {
			return EvTransient, fmt.Sprintf("verification: %v", err)
		}
	}
	r.crashpoint("did:stage")
	t.Artifact.File = staged
	ap, err := r.applier(t.Artifact.Kind)
	if err != nil {
		return EvRejected, err.Error()
	}
	if err := ap.Check(&t.Artifact); err != nil {
		return EvRejected, err.Error()
	}
	if t.Probe != nil {
		if err := r.opts.Prober.Check(*t.Probe); err != nil {
			return EvRejected, err.Error()
		}
	}
	if st, ok := ap.(Stager); ok {
		// A pull is a download: it gets the download deadline, not the
		// (shorter) verification one.
		sctx, cancel := context.WithTimeout(ctx, r.opts.Deadlines.Download)
		err := st.Stage(sctx, &t.Artifact)
		cancel()
		if err != nil {
			return EvTransient, fmt.Sprintf("pull: %v", err)
		}
		r.crashpoint("did:pull")
	}
	r.mu.Lock()
	if s := r.j.Slots[t.Artifact.Name]; s != nil && s.Current != nil {
		prior := *s.Current
		t.Prior = &prior
	}
	r.mu.Unlock()
	if t.Artifact.Kind == "config" {
		t.Artifact.Backup = r.backupDir(t)
	}
	return EvVerified, ""
}

func (r *Reconciler) backupDir(t *statefile.Task) string {
	return filepath.Join(r.layout.SlotDir(t.Artifact.Name), "backups", t.AssignmentID)
}

func short(s string) string { return s[:min(len(s), 12)] }

func (r *Reconciler) activate(ctx context.Context, t *statefile.Task) (Event, string) {
	ap, err := r.applier(t.Artifact.Kind)
	if err != nil {
		return EvActivateFailed, err.Error()
	}
	ctx, cancel := context.WithTimeout(ctx, r.opts.Deadlines.Apply)
	defer cancel()
	err = ap.Activate(ctx, &t.Artifact, t.Prior)
	r.crashpoint("did:activate")
	if err != nil {
		return EvActivateFailed, fmt.Sprintf("apply: %v", err)
	}
	return EvActivated, ""
}

func (r *Reconciler) probe(ctx context.Context, t *statefile.Task) (Event, string) {
	if t.Probe == nil {
		return EvProbeOK, ""
	}
	s := *t.Probe
	worst := time.Duration(s.InitialDelaySeconds+s.Attempts*(s.TimeoutSeconds+s.IntervalSeconds)) * time.Second
	ctx, cancel := context.WithTimeout(ctx, worst+r.opts.Deadlines.Probe)
	defer cancel()
	err := r.opts.Prober.Run(ctx, s)
	r.crashpoint("did:probe")
	switch {
	case err == nil:
		return EvProbeOK, ""
	case errors.Is(err, errdefs.ErrPermission) || errors.Is(err, errdefs.ErrInvalid):
		return EvProbeRefused, fmt.Sprintf("probe refused: %v", err)
	}
	return EvProbeFailed, err.Error()
}

func (r *Reconciler) rollback(ctx context.Context, t *statefile.Task) (Event, string) {
	why := t.Detail
	ap, err := r.applier(t.Artifact.Kind)
	if err != nil {
		return EvUndoFailed, fmt.Sprintf("%s; rollback impossible: %v", why, err)
	}
	ctx, cancel := context.WithTimeout(ctx, r.opts.Deadlines.Rollback)
	defer cancel()
	err = ap.Undo(ctx, &t.Artifact, t.Prior)
	r.crashpoint("did:undo")
	if err != nil {
		return EvUndoFailed, fmt.Sprintf("%s; rollback failed: %v", why, err)
	}
	back := "nothing (slot was empty)"
	if t.Prior != nil {
		back = t.Prior.Version
	}
	return EvUndone, fmt.Sprintf("%s; restored %s", why, back)
}

// revert carries out the plan shortcut made: go back to t.Artifact (the
// slot's previous version), or remove t.Prior when RevertTo is empty.
func (r *Reconciler) revert(ctx context.Context, t *statefile.Task) (Event, string) {
	ap, err := r.applier(t.Artifact.Kind)
	if err != nil {
		return EvRevertFailed, err.Error()
	}
	ctx, cancel := context.WithTimeout(ctx, r.opts.Deadlines.Rollback)
	defer cancel()
	if t.RevertTo == nil {
		r.mu.Lock()
		var original string
		if s := r.j.Slots[t.Artifact.Name]; s != nil {
			original = s.Original
		}
		r.mu.Unlock()
		err := ap.Remove(ctx, t.Prior, original)
		r.crashpoint("did:revert")
		if err != nil {
			return EvRevertFailed, fmt.Sprintf("remove: %v", err)
		}
		return EvRevertDone, "removed " + t.Prior.Version
	}
	err = ap.Activate(ctx, &t.Artifact, t.Prior)
	r.crashpoint("did:revert")
	if err != nil {
		if uerr := ap.Undo(ctx, &t.Artifact, t.Prior); uerr != nil {
			return EvRevertFailed, fmt.Sprintf("revert: %v; restoring %s failed too: %v", err, t.Prior.Version, uerr)
		}
		return EvRevertFailed, fmt.Sprintf("revert: %v; %s kept", err, t.Prior.Version)
	}
	return EvRevertDone, "reverted to " + t.Artifact.Version
}

// prune removes staged versions and config backups the journal no longer
// references: each slot keeps its current and previous version.
func (r *Reconciler) prune(name string) {
	r.mu.Lock()
	keep, backups := []string{}, map[string]bool{}
	if s := r.j.Slots[name]; s != nil {
		for _, a := range []*statefile.Artifact{s.Current, s.Previous} {
			if a != nil {
				keep = append(keep, a.Version)
				backups[a.Backup] = true
			}
		}
		backups[s.Original] = true
	}
	for _, t := range r.j.Tasks {
		if t.Artifact.Name == name {
			keep = append(keep, t.Artifact.Version)
			backups[t.Artifact.Backup] = true
		}
	}
	r.mu.Unlock()
	if err := r.layout.Prune(name, keep...); err != nil {
		r.log.Warn("prune versions", "slot", name, "err", err)
	}
	dir := filepath.Join(r.layout.SlotDir(name), "backups")
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		if p := filepath.Join(dir, e.Name()); !backups[p] {
			if err := os.RemoveAll(p); err != nil {
				r.log.Warn("prune backups", "slot", name, "err", err)
			}
		}
	}
}
