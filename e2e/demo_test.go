package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/meshanics/meshanics/internal/testenv"
)

// demoBinDir lays out meshanics-server and meshanics-agent under the names
// `meshctl demo -bin-dir` expects (the e2e build names the agent by arch).
func demoBinDir(t *testing.T) (meshctl, dir string) {
	t.Helper()
	bin := bins(t)
	dir = t.TempDir()
	for src, dst := range map[string]string{
		"meshanics-server":                        "meshanics-server",
		"meshanics-agent-linux-" + runtime.GOARCH: "meshanics-agent",
	} {
		if err := os.Symlink(filepath.Join(bin, src), filepath.Join(dir, dst)); err != nil {
			t.Fatal(err)
		}
	}
	return filepath.Join(bin, "meshctl"), dir
}

// syncBuffer collects a process's output for reading while it runs.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

var demoDirRE = regexp.MustCompile(`in (\S+/meshanics-demo-\d+)`)

// leftovers lists running processes whose command line or working
// directory is in dir (the demo runs each agent in its data dir).
func leftovers(t *testing.T, dir string) []string {
	t.Helper()
	procs, _ := filepath.Glob("/proc/[0-9]*")
	var out []string
	for _, p := range procs {
		b, err := os.ReadFile(filepath.Join(p, "cmdline"))
		if err != nil {
			continue
		}
		cmd := strings.ReplaceAll(string(b), "\x00", " ")
		cwd, _ := os.Readlink(filepath.Join(p, "cwd"))
		if strings.Contains(cmd, dir) || strings.HasPrefix(cwd, dir) {
			out = append(out, filepath.Base(p)+" (cwd "+cwd+"): "+cmd)
		}
	}
	return out
}

// TestDemo runs `meshctl demo` as a user would, non-interactively, and
// checks its summary: the canary rolled back and stayed on 1.0.0, the four
// others run 1.1.0, the audit chain verified, exit 0, nothing left behind.
func TestDemo(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("the agent runs on Linux")
	}
	meshctl, binDir := demoBinDir(t)
	tmp := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, meshctl, "demo", "-bin-dir", binDir)
	cmd.Env = append(os.Environ(), "TMPDIR="+tmp)
	var out, stderr syncBuffer
	cmd.Stdout, cmd.Stderr = &out, &stderr
	err := cmd.Run()
	if err != nil {
		t.Fatalf("meshctl demo: %v\nstdout:\n%s\nstderr:\n%s", err, out.String(), stderr.String())
	}
	text := out.String()
	for _, want := range []string{
		"Summary",
		"audit chain: verified",
		"demo OK",
		"4 of 5 devices run detector@1.1.0",
		"Removed ",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("demo output lacks %q:\n%s", want, text)
		}
	}
	// The summary table: one canary rolled back on 1.0.0, four healthy on 1.1.0.
	rolledBack := regexp.MustCompile(`(?m)^\s+cam-\d\s+online\s+0\s+rolled_back\s+1\.0\.0\s`).FindAllString(text, -1)
	healthy := regexp.MustCompile(`(?m)^\s+cam-\d\s+online\s+1\s+healthy\s+1\.1\.0\s`).FindAllString(text, -1)
	if len(rolledBack) != 1 || len(healthy) != 4 {
		t.Errorf("summary table has %d rolled-back canaries and %d healthy devices, want 1 and 4:\n%s", len(rolledBack), len(healthy), text)
	}
	m := demoDirRE.FindStringSubmatch(text)
	if m == nil {
		t.Fatalf("demo output does not name its directory:\n%s", text)
	}
	if _, err := os.Stat(m[1]); !os.IsNotExist(err) {
		t.Errorf("demo directory %s still exists after the demo (%v)", m[1], err)
	}
	if l := leftovers(t, m[1]); len(l) > 0 {
		t.Errorf("processes left running after the demo:\n%s", strings.Join(l, "\n"))
	}
}

