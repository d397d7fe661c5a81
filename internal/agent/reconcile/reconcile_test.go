package reconcile

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/meshanics/meshanics/internal/agent/execx"
	"github.com/meshanics/meshanics/internal/artifact"
	"github.com/meshanics/meshanics/internal/errdefs"
	devicev1 "github.com/meshanics/meshanics/proto/meshanics/device/v1"
	"google.golang.org/protobuf/testing/protocmp"
)

var ctx = context.Background()

func TestModelHealthyThenRolledBack(t *testing.T) {
	e := newEnv(t)
	r := e.start(t)
	okProbe := fileProbe(filepath.Join(e.data, "artifacts/det/current/model.onnx"))
	v1 := apply("a1", e.repo.model("det", "1.0", "weights-one"), okProbe)
	if err := r.Reconcile(ctx, []*devicev1.Assignment{v1}); err != nil {
		t.Fatal(err)
	}
	if got, want := e.rep.states("a1"), []string{"downloading", "verifying", "applying", "healthy"}; !cmp.Equal(got, want) {
		t.Errorf("reports for v1 = %v, want %v", got, want)
	}
	v2 := apply("a2", e.repo.model("det", "2.0", "weights-two"), fileProbe(filepath.Join(e.data, "missing")))
	if err := r.Reconcile(ctx, []*devicev1.Assignment{v2}); err != nil {
		t.Fatal(err)
	}
	if got := e.rep.last("a2"); got != "rolled_back" {
		t.Errorf("v2 with failing probe ended %q, want rolled_back (reports %v)", got, e.rep.got)
	}
	if got := e.current("det"); got != "weights-one" {
		t.Errorf("current after rollback = %q, want weights-one", got)
	}
	want := []*devicev1.InstalledArtifact{{Kind: "model", Name: "det", Version: "1.0", Sha256: v1.Artifact.Sha256}}
	if d := cmp.Diff(want, r.Installed(), protocmp.Transform()); d != "" {
		t.Errorf("Installed() (-want +got):\n%s", d)
	}
	if _, err := os.Stat(filepath.Join(e.data, "artifacts/det/versions/2.0")); err == nil {
		t.Error("the rolled-back version was not pruned")
	}
}

func TestModelKeepsCurrentAndPrevious(t *testing.T) {
	e := newEnv(t)
	r := e.start(t)
	for i, v := range []string{"1", "2", "3"} {
		a := apply("a"+v, e.repo.model("det", v, "w"+v), nil)
		if err := r.Reconcile(ctx, []*devicev1.Assignment{a}); err != nil {
			t.Fatal(err)
		}
		if got := e.rep.last("a" + v); got != "healthy" {
			t.Fatalf("apply %d ended %q", i, got)
		}
	}
	ents, _ := os.ReadDir(filepath.Join(e.data, "artifacts/det/versions"))
	var names []string
	for _, d := range ents {
		names = append(names, d.Name())
	}
	if !cmp.Equal(names, []string{"2", "3"}) {
		t.Errorf("versions kept = %v, want [2 3]", names)
	}
	if got := r.Installed()[0].PreviousVersion; got != "2" {
		t.Errorf("previous_version = %q, want 2", got)
	}
}

func TestTransientDownloadRetriesWithBackoff(t *testing.T) {
	e := newEnv(t)
	r := e.start(t)
	e.repo.fail = errors.New("connection refused")
	a := apply("a1", e.repo.model("det", "1", "w1"), nil)
	r.Reconcile(ctx, []*devicev1.Assignment{a})
	if got := e.rep.states("a1"); !cmp.Equal(got, []string{"downloading", "downloading"}) {
		t.Fatalf("reports = %v, want two non-terminal downloading", got)
	}
	e.repo.fail = nil
	r.Reconcile(ctx, []*devicev1.Assignment{a})
	if n := len(e.rep.states("a1")); n != 2 {
		t.Errorf("retried before the backoff elapsed (%d reports)", n)
	}
	e.clock.Add(31 * time.Second)
	r.Reconcile(ctx, []*devicev1.Assignment{a})
	if got := e.rep.last("a1"); got != "healthy" {
		t.Errorf("after backoff ended %q, want healthy", got)
	}
}

