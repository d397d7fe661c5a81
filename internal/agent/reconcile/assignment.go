package reconcile

import (
	"fmt"
	"regexp"

	"github.com/meshanics/meshanics/internal/agent/statefile"
	"github.com/meshanics/meshanics/internal/artifact"
	"github.com/meshanics/meshanics/internal/healthprobe"
	"github.com/meshanics/meshanics/internal/names"
	devicev1 "github.com/meshanics/meshanics/proto/meshanics/device/v1"
)

// MaxLength bounds the size of one artifact the agent will stage.
const MaxLength = 64 << 30

var (
	idRE     = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$`)
	sha256RE = regexp.MustCompile(`^[0-9a-f]{64}$`)
)

// Actions of an assignment.
const (
	ActionApply  = "apply"
	ActionRevert = "revert"
)

// validID keeps assignment ids usable as file names (config backups).
func validID(id string) error {
	if !idRE.MatchString(id) {
		return fmt.Errorf("assignment id %q is not [A-Za-z0-9._-]{1,128}", truncate(id))
	}
	return nil
}

// artifactOf validates what the server says about an artifact; the
// reconciler trusts none of it beyond naming what to fetch through TUF.
func artifactOf(a *devicev1.Artifact) (statefile.Artifact, error) {
	if a == nil {
		return statefile.Artifact{}, fmt.Errorf("assignment has no artifact")
	}
	kind, name, version, _, err := artifact.ParseTargetPath(a.GetTargetPath())
	if err != nil {
		return statefile.Artifact{}, err
	}
	if kind != a.GetKind() || name != a.GetName() || version != a.GetVersion() {
		return statefile.Artifact{}, fmt.Errorf("artifact %s@%s (%s) does not match its target path %s", truncate(a.GetName()), truncate(a.GetVersion()), truncate(a.GetKind()), a.GetTargetPath())
	}
	if !sha256RE.MatchString(a.GetSha256()) {
		return statefile.Artifact{}, fmt.Errorf("artifact sha256 must be 64 lower-case hex digits")
	}
	if a.GetLength() < 1 || a.GetLength() > MaxLength {
		return statefile.Artifact{}, fmt.Errorf("artifact length %d out of range [1, %d]", a.GetLength(), int64(MaxLength))
	}
	return statefile.Artifact{Kind: kind, Name: name, Version: version, SHA256: a.GetSha256(), Length: a.GetLength(), TargetPath: a.GetTargetPath()}, nil
}

// newTask turns a validated assignment into a task (not yet persisted).
func newTask(a *devicev1.Assignment, nowMs int64) (*statefile.Task, error) {
	t := &statefile.Task{AssignmentID: a.GetId(), RolloutID: a.GetRolloutId(), Action: a.GetAction(), StartedMs: nowMs}
	if t.Action == "" {
		t.Action = ActionApply
	}
	if len(t.RolloutID) > 128 {
		return t, fmt.Errorf("rollout id longer than 128 bytes")
	}
	art, err := artifactOf(a.GetArtifact())
	if err != nil {
		return t, err
	}
	t.Artifact = art
	switch t.Action {
	case ActionApply:
		t.Phase = string(Downloading)
		if p := a.GetProbe(); p != nil && p.GetType() != "" {
			spec := healthprobe.Spec{Type: p.GetType(), Target: p.GetTarget(), Args: p.GetArgs(),
				TimeoutSeconds: int(p.GetTimeoutSeconds()), Attempts: int(p.GetAttempts()),
				InitialDelaySeconds: int(p.GetInitialDelaySeconds()), IntervalSeconds: int(p.GetIntervalSeconds())}.WithDefaults()
			t.Probe = &spec
		}
	case ActionRevert:
		t.Phase = string(Reverting)
		if rt := a.GetRevertTo(); rt != nil && rt.GetName() != "" {
			if rt.GetName() != art.Name {
				return t, fmt.Errorf("revert_to names %q, not %q", truncate(rt.GetName()), art.Name)
			}
			if err := names.ValidateVersion(rt.GetVersion()); err != nil {
				return t, err
			}
			t.RevertTo = &statefile.Artifact{Kind: art.Kind, Name: art.Name, Version: rt.GetVersion(), SHA256: rt.GetSha256()}
		}
	default:
		return t, fmt.Errorf("assignment action %q is neither apply nor revert", truncate(t.Action))
	}
	return t, nil
}

func truncate(s string) string {
	if len(s) > 80 {
		return s[:80] + "…"
	}
	return s
}