// TestDemoInterrupted sends SIGINT (Ctrl-C) once the agents are enrolled:
// the demo must stop every process it started, remove its directory and
// exit non-zero.
func TestDemoInterrupted(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("the agent runs on Linux")
	}
	meshctl, binDir := demoBinDir(t)
	tmp := t.TempDir()
	cmd := exec.Command(meshctl, "demo", "-bin-dir", binDir)
	cmd.Env = append(os.Environ(), "TMPDIR="+tmp)
	var out, stderr syncBuffer
	cmd.Stdout, cmd.Stderr = &out, &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	deadline := time.Now().Add(2 * time.Minute)
	for !strings.Contains(out.String(), "$ meshctl devices list") {
		if time.Now().After(deadline) {
			cmd.Process.Kill()
			t.Fatalf("demo never listed its devices:\n%s\n%s", out.String(), stderr.String())
		}
		select {
		case err := <-done:
			t.Fatalf("demo ended early: %v\n%s\n%s", err, out.String(), stderr.String())
		case <-time.After(100 * time.Millisecond):
		}
	}
	m := demoDirRE.FindStringSubmatch(out.String())
	if m == nil {
		t.Fatalf("demo output does not name its directory:\n%s", out.String())
	}
	if len(leftovers(t, m[1])) == 0 {
		t.Fatalf("no demo processes found running before the interrupt:\n%s", out.String())
	}
	if err := cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err == nil {
			t.Errorf("interrupted demo exited 0, want non-zero")
		}
	case <-time.After(time.Minute):
		cmd.Process.Kill()
		t.Fatalf("demo did not stop after SIGINT:\n%s", out.String())
	}
	if !strings.Contains(stderr.String(), "interrupted") {
		t.Errorf("stderr = %q, want it to say the demo was interrupted", stderr.String())
	}
	if _, err := os.Stat(m[1]); !os.IsNotExist(err) {
		t.Errorf("demo directory %s still exists after the interrupt (%v)", m[1], err)
	}
	if l := leftovers(t, m[1]); len(l) > 0 {
		t.Errorf("processes left running after the interrupt:\n%s", strings.Join(l, "\n"))
	}
}

// TestDemoKeep runs the demo with -keep, then uses what it printed: the
// exports reach the kept control plane with meshctl (running the commands
// the demo suggests), and the printed kill command stops every process.
func TestDemoKeep(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("the agent runs on Linux")
	}
	if testing.Short() {
		t.Skip("runs the whole demo")
	}
	meshctl, binDir := demoBinDir(t)
	tmp := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, meshctl, "demo", "-keep", "-bin-dir", binDir)
	cmd.Env = append(os.Environ(), "TMPDIR="+tmp)
	var out, stderr syncBuffer
	cmd.Stdout, cmd.Stderr = &out, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("meshctl demo -keep: %v\nstdout:\n%s\nstderr:\n%s", err, out.String(), stderr.String())
	}
	text := out.String()
	m := demoDirRE.FindStringSubmatch(text)
	if m == nil {
		t.Fatalf("demo output does not name its directory:\n%s", text)
	}
	dir := m[1]
	kill := regexp.MustCompile(`(?m)^  kill -TERM -- -(\d+)$`).FindStringSubmatch(text)
	if kill == nil || !strings.Contains(text, "\n  rm -rf \"$DEMO\"\n") {
		t.Fatalf("demo -keep printed no stop commands:\n%s", text)
	}
	pgid, err := strconv.Atoi(kill[1])
	if err != nil || pgid <= 1 {
		t.Fatalf("process group %q", kill[1])
	}
	t.Cleanup(func() { syscall.Kill(-pgid, syscall.SIGKILL) })

	env := []string{"DEMO=" + dir}
	for _, e := range regexp.MustCompile(`(?m)^\s+export (MESHCTL_\w+)=(\S+)$`).FindAllStringSubmatch(text, -1) {
		env = append(env, e[1]+"="+strings.ReplaceAll(e[2], "$DEMO", dir))
	}
	if len(env) != 4 {
		t.Fatalf("demo -keep printed exports %q, want MESHCTL_SERVER, MESHCTL_CA, MESHCTL_API_KEY:\n%s", env, text)
	}
	explore := regexp.MustCompile(`(?m)^  meshctl (.+)$`).FindAllStringSubmatch(text, -1)
	if len(explore) < 5 {
		t.Fatalf("demo printed %d commands to explore, want several:\n%s", len(explore), text)
	}
	for _, e := range explore {
		args := strings.Fields(e[1])
		if args[0] == "devices" && args[1] == "logs" {
			args = append(args, "-timeout", "60s")
		}
		c := exec.Command(meshctl, args...)
		c.Env = append(os.Environ(), env...)
		if b, err := c.CombinedOutput(); err != nil {
			t.Errorf("meshctl %s against the kept demo: %v\n%s", e[1], err, b)
		}
	}
	if l := leftovers(t, dir); len(l) < 6 {
		t.Errorf("%d demo processes running after -keep, want the server and five agents:\n%s", len(l), strings.Join(l, "\n"))
	}

	// The printed stop command, as a shell would run it.
	if b, err := exec.Command("kill", "-TERM", "--", "-"+kill[1]).CombinedOutput(); err != nil {
		t.Fatalf("kill -TERM -- -%s: %v\n%s", kill[1], err, b)
	}
	deadline := time.Now().Add(30 * time.Second)
	for len(leftovers(t, dir)) > 0 && time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
	}
	if l := leftovers(t, dir); len(l) > 0 {
		t.Errorf("processes still running after the printed stop command:\n%s", strings.Join(l, "\n"))
	}
}