func TestTamperedBytesStayNonTerminal(t *testing.T) {
	e := newEnv(t)
	r := e.start(t)
	a := apply("a1", e.repo.model("det", "1", "weights"), nil)
	e.repo.tamper[a.Artifact.TargetPath] = "bytes"
	r.Reconcile(ctx, []*devicev1.Assignment{a})
	if got := e.rep.last("a1"); got != "verifying" {
		t.Errorf("tampered download reported %q, want verifying (non-terminal)", got)
	}
	e.repo.tamper[a.Artifact.TargetPath] = "tuf"
	e.clock.Add(time.Hour)
	r.Reconcile(ctx, []*devicev1.Assignment{a})
	if got := e.rep.got[len(e.rep.got)-1]; !strings.HasPrefix(got, "a1 verifying verification: update verification failed") {
		t.Errorf("TUF verification failure reported %q, want verifying with the reason", got)
	}
	if got := e.current("det"); got != "<none>" {
		t.Errorf("tampered bytes were activated: current = %q", got)
	}
	if m, _ := filepath.Glob(filepath.Join(e.data, "artifacts/det/versions/1/*")); len(m) != 0 {
		t.Errorf("tampered bytes left staged: %v", m)
	}
}

// Expired update metadata (a frozen repository, or a device whose clock is
// ahead) refuses the install, reports why, and stays non-terminal: once
// the repository re-signs, the same assignment installs.
func TestExpiredMetadataRefusesInstallAndReportsWhy(t *testing.T) {
	e := newEnv(t)
	r := e.start(t)
	a := apply("a1", e.repo.model("det", "1", "weights"), nil)
	e.repo.fail = fmt.Errorf("refresh update metadata: timestamp.json is expired: %w", errdefs.ErrExpired)
	if err := r.Reconcile(ctx, []*devicev1.Assignment{a}); err != nil {
		t.Fatalf("Reconcile with expired metadata = %v, want nil (the agent keeps running)", err)
	}
	got := e.rep.got[len(e.rep.got)-1]
	if !strings.HasPrefix(got, "a1 downloading ") || !strings.Contains(got, "expired") {
		t.Errorf("expired metadata reported %q, want downloading with the reason", got)
	}
	if cur := e.current("det"); cur != "<none>" {
		t.Errorf("installed %q with expired metadata", cur)
	}
	e.repo.fail = nil
	e.clock.Add(time.Hour)
	r.Reconcile(ctx, []*devicev1.Assignment{a})
	if got := e.rep.last("a1"); got != "healthy" {
		t.Errorf("after the repository re-signed the assignment ended %q, want healthy", got)
	}
}

// A refused download leaves nothing in the artifact area: not a partial
// file, not an empty version directory. A refusal on the metadata (before
// any byte) never creates anything there at all.
func TestRefusedDownloadLeavesNothingInTheArtifactArea(t *testing.T) {
	for _, tamper := range []string{"tuf", "bytes", "short"} {
		t.Run(tamper, func(t *testing.T) {
			e := newEnv(t)
			r := e.start(t)
			a := apply("a1", e.repo.model("det", "1", "weights"), nil)
			e.repo.tamper[a.Artifact.TargetPath] = tamper
			if tamper == "tuf" {
				e.repo.midway = func() { t.Error("bytes streamed after a metadata refusal") }
			}
			r.Reconcile(ctx, []*devicev1.Assignment{a})
			if got := e.rep.last("a1"); got != "verifying" {
				t.Fatalf("refused download reported %q, want verifying", got)
			}
			// "bytes" and "short" are refused by the cross-checks of the
			// staged partial file (digest against the assignment, bytes on
			// disk against the verified length), so that file existed and
			// must be gone now.
			if d := e.rep.got[len(e.rep.got)-1]; tamper != "tuf" && !strings.Contains(d, "staged") {
				t.Fatalf("tampered bytes refused with %q, want the staged-bytes cross-check", d)
			}
			ents, err := os.ReadDir(filepath.Join(e.data, "artifacts"))
			if err != nil && !os.IsNotExist(err) {
				t.Fatal(err)
			}
			if len(ents) != 0 {
				t.Errorf("artifact area after a refused download holds %v, want nothing", ents)
			}
		})
	}
}

