package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"
)

// The demo's second half: publishing, the two rollouts, halt, resume,
// approve.

// demoRollout is the part of GET /api/v1/rollouts/{id} the demo checks.
type demoRollout struct {
	ID       string `json:"id"`
	State    string `json:"state"`
	Failures int    `json:"failures"`
	Waves    []struct {
		Index    int            `json:"index"`
		Percent  int            `json:"percent"`
		Approval string         `json:"approval"`
		Devices  int            `json:"devices"`
		Counts   map[string]int `json:"counts"`
	} `json:"waves"`
}

// demoRolloutDevice is one row of GET /api/v1/rollouts/{id}/devices.
type demoRolloutDevice struct {
	Device string `json:"device"`
	Wave   int    `json:"wave"`
	State  string `json:"state"`
	Detail string `json:"detail"`
}

func (d *demo) publish(ctx context.Context, version, note string) error {
	d.stepf("Publishing %s@%s: %s", demoArtifact, version, note)
	src := filepath.Join(d.dir, "artifacts", version)
	if err := os.MkdirAll(src, 0o700); err != nil {
		return err
	}
	model := filepath.Join(src, demoModelFile)
	// A stand-in for real weights: 256 KiB, different for every version.
	body := []byte(strings.Repeat(fmt.Sprintf("detector %s weights\n", version), 256<<10/len("detector "+version+" weights\n")+1))[:256<<10]
	if err := os.WriteFile(model, body, 0o600); err != nil {
		return err
	}
	manifest := filepath.Join(src, "manifest.json")
	m := fmt.Sprintf(`{"framework":"onnx","input":{"shape":[1,3,640,640]},"metrics":{"map50":%s},"target_hardware":"any","license":"Apache-2.0"}`,
		map[string]string{"1.0.0": "0.61", "1.1.0": "0.67"}[version])
	if err := os.WriteFile(manifest, []byte(m+"\n"), 0o600); err != nil {
		return err
	}
	_, err := d.meshctl(ctx, true, "artifacts", "publish", "-kind", "model", "-name", demoArtifact, "-version", version,
		"-file", model, "-manifest", manifest)
	return err
}

func (d *demo) publishFirst(ctx context.Context) error {
	return d.publish(ctx, "1.0.0", "upload it; the server signs it into the TUF metadata at once")
}

func (d *demo) publishSecond(ctx context.Context) error {
	return d.publish(ctx, "1.1.0", "a better model that also needs the camera calibration")
}

func (d *demo) rolloutFirst(ctx context.Context) error {
	d.stepf("Rolling out %s@1.0.0 to every camera in one wave", demoArtifact)
	if _, err := d.meshctl(ctx, true, append([]string{"groups", "create", demoGroupName}, demoDevices...)...); err != nil {
		return err
	}
	probe := `{"type":"file","target":"` + demoProbeModel + `","attempts":3,"interval_seconds":1,"timeout_seconds":2}`
	id, err := d.createRollout(ctx, "1.0.0", probe, "")
	if err != nil {
		return err
	}
	d.notef("the probe checks that the model is in place: a file probe on %s", demoProbeModel)
	if err := d.watch(ctx, id, "completed", func(r demoRollout) bool { return r.State == "completed" }); err != nil {
		return err
	}
	return d.expectDevices(id, func(dev demoRolloutDevice) string { return "healthy" })
}

func (d *demo) rolloutCanary(ctx context.Context) error {
	d.stepf("Canary rollout of %s@1.1.0: wave 0 = 20 %% (auto), wave 1 = 100 %% (manual approval), max_failure_rate 0", demoArtifact)
	probe := `{"type":"file","target":"` + demoProbeCalib + `","attempts":2,"interval_seconds":1,"timeout_seconds":1}`
	strategy := `{"waves":[{"percent":20,"approval":"auto"},{"percent":100,"approval":"manual"}],"max_failure_rate":0}`
	id, err := d.createRollout(ctx, "1.1.0", probe, strategy)
	if err != nil {
		return err
	}
	d.notef("the partition orders devices by sha256 of their name: %s is the canary, and it has no calibration file", d.canary)
	d.notef("watching live: the canary applies 1.1.0, its probe fails, the agent rolls back to 1.0.0, the rollout halts")
	return d.watch(ctx, id, "halted", func(r demoRollout) bool { return r.State == "halted" })
}

