package e2e

import (
	"encoding/json"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"testing"
	"time"
)

// TestApplyEndToEnd runs the real server and agent through the apply
// paths of SPEC §4.3: a model v1 becomes healthy; v2 with a failing probe
// is rolled back with current still v1; a config aimed outside the
// allowlist fails with nothing written; a config inside it is placed with
// its mode and its reload runs.
func TestApplyEndToEnd(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("the agent runs on Linux")
	}
	touch, err := exec.LookPath("touch")
	if err != nil {
		t.Skip("touch not installed")
	}
	touch, _ = filepath.EvalSymlinks(touch)
	c := startCluster(t, "")
	token, pin := c.mintToken(t)

	dev := t.TempDir()
	cfgDir, dataDir := filepath.Join(dev, "etc"), filepath.Join(dev, "var")
	allowed, evil := filepath.Join(dev, "conf", "app"), filepath.Join(dev, "conf", "app-evil")
	for _, d := range []string{allowed, evil} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	enroll := exec.Command(filepath.Join(c.bin, "meshanics-agent-linux-"+runtime.GOARCH), "enroll",
		"-url", c.webURL, "-token", token, "-ca-pin", pin, "-name", "e2e-apply",
		"-config-dir", cfgDir, "-data-dir", dataDir, "-container-runtime", "none",
		"-containers-certs-dir", filepath.Join(dev, "cc"), "-docker-certs-dir", filepath.Join(dev, "dc"),
		"-allow-config-dest", allowed, "-allow-reload-exec", touch)
	if out, err := enroll.CombinedOutput(); err != nil {
		t.Fatalf("meshanics-agent enroll: %v\n%s", err, out)
	}
	startAgent := func() *proc {
		return startProc(t, "meshanics-agent", readEnv(t, filepath.Join(cfgDir, "agent.env")),
			filepath.Join(c.bin, "meshanics-agent-linux-"+runtime.GOARCH))
	}
	agent := startAgent()
	defer func() { agent.stop(t) }()
	c.waitStatus(t, "e2e-apply", "online")
	c.meshctl(t, "groups", "create", "edge", "e2e-apply")

	src := t.TempDir()
	write := fileWriter(t, src)
	manifest := write("manifest.json", `{"framework":"onnx"}`)
	current := filepath.Join(dataDir, "artifacts", "det", "current", "model.onnx")
	fileProbe := func(p string) string { return `{"type":"file","target":"` + p + `","attempts":2,"interval_seconds":1}` }

	// Model v1: healthy.
	c.meshctl(t, "artifacts", "publish", "-kind", "model", "-name", "det", "-version", "1",
		"-file", write("v1.onnx", "weights one"), "-file-name", "model.onnx", "-manifest", manifest)
	c.rollout(t, "det@1", fileProbe(current), "healthy")
	if b, _ := os.ReadFile(current); string(b) != "weights one" {
		t.Fatalf("current after v1 = %q", b)
	}

	// Model v2 whose probe fails: rolled back, current still v1.
	c.meshctl(t, "artifacts", "publish", "-kind", "model", "-name", "det", "-version", "2",
		"-file", write("v2.onnx", "weights two"), "-file-name", "model.onnx", "-manifest", manifest)
	c.rollout(t, "det@2", fileProbe(filepath.Join(dev, "no-such-file")), "rolled_back")
	if b, _ := os.ReadFile(current); string(b) != "weights one" {
		t.Errorf("current after the rolled-back v2 = %q, want v1", b)
	}

	// Model v3, and the agent is SIGKILLed while it applies (its probe
	// waits ten minutes): the restarted agent rolls back to v1 from its
	// journal alone, and v1 was never lost.
	c.meshctl(t, "artifacts", "publish", "-kind", "model", "-name", "det", "-version", "3",
		"-file", write("v3.onnx", "weights three"), "-file-name", "model.onnx", "-manifest", manifest)
	id := c.startRollout(t, "det@3", `{"type":"file","target":"`+current+`","initial_delay_seconds":600}`)
	c.waitDevice(t, id, "det@3", "applying")
	if err := agent.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	<-agent.done
	agent = startAgent()
	c.waitDevice(t, id, "det@3", "rolled_back")
	c.settle(t, id)
	if b, _ := os.ReadFile(current); string(b) != "weights one" {
		t.Errorf("current after the agent was killed applying v3 = %q, want v1", b)
	}

	// Config outside the allowlist: failed, nothing written.
	evilDest := filepath.Join(evil, "app.conf")
	profile := func(dest, reload string) string {
		return write("profile.json", `{"activator":"place-file","destination":"`+dest+`","mode":"0640"`+reload+`}`)
	}
	c.meshctl(t, "artifacts", "publish", "-kind", "config", "-name", "app", "-version", "1",
		"-file", write("app1.conf", "listen=1"), "-file-name", "app.conf", "-profile", profile(evilDest, ""))
	c.rollout(t, "app@1", fileProbe(evilDest), "failed")
	if ents, _ := os.ReadDir(evil); len(ents) != 0 {
		t.Errorf("files written outside the allowlist: %v", ents)
	}

	// Config inside it: placed with its mode, reload run.
	dest, marker := filepath.Join(allowed, "app.conf"), filepath.Join(dev, "reloaded")
	c.meshctl(t, "artifacts", "publish", "-kind", "config", "-name", "app", "-version", "2",
		"-file", write("app2.conf", "listen=2"), "-file-name", "app.conf",
		"-profile", profile(dest, `,"reload":{"exec":["`+touch+`","`+marker+`"]}`))
	c.rollout(t, "app@2", fileProbe(dest), "healthy")
	st, err := os.Stat(dest)
	if b, _ := os.ReadFile(dest); err != nil || string(b) != "listen=2" || st.Mode().Perm() != 0o640 {
		t.Errorf("placed config = %q (%v), want listen=2 mode 0640", b, err)
	}
	if _, err := os.Stat(marker); err != nil {
		t.Errorf("the reload did not run: %v", err)
	}

	// What the device runs reaches its record through heartbeats (the
	// agent registered once, before any of this was installed).
	want := map[string]string{"det": "1", "app": "2"}
	var got map[string]string
	for deadline := time.Now().Add(60 * time.Second); time.Now().Before(deadline); time.Sleep(250 * time.Millisecond) {
		var d struct {
			Installed []struct{ Name, Version string } `json:"installed"`
		}
		if err := json.Unmarshal(c.meshctl(t, "-o", "json", "devices", "show", "e2e-apply"), &d); err != nil {
			t.Fatal(err)
		}
		got = map[string]string{}
		for _, a := range d.Installed {
			got[a.Name] = a.Version
		}
		if maps.Equal(got, want) {
			return
		}
	}
	t.Errorf("devices show e2e-apply installed = %v, want %v", got, want)
}

