// Package e2e runs the real binaries end to end: meshanics-server, meshctl
// and meshanics-agent are built with `go build`, the server is initialised
// and started on free local ports, a token is minted with meshctl, agents
// enroll (directly and through the served install.sh) and run unprivileged
// in temporary directories, and their presence is read back with meshctl.
package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/meshanics/meshanics/internal/server/store/storetest"
	"github.com/meshanics/meshanics/internal/testenv"
)

// binaries builds the three commands once per test binary.
var (
	buildOnce sync.Once
	binDir    string
	buildErr  error
)

func TestMain(m *testing.M) {
	code := m.Run()
	if binDir != "" {
		os.RemoveAll(binDir)
	}
	os.Exit(code)
}

func bins(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		binDir, buildErr = os.MkdirTemp("", "meshanics-e2e-bin-")
		if buildErr != nil {
			return
		}
		root, err := moduleRoot()
		if err != nil {
			buildErr = err
			return
		}
		for _, c := range []struct {
			pkg, out string
			static   bool
		}{
			{"./cmd/meshanics-server", "meshanics-server", false},
			{"./cmd/meshctl", "meshctl", false},
			// The agent ships static (SPEC §1); /downloads serves it by arch.
			{"./cmd/meshanics-agent", "meshanics-agent-linux-" + runtime.GOARCH, true},
		} {
			cmd := exec.Command("go", "build", "-o", filepath.Join(binDir, c.out), c.pkg)
			cmd.Dir = root
			cmd.Env = os.Environ()
			if c.static {
				cmd.Env = append(cmd.Env, "CGO_ENABLED=0")
			}
			if out, err := cmd.CombinedOutput(); err != nil {
				buildErr = fmt.Errorf("go build %s: %v\n%s", c.pkg, err, out)
				return
			}
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binDir
}

func moduleRoot() (string, error) {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	return filepath.Dir(strings.TrimSpace(string(out))), nil
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// proc is a started long-running binary whose stderr is kept for failure
// messages.
type proc struct {
	name string
	cmd  *exec.Cmd
	mu   sync.Mutex
	log  bytes.Buffer
	done chan struct{}
	err  error
}

func (p *proc) Write(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.log.Len() < 4<<20 {
		p.log.Write(b)
	}
	return len(b), nil
}

func (p *proc) logs() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	s := p.log.String()
	if len(s) > 8000 {
		s = "…" + s[len(s)-8000:]
	}
	return s
}

func startProc(t *testing.T, name string, env []string, bin string, args ...string) *proc {
	t.Helper()
	p := &proc{name: name, done: make(chan struct{})}
	p.cmd = exec.Command(bin, args...)
	p.cmd.Env = env
	p.cmd.Stdout, p.cmd.Stderr = p, p
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	go func() {
		p.err = p.cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		select {
		case <-p.done:
		default:
			_ = p.cmd.Process.Kill()
			<-p.done
		}
		if t.Failed() {
			t.Logf("%s output:\n%s", name, p.logs())
		}
	})
	return p
}

// stop sends SIGTERM and returns the exit code.
func (p *proc) stop(t *testing.T) int {
	t.Helper()
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(60 * time.Second):
		t.Fatalf("%s did not stop after SIGTERM", p.name)
	}
	return p.cmd.ProcessState.ExitCode()
}

// readEnv parses agent.env the way systemd's EnvironmentFile= would.
func readEnv(t *testing.T, path string) []string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatalf("agent.env: %v", err)
	}
	defer f.Close()
	env := []string{"PATH=" + os.Getenv("PATH")}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if !strings.Contains(line, "=") {
			t.Fatalf("agent.env line %q is not KEY=VALUE", line)
		}
		env = append(env, line)
	}
	return env
}