func TestDownloadDeadline(t *testing.T) {
	e := newEnv(t)
	e.opts.Deadlines.Download = 10 * time.Millisecond
	r := e.start(t)
	e.repo.block = true
	r.Reconcile(ctx, []*devicev1.Assignment{apply("a1", e.repo.model("det", "1", "w"), nil)})
	if got := e.rep.got[len(e.rep.got)-1]; !strings.Contains(got, "downloading") || !strings.Contains(got, "deadline") {
		t.Errorf("stuck download reported %q, want downloading with a deadline detail", got)
	}
}

func TestTerminalAssignmentIsReReportedNotRedone(t *testing.T) {
	e := newEnv(t)
	r := e.start(t)
	a := apply("a1", e.repo.model("det", "1", "w"), nil)
	r.Reconcile(ctx, []*devicev1.Assignment{a})
	r.Reconcile(ctx, []*devicev1.Assignment{a})
	if n := len(e.rep.states("a1")); n != 4 {
		t.Errorf("second reconcile of a reported assignment sent %d reports, want 4 in all", n)
	}
	r2 := e.start(t) // agent restart: re-report once, do nothing
	e.repo.fail = errors.New("must not fetch")
	r2.Reconcile(ctx, []*devicev1.Assignment{a})
	if got := e.rep.states("a1"); len(got) != 5 || got[4] != "healthy" {
		t.Errorf("after restart reports = %v, want one more healthy", got)
	}
}

func TestOTANotConfigured(t *testing.T) {
	e := newEnv(t)
	e.opts.Fetcher = nil
	r := e.start(t)
	r.Reconcile(ctx, []*devicev1.Assignment{apply("a1", e.repo.model("det", "1", "w"), nil)})
	if got := e.rep.got[len(e.rep.got)-1]; got != "a1 failed OTA not configured" {
		t.Errorf("last report = %q, want failed: OTA not configured", got)
	}
}

func TestInvalidAssignmentFails(t *testing.T) {
	e := newEnv(t)
	r := e.start(t)
	a := e.repo.model("det", "1", "w")
	a.TargetPath = "artifacts/model/other/1/model.onnx"
	r.Reconcile(ctx, []*devicev1.Assignment{apply("a1", a, nil), apply("../evil", a, nil)})
	if got := e.rep.last("a1"); got != "failed" {
		t.Errorf("mismatched target path ended %q, want failed", got)
	}
	if len(e.rep.states("../evil")) != 0 {
		t.Error("an assignment with an unsafe id was acted on")
	}
}

func TestProbeRefusedByPolicyFailsAndRestores(t *testing.T) {
	trueBin, err := execx.Find("true")
	if err != nil {
		t.Skip(err)
	}
	e := newEnv(t)
	r := e.start(t)
	r.Reconcile(ctx, []*devicev1.Assignment{apply("a1", e.repo.model("det", "1", "w1"), nil)})
	r.Reconcile(ctx, []*devicev1.Assignment{apply("a2", e.repo.model("det", "2", "w2"), &devicev1.HealthProbe{Type: "exec", Target: trueBin})})
	if got := e.rep.got[len(e.rep.got)-1]; !strings.HasPrefix(got, "a2 failed probe") || !strings.Contains(got, "allowlist") {
		t.Errorf("last report = %q, want failed: probe refused", got)
	}
	if got := e.current("det"); got != "w1" {
		t.Errorf("current = %q, want w1", got)
	}
}

func TestRevert(t *testing.T) {
	e := newEnv(t)
	r := e.start(t)
	a1, a2 := e.repo.model("det", "1", "w1"), e.repo.model("det", "2", "w2")
	r.Reconcile(ctx, []*devicev1.Assignment{apply("a1", a1, nil)})
	r.Reconcile(ctx, []*devicev1.Assignment{apply("a2", a2, nil)})
	rv := &devicev1.Assignment{Id: "rv1", Action: "revert", Artifact: a2, RevertTo: a1}
	r.Reconcile(ctx, []*devicev1.Assignment{rv})
	if got := e.rep.states("rv1"); !cmp.Equal(got, []string{"reverting", "reverted"}) {
		t.Errorf("revert reports = %v", got)
	}
	if got := e.current("det"); got != "w1" {
		t.Errorf("current after revert = %q, want w1", got)
	}
	gone := &devicev1.Assignment{Id: "rv2", Action: "revert", Artifact: a1}
	r.Reconcile(ctx, []*devicev1.Assignment{gone})
	if got := e.current("det"); got != "<none>" || len(r.Installed()) != 0 {
		t.Errorf("after revert to nothing current = %q installed = %v", got, r.Installed())
	}
	miss := &devicev1.Assignment{Id: "rv3", Action: "revert", Artifact: a2, RevertTo: e.repo.model("det", "0.9", "x")}
	r.Reconcile(ctx, []*devicev1.Assignment{apply("a3", a2, nil), miss})
	if got := e.rep.last("rv3"); got != "revert_failed" {
		t.Errorf("revert to a version not kept ended %q, want revert_failed", got)
	}
}

