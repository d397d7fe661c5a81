package e2e

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"
)

// revertAgent is one enrolled agent of TestRolloutAbortRevertRealAgents.
type revertAgent struct {
	name    string
	env     []string
	dataDir string
	proc    *proc
}

// current is the version directory the agent's det slot points at
// ("versions/1"), or "" when there is none.
func (a *revertAgent) current() string {
	l, _ := os.Readlink(filepath.Join(a.dataDir, "artifacts", "det", "current"))
	return l
}

type revertRollout struct {
	ID    string `json:"id"`
	State string `json:"state"`
	Waves []struct {
		Devices int            `json:"devices"`
		Counts  map[string]int `json:"counts"`
	} `json:"waves"`
}

type revertDevice struct {
	Device string `json:"device"`
	Wave   int    `json:"wave"`
	State  string `json:"state"`
	Detail string `json:"detail"`
}

// TestRolloutAbortRevertRealAgents runs real agents through SPEC §7's
// abort with revert: three devices run model det@1; det@2 goes to a
// two-device canary behind a manual gate; one canary device is stopped
// (offline), the rollout is aborted with policy revert; the running canary
// reverts at once (reverting → reverted, its slot back on version 1), the
// stopped one is left queued and reverts on its first heartbeat after it
// starts again; the device beyond the gate never sees det@2.
func TestRolloutAbortRevertRealAgents(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("the agent runs on Linux")
	}
	c := startCluster(t, "")
	agentBin := filepath.Join(c.bin, "meshanics-agent-linux-"+runtime.GOARCH)
	agents := map[string]*revertAgent{}
	var names []string
	for _, name := range []string{"rv-1", "rv-2", "rv-3"} {
		token, pin := c.mintToken(t)
		dev := t.TempDir()
		a := &revertAgent{name: name, dataDir: filepath.Join(dev, "var")}
		cfgDir := filepath.Join(dev, "etc")
		enroll := exec.Command(agentBin, "enroll", "-url", c.webURL, "-token", token, "-ca-pin", pin, "-name", name,
			"-config-dir", cfgDir, "-data-dir", a.dataDir, "-container-runtime", "none",
			"-containers-certs-dir", filepath.Join(dev, "cc"), "-docker-certs-dir", filepath.Join(dev, "dc"))
		if out, err := enroll.CombinedOutput(); err != nil {
			t.Fatalf("meshanics-agent enroll %s: %v\n%s", name, err, out)
		}
		a.env = readEnv(t, filepath.Join(cfgDir, "agent.env"))
		a.proc = startProc(t, "meshanics-agent "+name, a.env, agentBin)
		agents[name] = a
		names = append(names, name)
	}
	for _, n := range names {
		c.waitStatus(t, n, "online")
	}
	c.meshctl(t, append([]string{"groups", "create", "edge"}, names...)...)

	src := t.TempDir()
	write := fileWriter(t, src)
	manifest := write("manifest.json", `{"framework":"onnx"}`)
	probe := `{"type":"file","target":"` + write("ready", "ok") + `","attempts":1}`
	for _, v := range []string{"1", "2"} {
		c.meshctl(t, "artifacts", "publish", "-kind", "model", "-name", "det", "-version", v,
			"-file", write("v"+v+".onnx", "weights "+v), "-file-name", "model.onnx", "-manifest", manifest)
	}

	show := func(id string) revertRollout {
		var r revertRollout
		if out := c.meshctl(t, "-o", "json", "rollouts", "show", id); json.Unmarshal(out, &r) != nil {
			t.Fatalf("rollouts show = %q", out)
		}
		return r
	}
	devices := func(id string) map[string]revertDevice {
		var l struct {
			Items []revertDevice `json:"items"`
		}
		if out := c.meshctl(t, "-o", "json", "rollouts", "devices", id); json.Unmarshal(out, &l) != nil {
			t.Fatalf("rollouts devices = %q", out)
		}
		m := map[string]revertDevice{}
		for _, d := range l.Items {
			m[d.Device] = d
		}
		return m
	}
	waitFor := func(what string, ok func() bool) {
		t.Helper()
		deadline := time.Now().Add(90 * time.Second)
		for !ok() {
			if time.Now().After(deadline) {
				t.Fatalf("timed out waiting for %s", what)
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
	create := func(ref, strategy string) string {
		args := []string{"-o", "json", "rollouts", "create", "-artifact", ref, "-group", "edge", "-probe", probe}
		if strategy != "" {
			args = append(args, "-strategy", strategy)
		}
		var r revertRollout
		if out := c.meshctl(t, args...); json.Unmarshal(out, &r) != nil || r.ID == "" {
			t.Fatalf("rollouts create %s = %q", ref, out)
		}
		return r.ID
	}

	// Everyone runs det@1.
	r1 := create("det@1", "")
	// Waits are on device states too: on a loaded machine a device may look
	// offline for a moment, and a wave does not wait for offline devices.
	allHealthy := func(id string, wave int) bool {
		r := show(id)
		return r.Waves[wave].Counts["healthy"] == r.Waves[wave].Devices
	}
	waitFor("det@1 to complete", func() bool { return show(r1).State == "completed" && allHealthy(r1, 0) })
	for _, a := range agents {
		if a.current() != "versions/1" {
			t.Fatalf("%s runs %q after det@1, want versions/1", a.name, a.current())
		}
	}

	// det@2: a canary of two devices (ceil(66 × 3 / 100)), then a manual gate.
	r2 := create("det@2", `{"waves":[{"percent":66},{"percent":100,"approval":"manual"}]}`)
	waitFor("the det@2 canary to reach the manual gate", func() bool { return show(r2).State == "waiting_for_approval" && allHealthy(r2, 0) })
	var canary []*revertAgent
	var gated *revertAgent
	for name, d := range devices(r2) {
		switch {
		case d.Wave == 0 && d.State == "healthy" && agents[name].current() == "versions/2":
			canary = append(canary, agents[name])
		case d.Wave == 1 && d.State == "pending":
			gated = agents[name]
		default:
			t.Fatalf("before abort: %+v (runs %s)", d, agents[name].current())
		}
	}
	if len(canary) != 2 || gated == nil {
		t.Fatalf("canary %d devices, gated %v; want 2 and 1", len(canary), gated)
	}
	online, offline := canary[0], canary[1]
	if code := offline.proc.stop(t); code != 0 {
		t.Fatalf("agent %s exited %d on SIGTERM", offline.name, code)
	}

	// Abort with revert: never waits for the stopped device.
	var aborted revertRollout
	if out := c.meshctl(t, "-o", "json", "rollouts", "abort", r2, "-policy", "revert"); json.Unmarshal(out, &aborted) != nil || aborted.State != "aborted" {
		t.Fatalf("rollouts abort = %q", out)
	}
	waitFor(online.name+" to revert", func() bool { return devices(r2)[online.name].State == "reverted" })
	if online.current() != "versions/1" {
		t.Errorf("%s runs %q after its revert, want versions/1", online.name, online.current())
	}
	d := devices(r2)[offline.name]
	if d.State != "pending" || !strings.Contains(d.Detail, "revert to 1") || offline.current() != "versions/2" {
		t.Errorf("stopped %s after abort = %+v, runs %s; want a queued revert to 1 on versions/2", offline.name, d, offline.current())
	}

	// The stopped device reverts when it checks in again.
	offline.proc = startProc(t, "meshanics-agent "+offline.name+" (restarted)", offline.env, agentBin)
	waitFor(offline.name+" to revert after its restart", func() bool { return devices(r2)[offline.name].State == "reverted" })
	if offline.current() != "versions/1" {
		t.Errorf("%s runs %q after its revert, want versions/1", offline.name, offline.current())
	}
	if d := devices(r2)[gated.name]; d.State != "pending" || gated.current() != "versions/1" {
		t.Errorf("gated %s = %+v, runs %s; want pending on versions/1", gated.name, d, gated.current())
	}
	if got := show(r2).Waves[0].Counts; got["reverted"] != 2 || len(got) != 1 {
		t.Errorf("wave 0 counts = %v, want reverted=2", got)
	}

	// The audit trail holds each device's revert path, in order.
	var audit struct {
		Items []struct {
			Actor   string         `json:"actor"`
			Type    string         `json:"type"`
			Subject string         `json:"subject"`
			Data    map[string]any `json:"data"`
		} `json:"items"`
	}
	if out := c.meshctl(t, "-o", "json", "audit", "list", "-limit", "200"); json.Unmarshal(out, &audit) != nil {
		t.Fatalf("audit list = %q", out)
	}
	path := map[string][]string{}
	var rolloutEvents []string
	for i := len(audit.Items) - 1; i >= 0; i-- { // oldest first
		e := audit.Items[i]
		if e.Data["rollout"] != r2 {
			continue
		}
		if e.Type == "rollout.device_state" {
			path[e.Subject] = append(path[e.Subject], e.Data["from"].(string)+">"+e.Data["to"].(string))
		} else {
			rolloutEvents = append(rolloutEvents, e.Type)
		}
	}
	if got := strings.Join(rolloutEvents, " "); !strings.HasSuffix(got, "rollout.waiting_for_approval rollout.aborted rollout.revert_queued") {
		t.Errorf("rollout events = %s", got)
	}
	for _, a := range canary {
		got := strings.Join(path[a.name], " ")
		if !strings.HasSuffix(got, "applying>healthy pending>assigned assigned>reverting reverting>reverted") {
			t.Errorf("audit of %s = %s, want it to end healthy, then assigned the revert, reverting, reverted", a.name, got)
		}
	}
	if got := path[gated.name]; len(got) != 0 {
		t.Errorf("audit of gated %s = %v, want nothing", gated.name, got)
	}
	if out := c.meshctl(t, "audit", "export"); !strings.Contains(string(out), `"verified":true`) {
		t.Errorf("audit export trailer: %s", out[max(0, len(out)-200):])
	}
}