// waitStatus polls `meshctl -o json devices list` until name has status.
func (c *cluster) waitStatus(t *testing.T, name, status string) {
	t.Helper()
	deadline := time.Now().Add(90 * time.Second)
	var last string
	for time.Now().Before(deadline) {
		var list struct {
			Items []struct {
				Name   string `json:"name"`
				Status string `json:"status"`
			} `json:"items"`
		}
		out := c.meshctl(t, "-o", "json", "devices", "list")
		if err := json.Unmarshal(out, &list); err != nil {
			t.Fatalf("devices list output %q: %v", out, err)
		}
		for _, d := range list.Items {
			if d.Name == name {
				last = d.Status
				if d.Status == status {
					return
				}
			}
		}
		time.Sleep(250 * time.Millisecond)
	}
	t.Fatalf("device %s never became %s (last status %q)", name, status, last)
}

func (c *cluster) mintToken(t *testing.T) (token, pin string) {
	t.Helper()
	var tok struct {
		Token string `json:"token"`
		CAPin string `json:"ca_pin"`
	}
	out := c.meshctl(t, "-o", "json", "tokens", "create")
	if err := json.Unmarshal(out, &tok); err != nil || !strings.HasPrefix(tok.Token, "mst_") || !strings.HasPrefix(tok.CAPin, "sha256:") {
		t.Fatalf("tokens create = %q (%v)", out, err)
	}
	return tok.Token, tok.CAPin
}

func TestEnrollHeartbeatOnlineOffline(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("the agent runs on Linux")
	}
	t.Run("sqlite", func(t *testing.T) { testEnrollHeartbeat(t, "") })
	t.Run("postgres", func(t *testing.T) { testEnrollHeartbeat(t, storetest.PostgresDatabase(t)) })
}

func testEnrollHeartbeat(t *testing.T, dsn string) {
	c := startCluster(t, dsn)
	token, pin := c.mintToken(t)

	dev := t.TempDir()
	cfgDir, dataDir := filepath.Join(dev, "etc"), filepath.Join(dev, "var")
	enroll := func(token string) *exec.Cmd {
		return exec.Command(filepath.Join(c.bin, "meshanics-agent-linux-"+runtime.GOARCH), "enroll",
			"-url", c.webURL, "-token", token, "-ca-pin", pin, "-name", "e2e-device-1",
			"-config-dir", cfgDir, "-data-dir", dataDir, "-container-runtime", "none",
			"-containers-certs-dir", filepath.Join(dev, "containers-certs"), "-docker-certs-dir", filepath.Join(dev, "docker-certs"))
	}
	if out, err := enroll(token).CombinedOutput(); err != nil {
		t.Fatalf("meshanics-agent enroll: %v\n%s", err, out)
	}
	for _, f := range []string{"device.key", "device.crt", "ca.pem", "agent.env"} {
		if _, err := os.Stat(filepath.Join(cfgDir, f)); err != nil {
			t.Errorf("enroll did not write %s: %v", f, err)
		}
	}
	if st, err := os.Stat(filepath.Join(cfgDir, "device.key")); err == nil && st.Mode().Perm() != 0o600 {
		t.Errorf("device.key mode %v, want 0600", st.Mode().Perm())
	}

	agent := startProc(t, "meshanics-agent", readEnv(t, filepath.Join(cfgDir, "agent.env")),
		filepath.Join(c.bin, "meshanics-agent-linux-"+runtime.GOARCH))
	c.waitStatus(t, "e2e-device-1", "online")

	if code := agent.stop(t); code != 0 {
		t.Errorf("agent exit code after SIGTERM = %d, want 0", code)
	}
	c.waitStatus(t, "e2e-device-1", "offline")

	// Re-enrolling with the same key (the upgrade path) keeps the record:
	// a second token, same name, succeeds.
	token2, _ := c.mintToken(t)
	keyBefore, _ := os.ReadFile(filepath.Join(cfgDir, "device.key"))
	if out, err := enroll(token2).CombinedOutput(); err != nil {
		t.Fatalf("re-enroll with the same key: %v\n%s", err, out)
	}
	if keyAfter, _ := os.ReadFile(filepath.Join(cfgDir, "device.key")); !bytes.Equal(keyBefore, keyAfter) {
		t.Error("re-enrollment replaced the device key")
	}
	// A different key under the same name is refused (409 → enroll fails).
	token3, _ := c.mintToken(t)
	other := t.TempDir()
	steal := exec.Command(filepath.Join(c.bin, "meshanics-agent-linux-"+runtime.GOARCH), "enroll",
		"-url", c.webURL, "-token", token3, "-ca-pin", pin, "-name", "e2e-device-1",
		"-config-dir", filepath.Join(other, "etc"), "-data-dir", filepath.Join(other, "var"), "-container-runtime", "none",
		"-containers-certs-dir", filepath.Join(other, "cc"), "-docker-certs-dir", filepath.Join(other, "dc"))
	if out, err := steal.CombinedOutput(); err == nil {
		t.Errorf("enrolling a second key under a taken name succeeded:\n%s", out)
	}

	if code := c.server.stop(t); code != 0 {
		t.Errorf("server exit code after SIGTERM = %d, want 0", code)
	}
}