func (d *demo) showHalt(ctx context.Context) error {
	id := d.rollout["1.1.0"]
	d.stepf("The rollout halted itself: no other device got 1.1.0")
	if _, err := d.meshctl(ctx, true, "rollouts", "show", id); err != nil {
		return err
	}
	if _, err := d.meshctl(ctx, true, "rollouts", "devices", id); err != nil {
		return err
	}
	if err := d.showHaltEvent(ctx, id); err != nil {
		return err
	}
	devs, err := d.rolloutDevices(id)
	if err != nil {
		return err
	}
	for _, dev := range devs {
		if dev.Device == d.canary {
			if dev.State != "rolled_back" || dev.Wave != 0 {
				return fmt.Errorf("canary %s is %s in wave %d, want rolled_back in wave 0", d.canary, dev.State, dev.Wave)
			}
		} else if dev.State != "pending" {
			return fmt.Errorf("device %s is %s while the rollout is halted, want pending", dev.Device, dev.State)
		}
	}
	if v := d.onDisk(d.canary); v != "1.0.0" {
		return fmt.Errorf("canary %s runs %q on disk, want 1.0.0 after its rollback", d.canary, v)
	}
	d.notef("on %s's disk, artifacts/%s/current points at versions/1.0.0 again", d.canary, demoArtifact)
	return nil
}

func (d *demo) resumeApprove(ctx context.Context) error {
	id := d.rollout["1.1.0"]
	d.stepf("Resuming (acknowledges the one failure) and approving the 100 %% wave")
	d.notef("in real life: fix the cause first; here we accept %s as the known exception", d.canary)
	if _, err := d.meshctl(ctx, true, "rollouts", "resume", id); err != nil {
		return err
	}
	if err := d.waitFor(ctx, "the rollout to wait for approval", 60*time.Second, func() (bool, string, error) {
		r, err := d.getRollout(id)
		if err != nil {
			return false, err.Error(), nil
		}
		return r.State == "waiting_for_approval", r.State, d.agentsAlive()
	}); err != nil {
		return err
	}
	if _, err := d.meshctl(ctx, true, "rollouts", "approve", id); err != nil {
		return err
	}
	if err := d.watch(ctx, id, "completed", func(r demoRollout) bool { return r.State == "completed" }); err != nil {
		return err
	}
	return d.expectDevices(id, func(dev demoRolloutDevice) string {
		if dev.Device == d.canary {
			return "rolled_back"
		}
		return "healthy"
	})
}

// createRollout runs `meshctl rollouts create` and returns the id.
func (d *demo) createRollout(ctx context.Context, version, probe, strategy string) (string, error) {
	args := []string{"-o", "json", "rollouts", "create", "-artifact", demoArtifact + "@" + version, "-group", demoGroupName, "-probe", probe}
	if strategy != "" {
		args = append(args, "-strategy", strategy)
	}
	fmt.Fprintf(d.out, "    $ meshctl %s\n", strings.Join(quoteArgs(args), " "))
	out, err := d.meshctl(ctx, false, args...)
	if err != nil {
		return "", err
	}
	var r demoRollout
	if err := json.Unmarshal([]byte(out), &r); err != nil || r.ID == "" {
		return "", fmt.Errorf("rollouts create answered %q: %v", tail(out, 300), err)
	}
	d.notef("  rollout %s: %s, %d wave(s)", r.ID, r.State, len(r.Waves))
	if d.rollout == nil {
		d.rollout = map[string]string{}
	}
	d.rollout[version] = r.ID
	return r.ID, nil
}

// quoteArgs single-quotes arguments a shell would split or expand.
func quoteArgs(args []string) []string {
	out := make([]string, len(args))
	for i, a := range args {
		if strings.ContainsAny(a, " {}\"*$&;|<>()'") {
			a = "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
		}
		out[i] = a
	}
	return out
}