// TestOperatorGuideBackupRestore follows docs/operator-guide.md "Backup and
// restore" for SQLite: stop the server, archive the data dir with tar, lose
// it, extract the archive, start the server with the same flags. The device
// reconnects without re-enrolling and the audit chain still verifies.
func TestOperatorGuideBackupRestore(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("the agent runs on Linux")
	}
	_, err := exec.LookPath("tar")
	testenv.Need(t, err == nil, "tar")
	c := startCluster(t, "")
	token, pin := c.mintToken(t)
	dev := t.TempDir()
	agentBin := filepath.Join(c.bin, "meshanics-agent-linux-"+runtime.GOARCH)
	enroll := exec.Command(agentBin, "enroll", "-url", c.webURL, "-token", token, "-ca-pin", pin, "-name", "backup-dev-1",
		"-config-dir", filepath.Join(dev, "etc"), "-data-dir", filepath.Join(dev, "var"), "-container-runtime", "none",
		"-containers-certs-dir", filepath.Join(dev, "cc"), "-docker-certs-dir", filepath.Join(dev, "dc"))
	if out, err := enroll.CombinedOutput(); err != nil {
		t.Fatalf("meshanics-agent enroll: %v\n%s", err, out)
	}
	startProc(t, "meshanics-agent", readEnv(t, filepath.Join(dev, "etc", "agent.env")), agentBin)
	c.waitStatus(t, "backup-dev-1", "online")

	// systemctl stop meshanics-server; tar -C /var/lib -czf backup.tgz meshanics-server
	if code := c.server.stop(t); code != 0 {
		t.Fatalf("server exit code after SIGTERM = %d, want 0", code)
	}
	archive := filepath.Join(t.TempDir(), "backup.tgz")
	parent, name := filepath.Dir(c.dataDir), filepath.Base(c.dataDir)
	if out, err := exec.Command("tar", "-C", parent, "-czf", archive, name).CombinedOutput(); err != nil {
		t.Fatalf("tar -czf: %v\n%s", err, out)
	}
	// The data dir is lost; restore it from the archive.
	if err := os.RemoveAll(c.dataDir); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("tar", "-C", parent, "-xzf", archive).CombinedOutput(); err != nil {
		t.Fatalf("tar -xzf: %v\n%s", err, out)
	}
	restarted := time.Now()
	c.server = startProc(t, "restored meshanics-server", os.Environ(), c.server.cmd.Path, c.server.cmd.Args[1:]...)
	if exited := c.waitReady(t); exited {
		t.Fatalf("restored server exited: %v\n%s", c.server.err, c.server.logs())
	}

	// The device heartbeats to the restored server with its old credentials.
	deadline := time.Now().Add(60 * time.Second)
	for {
		var d struct {
			Status   string     `json:"status"`
			LastSeen *time.Time `json:"last_seen"`
		}
		out := c.meshctl(t, "-o", "json", "devices", "show", "backup-dev-1")
		if err := json.Unmarshal(out, &d); err != nil {
			t.Fatalf("devices show: %q: %v", out, err)
		}
		if d.Status == "online" && d.LastSeen != nil && d.LastSeen.After(restarted) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("device did not reconnect to the restored server: %+v", d)
		}
		time.Sleep(250 * time.Millisecond)
	}
	export := filepath.Join(t.TempDir(), "audit.jsonl")
	c.meshctl(t, "audit", "export", "-out", export)
	if out := c.meshctl(t, "audit", "verify", export); !strings.HasPrefix(string(out), "verified: ") {
		t.Errorf("audit verify after restore = %q", out)
	}
}