// rollout starts a rollout of ref to the group "edge", waits until the one
// device reaches want, and leaves no active rollout behind.
func (c *cluster) rollout(t *testing.T, ref, probe, want string) {
	t.Helper()
	id := c.startRollout(t, ref, probe)
	c.waitDevice(t, id, ref, want)
	c.settle(t, id)
}

// startRollout starts a rollout of ref to the group "edge".
func (c *cluster) startRollout(t *testing.T, ref, probe string) string {
	t.Helper()
	var r struct {
		ID string `json:"id"`
	}
	out := c.meshctl(t, "-o", "json", "rollouts", "create", "-artifact", ref, "-group", "edge", "-probe", probe)
	if err := json.Unmarshal(out, &r); err != nil || r.ID == "" {
		t.Fatalf("rollouts create = %q (%v)", out, err)
	}
	return r.ID
}

// waitDevice waits until the one device of rollout id reaches want.
func (c *cluster) waitDevice(t *testing.T, id, ref, want string) {
	t.Helper()
	deadline := time.Now().Add(90 * time.Second)
	var last string
	for time.Now().Before(deadline) {
		var l struct {
			Items []struct {
				State  string `json:"state"`
				Detail string `json:"detail"`
			} `json:"items"`
		}
		out := c.meshctl(t, "-o", "json", "rollouts", "devices", id)
		if err := json.Unmarshal(out, &l); err != nil {
			t.Fatalf("rollouts devices = %q: %v", out, err)
		}
		if len(l.Items) == 1 {
			last = l.Items[0].State + " (" + l.Items[0].Detail + ")"
			if l.Items[0].State == want {
				return
			}
		}
		time.Sleep(250 * time.Millisecond)
	}
	t.Fatalf("rollout of %s: device never reached %s (last %s)", ref, want, last)
}

// settle waits for the rollout to leave running, and aborts it (keep) when
// it halted on the failure, so the device is free for the next one.
func (c *cluster) settle(t *testing.T, id string) {
	t.Helper()
	for i := 0; i < 120; i++ {
		var r struct {
			State string `json:"state"`
		}
		json.Unmarshal(c.meshctl(t, "-o", "json", "rollouts", "show", id), &r)
		switch r.State {
		case "completed", "aborted":
			return
		case "halted", "waiting_for_approval":
			c.meshctl(t, "rollouts", "abort", "-policy", "keep", id)
			return
		}
		time.Sleep(250 * time.Millisecond)
	}
	t.Fatalf("rollout %s stayed running", id)
}