// watch runs the real `meshctl rollouts watch ID` live until the rollout
// satisfies done (watch may also return by itself), then stops it.
func (d *demo) watch(ctx context.Context, id, want string, done func(demoRollout) bool) error {
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	finished := make(chan error, 1)
	go func() {
		_, err := d.meshctl(wctx, true, "rollouts", "watch", id)
		finished <- err
	}()
	watchDone := false
	err := d.waitFor(ctx, "rollout "+id+" to be "+want, 90*time.Second, func() (bool, string, error) {
		if err := d.agentsAlive(); err != nil {
			return false, "", err
		}
		if !watchDone {
			select {
			case err := <-finished:
				watchDone = true
				if err != nil && wctx.Err() == nil {
					return false, "", err
				}
			default:
			}
		}
		r, err := d.getRollout(id)
		if err != nil {
			return false, err.Error(), nil
		}
		if r.State != want && (r.State == "completed" || r.State == "aborted" || r.State == "halted") {
			return false, "", fmt.Errorf("rollout %s is %s, want %s%s", id, r.State, want, d.deviceSummary(id))
		}
		return done(r), fmt.Sprintf("state %s%s", r.State, d.deviceSummary(id)), nil
	})
	if !watchDone {
		// Let watch draw the final state, then stop it.
		select {
		case <-finished:
		case <-time.After(3 * time.Second):
			cancel()
			<-finished
		}
	}
	return err
}

func (d *demo) getRollout(id string) (demoRollout, error) {
	var r demoRollout
	err := d.getJSON(apiPath("rollouts", id), nil, &r)
	return r, err
}

func (d *demo) rolloutDevices(id string) ([]demoRolloutDevice, error) {
	var l list[demoRolloutDevice]
	if err := d.getJSON(apiPath("rollouts", id, "devices"), url.Values{"limit": {"200"}}, &l); err != nil {
		return nil, err
	}
	sort.Slice(l.Items, func(i, j int) bool { return l.Items[i].Device < l.Items[j].Device })
	return l.Items, nil
}

// deviceSummary is ", devices: cam-1=healthy …" for error messages.
func (d *demo) deviceSummary(id string) string {
	devs, err := d.rolloutDevices(id)
	if err != nil {
		return ""
	}
	parts := make([]string, len(devs))
	for i, dev := range devs {
		parts[i] = dev.Device + "=" + dev.State
		if dev.Detail != "" && dev.State != "healthy" {
			parts[i] += " (" + dev.Detail + ")"
		}
	}
	return ", devices: " + strings.Join(parts, " ")
}

// expectDevices checks every device of a rollout is in the state want says.
func (d *demo) expectDevices(id string, want func(demoRolloutDevice) string) error {
	devs, err := d.rolloutDevices(id)
	if err != nil {
		return err
	}
	if len(devs) != len(demoDevices) {
		return fmt.Errorf("rollout %s has %d devices, want %d", id, len(devs), len(demoDevices))
	}
	for _, dev := range devs {
		if w := want(dev); dev.State != w {
			return fmt.Errorf("device %s is %s in rollout %s, want %s (%s)", dev.Device, dev.State, id, w, dev.Detail)
		}
	}
	return nil
}

// onDisk reads which detector version a device runs: the target of its
// artifacts/detector/current symlink (SPEC §4.3), straight from its disk.
func (d *demo) onDisk(name string) string {
	t, err := os.Readlink(filepath.Join(d.agents[name].dataDir, "artifacts", demoArtifact, "current"))
	if err != nil {
		return "none"
	}
	return strings.TrimPrefix(t, "versions/")
}

// showHaltEvent prints the audit event the halt appended, with its reason.
func (d *demo) showHaltEvent(ctx context.Context, id string) error {
	args := []string{"-o", "json", "audit", "list", "-type", "rollout.halted", "-subject", id}
	fmt.Fprintf(d.out, "    $ meshctl %s\n", strings.Join(args, " "))
	out, err := d.meshctl(ctx, false, args...)
	if err != nil {
		return err
	}
	var l list[struct {
		Seq   int64  `json:"seq"`
		Actor string `json:"actor"`
		Data  struct {
			Reason       string  `json:"reason"`
			Wave         int     `json:"wave"`
			Failures     int     `json:"failures"`
			Acknowledged int     `json:"acknowledged_failures"`
			Tolerance    float64 `json:"tolerance"`
			Devices      int     `json:"devices"`
		} `json:"data"`
	}]
	if err := json.Unmarshal([]byte(out), &l); err != nil || len(l.Items) != 1 {
		return fmt.Errorf("audit list -type rollout.halted answered %q: %v", tail(out, 300), err)
	}
	e := l.Items[0]
	d.notef("  audit event %d by %s: halted in wave %d, reason %q:", e.Seq, e.Actor, e.Data.Wave, e.Data.Reason)
	d.notef("  failures %d - acknowledged %d > tolerance %g (max_failure_rate 0 x %d devices)",
		e.Data.Failures, e.Data.Acknowledged, e.Data.Tolerance, e.Data.Devices)
	return nil
}