// TestREADMEQuickstart follows the README's quickstart for a real
// deployment on loopback: init and start without -dev, the offline
// ceremony (trust online-keys, tuf init, export, import), a token, an
// enrolled agent that gets the trust anchor, publish, a group, a canary
// rollout with a manual last wave, watch, approve.
func TestREADMEQuickstart(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("the agent runs on Linux")
	}
	c := startUntrustedCluster(t)
	bin := c.bin

	// The ceremony: keys in a directory the server never sees.
	work := t.TempDir()
	ceremony, transfer, online := filepath.Join(work, "ceremony"), filepath.Join(work, "transfer"), filepath.Join(work, "online.json")
	c.meshctl(t, "trust", "online-keys", "-out", online)
	c.meshctl(t, "tuf", "init", "-keys", ceremony, "-online-keys", online, "-root-keys", "3", "-root-threshold", "2")
	c.meshctl(t, "tuf", "export", "-keys", ceremony, "-out", transfer)
	c.meshctl(t, "tuf", "import", transfer)

	// A token and a device that enrolls with it (the install command's
	// enroll step) and gets the trust anchor.
	var tok struct {
		Token string `json:"token"`
		CAPin string `json:"ca_pin"`
	}
	if err := json.Unmarshal(c.meshctl(t, "-o", "json", "tokens", "create", "-uses", "10", "-ttl", "2h"), &tok); err != nil {
		t.Fatal(err)
	}
	dev := t.TempDir()
	agentBin := filepath.Join(bin, "meshanics-agent-linux-"+runtime.GOARCH)
	enroll := exec.Command(agentBin, "enroll", "-url", c.webURL, "-token", tok.Token, "-ca-pin", tok.CAPin, "-name", "cam-1",
		"-config-dir", filepath.Join(dev, "etc"), "-data-dir", filepath.Join(dev, "var"), "-container-runtime", "none",
		"-containers-certs-dir", filepath.Join(dev, "cc"), "-docker-certs-dir", filepath.Join(dev, "dc"))
	if out, err := enroll.CombinedOutput(); err != nil {
		t.Fatalf("meshanics-agent enroll: %v\n%s", err, out)
	}
	if _, err := os.Stat(filepath.Join(dev, "etc", "root.json")); err != nil {
		t.Fatalf("the device got no trust anchor after the ceremony: %v", err)
	}
	startProc(t, "meshanics-agent", readEnv(t, filepath.Join(dev, "etc", "agent.env")), agentBin)
	c.waitStatus(t, "cam-1", "online")
	ready := filepath.Join(dev, "var", "ready")
	if err := os.WriteFile(ready, []byte("ok\n"), 0o600); err != nil {
		t.Fatal(err)
	}

	model, manifest := filepath.Join(work, "detector.onnx"), filepath.Join(work, "manifest.json")
	os.WriteFile(model, bytes.Repeat([]byte("weights "), 4096), 0o600)
	os.WriteFile(manifest, []byte(`{"framework":"onnx"}`), 0o600)
	c.meshctl(t, "artifacts", "publish", "-kind", "model", "-name", "detector", "-version", "1.0.0", "-file", model, "-manifest", manifest)
	c.meshctl(t, "groups", "create", "cameras", "cam-1")
	var r struct {
		ID string `json:"id"`
	}
	out := c.meshctl(t, "-o", "json", "rollouts", "create", "-artifact", "detector@1.0.0", "-group", "cameras",
		"-probe", `{"type":"file","target":"`+ready+`"}`,
		"-strategy", `{"waves":[{"percent":20},{"percent":100,"approval":"manual"}]}`)
	if err := json.Unmarshal(out, &r); err != nil || r.ID == "" {
		t.Fatalf("rollouts create = %q (%v)", out, err)
	}
	deadline := time.Now().Add(90 * time.Second)
	for {
		var v struct {
			State string `json:"state"`
		}
		json.Unmarshal(c.meshctl(t, "-o", "json", "rollouts", "show", r.ID), &v)
		if v.State == "waiting_for_approval" {
			break
		}
		if v.State != "running" || time.Now().After(deadline) {
			t.Fatalf("rollout is %q, want it to wait for approval after wave 0\n%s", v.State, c.meshctl(t, "rollouts", "devices", r.ID))
		}
		time.Sleep(250 * time.Millisecond)
	}
	c.meshctl(t, "rollouts", "approve", r.ID)
	if out := c.meshctl(t, "rollouts", "watch", r.ID); !strings.Contains(string(out), "completed") {
		t.Errorf("rollouts watch ended without completing:\n%s", out)
	}
	if cur, err := os.Readlink(filepath.Join(dev, "var", "artifacts", "detector", "current")); err != nil || cur != "versions/1.0.0" {
		t.Errorf("device runs %q (%v), want versions/1.0.0", cur, err)
	}
}
