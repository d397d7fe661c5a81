// Package reconcile is the agent's update lifecycle: it converges the
// assignments of each heartbeat against the installed artifacts, walking
// each through downloading → verifying → applying → healthy | rolled_back |
// failed (reverts: reverting → reverted | revert_failed). A pure transition
// function (Next) and one crash-recovery mapping (Recover) decide; the loop
// here does the side effects, each preceded by a journal write. Imported by
// the agent's composition root only.
package reconcile

import (
	"context"
	"io"

	"github.com/meshanics/meshanics/internal/agent/statefile"
	"github.com/meshanics/meshanics/internal/agent/tufclient"
	"github.com/meshanics/meshanics/internal/healthprobe"
	devicev1 "github.com/meshanics/meshanics/proto/meshanics/device/v1"
)

// Fetcher is the only way apply code gets bytes: it resolves a.TargetPath
// through TUF, streams the verified target into w (failing on any digest or
// length mismatch with both the signed metadata and a) and returns what it
// verified: the signed custom metadata, and the sha256 and length of the
// bytes it wrote, hashed as they streamed. The reconciler trusts that digest
// and does not hash the bytes a second time (one pass, SPEC §12); it still
// checks it against the assignment and counts the bytes that reach the disk.
type Fetcher interface {
	Fetch(ctx context.Context, a *devicev1.Artifact, w io.Writer) (tufclient.Verified, error)
}

// Reporter sends one ReportArtifactStatus.
type Reporter interface {
	Report(ctx context.Context, assignmentID, state, detail string) error
}

// Applier activates one kind of artifact. Every method must be idempotent:
// after a crash the reconciler calls it again for the same arguments.
type Applier interface {
	// Check refuses, before any side effect, what device policy forbids
	// (errdefs.ErrPermission) or what is malformed (errdefs.ErrInvalid).
	Check(a *statefile.Artifact) error
	// Activate makes next the running version of its slot; prior is what
	// runs now (nil: nothing).
	Activate(ctx context.Context, next, prior *statefile.Artifact) error
	// Undo returns the slot to prior after a failed, partial or unfinished
	// Activate(next, prior), whether or not Activate ran at all.
	Undo(ctx context.Context, next, prior *statefile.Artifact) error
	// Remove takes cur away (a revert to nothing); original is the config
	// backup of what was there before Meshanics.
	Remove(ctx context.Context, cur *statefile.Artifact, original string) error
}

// Stager is an Applier that fetches more during the download phase (a
// container image pull). Its errors are transient, like download errors.
type Stager interface {
	Stage(ctx context.Context, a *statefile.Artifact) error
}

// Forgetter is an Applier that keeps versions in a store of its own (a
// container runtime's images): Forget drops a version the slot no longer
// references (neither current nor previous). It must not touch what runs.
type Forgetter interface {
	Forget(ctx context.Context, a *statefile.Artifact) error
}

// Prober runs health probes.
type Prober interface {
	Check(spec healthprobe.Spec) error
	Run(ctx context.Context, spec healthprobe.Spec) error
}