func configArtifact(e *env, version, content, dest string, reload *artifact.Reload) *devicev1.Artifact {
	return e.repo.publish("config", "app", version, "app.conf", []byte(content), artifact.Custom{
		Config: &artifact.ConfigProfile{Activator: "place-file", Destination: dest, Mode: "0640", Reload: reload}})
}

func TestConfigOutsideAllowlistFailsWithNothingWritten(t *testing.T) {
	e := newEnv(t)
	r := e.start(t)
	evil := filepath.Join(filepath.Dir(e.etc), "app-evil", "app.conf")
	os.MkdirAll(filepath.Dir(evil), 0o755)
	r.Reconcile(ctx, []*devicev1.Assignment{apply("c1", configArtifact(e, "1", "x=1", evil, nil), nil)})
	if got := e.rep.last("c1"); got != "failed" {
		t.Errorf("config outside the allowlist ended %q, want failed", got)
	}
	if _, err := os.Stat(evil); err == nil {
		t.Error("a file was written outside the allowlist")
	}
}

func TestConfigPlacedReloadedAndRolledBack(t *testing.T) {
	touch, err := execx.Find("touch")
	if err != nil {
		t.Skip(err)
	}
	e := newEnv(t).withOptions([]string{touch})
	r := e.start(t)
	dest := filepath.Join(e.etc, "app.conf")
	os.WriteFile(dest, []byte("hand-written"), 0o600)
	marker := filepath.Join(t.TempDir(), "reloaded")
	reload := &artifact.Reload{Exec: []string{touch, marker}}
	r.Reconcile(ctx, []*devicev1.Assignment{apply("c1", configArtifact(e, "1", "x=1", dest, reload), fileProbe(dest))})
	if got := e.rep.last("c1"); got != "healthy" {
		t.Fatalf("config apply ended %q (%v)", got, e.rep.got)
	}
	fi, _ := os.Stat(dest)
	if b, _ := os.ReadFile(dest); string(b) != "x=1" || fi.Mode().Perm() != 0o640 {
		t.Errorf("placed %q mode %v, want x=1 0640", b, fi.Mode().Perm())
	}
	if _, err := os.Stat(marker); err != nil {
		t.Errorf("reload did not run: %v", err)
	}
	staged, _ := filepath.Glob(filepath.Join(e.data, "artifacts/app/versions/1/*"))
	for _, p := range staged {
		if fi, err := os.Stat(p); err != nil || fi.Mode().Perm()&0o077 != 0 {
			t.Errorf("staged config %s is readable by others: %v", p, fi.Mode())
		}
	}
	r.Reconcile(ctx, []*devicev1.Assignment{apply("c2", configArtifact(e, "2", "x=2", dest, reload), fileProbe("/nonexistent"))})
	if got := e.rep.last("c2"); got != "rolled_back" {
		t.Errorf("config with failing probe ended %q, want rolled_back", got)
	}
	if b, _ := os.ReadFile(dest); string(b) != "x=1" {
		t.Errorf("after rollback dest = %q, want x=1", b)
	}
	r.Reconcile(ctx, []*devicev1.Assignment{{Id: "rv", Action: "revert", Artifact: configArtifact(e, "1", "x=1", dest, reload)}})
	fi, _ = os.Stat(dest)
	if b, _ := os.ReadFile(dest); string(b) != "hand-written" || fi.Mode().Perm() != 0o600 {
		t.Errorf("after revert to nothing dest = %q %v, want the original file back", b, fi.Mode().Perm())
	}
}