// TestInstallerEndToEnd fetches /install.sh over TLS trusting only the
// fleet CA (as the install command does), lets it download the agent from
// /downloads over the pinned TLS and enroll, runs the installed agent, and
// decommissions it: the agent wipes its credentials and exits 77.
func TestInstallerEndToEnd(t *testing.T) {
	if runtime.GOOS != "linux" || (runtime.GOARCH != "amd64" && runtime.GOARCH != "arm64") {
		t.Skip("the installer targets linux/amd64 and linux/arm64")
	}
	_, err := exec.LookPath("curl")
	testenv.Need(t, err == nil, "curl")
	c := startCluster(t, "")
	token, pin := c.mintToken(t)

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	fetch := exec.CommandContext(ctx, "curl", "-fsSL", "--cacert", c.caFile, c.webURL+"/install.sh")
	script, err := fetch.Output()
	if err != nil {
		t.Fatalf("fetch install.sh: %v", err)
	}
	root := t.TempDir()
	install := exec.CommandContext(ctx, "sh", "-s", "--", "--url", c.webURL, "--token", token, "--ca-pin", pin,
		"--name", "e2e-device-2", "--container-runtime", "none",
		"--bin-dir", filepath.Join(root, "bin"), "--config-dir", filepath.Join(root, "etc"),
		"--data-dir", filepath.Join(root, "var"), "--unit-dir", filepath.Join(root, "units"), "--no-systemctl")
	install.Stdin = bytes.NewReader(script)
	install.Env = append(os.Environ(), "TMPDIR="+root)
	if out, err := install.CombinedOutput(); err != nil {
		t.Fatalf("install.sh: %v\n%s", err, out)
	}
	unit, err := os.ReadFile(filepath.Join(root, "units", "meshanics-agent.service"))
	if err != nil || !strings.Contains(string(unit), "ExecStart="+filepath.Join(root, "bin", "meshanics-agent")) {
		t.Errorf("installed unit = %v\n%s", err, unit)
	}
	agent := startProc(t, "installed meshanics-agent", readEnv(t, filepath.Join(root, "etc", "agent.env")),
		filepath.Join(root, "bin", "meshanics-agent"))
	c.waitStatus(t, "e2e-device-2", "online")

	// Decommission: the agent gets the signal on its next heartbeat, wipes
	// its credentials and exits 77 (terminal for systemd).
	c.meshctl(t, "devices", "decommission", "e2e-device-2")
	select {
	case <-agent.done:
	case <-time.After(90 * time.Second):
		t.Fatal("agent did not exit after decommission")
	}
	if code := agent.cmd.ProcessState.ExitCode(); code != 77 {
		t.Errorf("agent exit code after decommission = %d, want 77", code)
	}
	for _, f := range []string{"device.key", "device.crt"} {
		if _, err := os.Stat(filepath.Join(root, "etc", f)); !os.IsNotExist(err) {
			t.Errorf("%s not wiped after decommission: %v", f, err)
		}
	}
	c.waitStatus(t, "e2e-device-2", "decommissioned")
}
