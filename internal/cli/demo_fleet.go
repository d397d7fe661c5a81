package cli

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/meshanics/meshanics/internal/agentenv"
)

// The demo's first half: binaries, control plane, enrollment.

func (d *demo) build(ctx context.Context) error {
	d.stepf("Finding or building meshanics-server and meshanics-agent")
	t0 := time.Now()
	bins, built, err := demoBinaries(ctx, d.binDir, filepath.Join(d.dir, "bin"))
	if err != nil {
		return err
	}
	d.bins = bins
	if built {
		d.notef("built with `go build ./cmd/meshanics-server ./cmd/meshanics-agent` in %s", time.Since(t0).Round(100*time.Millisecond))
	} else {
		d.notef("using the binaries in %s", bins)
	}
	return nil
}

func (d *demo) startServer(ctx context.Context) error {
	d.stepf("Starting a control plane: embedded SQLite, development signing keys (-dev), loopback ports")
	data := filepath.Join(d.dir, "server")
	if err := os.MkdirAll(data, 0o700); err != nil {
		return err
	}
	d.caFile = filepath.Join(data, "pki", "ca.pem")
	server := filepath.Join(d.bins, "meshanics-server")
	initArgs := []string{"init", "-dev", "-data-dir", data, "-public-host", "127.0.0.1"}
	d.notef("$ meshanics-server %s", d.display(strings.Join(initArgs, " ")))
	cmd := exec.CommandContext(ctx, server, initArgs...)
	logPath := filepath.Join(data, "server.log")
	logf, err := os.OpenFile(logPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	cmd.Stderr = logf
	out, err := cmd.Output()
	logf.Close()
	if err != nil {
		return fmt.Errorf("meshanics-server init: %v\n%s", err, logTail(logPath, 3000))
	}
	d.apiKey = strings.TrimSpace(string(out))
	if !strings.HasPrefix(d.apiKey, "msk_") || strings.Contains(d.apiKey, "\n") {
		return fmt.Errorf("meshanics-server init printed %q, want one API key msk_…", tail(string(out), 200))
	}
	d.notef("  (prints the first admin's API key; the development TUF ceremony ran with keys in %s)", d.display(data))

	// A probed port can be taken by another program before the server
	// binds it; then start again on other ports.
	var ports []int
	for attempt := 1; ; attempt++ {
		if ports, err = freeLoopbackPorts(3); err != nil {
			return err
		}
		d.webURL = fmt.Sprintf("https://127.0.0.1:%d", ports[0])
		args := []string{"-dev", "-data-dir", data, "-public-host", "127.0.0.1",
			"-web-addr", fmt.Sprintf("127.0.0.1:%d", ports[0]),
			"-device-addr", fmt.Sprintf("127.0.0.1:%d", ports[1]),
			"-repo-addr", fmt.Sprintf("127.0.0.1:%d", ports[2]),
			"-heartbeat-interval", "1s"}
		if attempt == 1 {
			d.notef("$ meshanics-server %s", d.display(strings.Join(args, " ")))
		}
		if d.server, err = d.procs.start("meshanics-server", data, logPath, demoEnv(), server, args...); err != nil {
			return err
		}
		err = d.waitReady(ctx)
		if err == nil {
			break
		}
		if done, _ := d.server.exited(); !done || attempt == 3 || !strings.Contains(logTail(logPath, 4000), "address already in use") {
			return err
		}
		d.notef("a port was taken meanwhile; starting again on other ports")
	}
	d.notef("ready: REST and enrollment on %s, device API on :%d, update repository on :%d", d.webURL, ports[1], ports[2])
	a := &app{server: d.webURL, caFile: d.caFile, apiKey: d.apiKey}
	d.cl, err = a.api()
	return err
}

// demoEnv is the environment of the started binaries: a fixed PATH, as
// systemd gives a unit, and nothing of the caller's.
func demoEnv(extra ...string) []string {
	return append([]string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}, extra...)
}

// waitReady polls /readyz over TLS verified with the fleet CA.
func (d *demo) waitReady(ctx context.Context) error {
	return d.waitFor(ctx, "the control plane to be ready", 60*time.Second, func() (bool, string, error) {
		if done, err := d.server.exited(); done {
			return false, "", fmt.Errorf("meshanics-server exited: %v\n%s", err, logTail(d.server.logPath, 3000))
		}
		pem, err := os.ReadFile(d.caFile)
		if err != nil {
			return false, "no CA yet", nil
		}
		pool := x509.NewCertPool()
		pool.AppendCertsFromPEM(pem)
		hc := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
		defer hc.CloseIdleConnections()
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, d.webURL+"/readyz", nil)
		resp, err := hc.Do(req)
		if err != nil {
			return false, err.Error(), nil
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK, resp.Status, nil
	})
}

// waitFor polls cond every 250 ms until it holds, fails, or timeout passes.
func (d *demo) waitFor(ctx context.Context, what string, timeout time.Duration, cond func() (bool, string, error)) error {
	deadline := time.Now().Add(timeout)
	last := ""
	for {
		ok, status, err := cond()
		if err != nil {
			return err
		}
		if ok {
			return nil
		}
		last = status
		if time.Now().After(deadline) {
			return fmt.Errorf("waited %v for %s; last seen: %s", timeout, what, last)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(250 * time.Millisecond):
		}
	}
}

func (d *demo) enroll(ctx context.Context) error {
	d.stepf("Enrolling five agents (standalone: own config and data dirs, unprivileged, no container runtime)")
	args := []string{"-o", "json", "tokens", "create", "-uses", "5", "-ttl", "15m", "-tag", "site=demo"}
	d.notef("$ meshctl %s", strings.Join(args, " "))
	out, err := d.meshctl(ctx, false, args...)
	if err != nil {
		return err
	}
	var tok struct {
		Token string `json:"token"`
		CAPin string `json:"ca_pin"`
	}
	if err := json.Unmarshal([]byte(out), &tok); err != nil || !strings.HasPrefix(tok.Token, "mst_") {
		return fmt.Errorf("tokens create answered %q: %v", tail(out, 300), err)
	}
	d.notef("  one token for five devices, valid 15 minutes. The answer holds the secret (shown once), the CA pin")
	d.notef("  and the install command a real device runs (curl … install.sh | sudo sh). Here each agent enrolls directly:")
	d.agents = map[string]*demoAgent{}
	agentBin := filepath.Join(d.bins, "meshanics-agent")
	var mu sync.Mutex
	errs := make([]error, len(demoDevices))
	var wg sync.WaitGroup
	for i, name := range demoDevices {
		root := filepath.Join(d.dir, "devices", name)
		ag := &demoAgent{name: name, root: root, dataDir: filepath.Join(root, "var")}
		d.agents[name] = ag
		args := []string{"enroll", "-url", d.webURL, "-token", tok.Token, "-ca-pin", tok.CAPin, "-name", name,
			"-config-dir", filepath.Join(root, "etc"), "-data-dir", ag.dataDir, "-container-runtime", "none",
			"-containers-certs-dir", filepath.Join(root, "containers-certs.d"), "-docker-certs-dir", filepath.Join(root, "docker-certs.d")}
		if i == 0 {
			shown := slices.Clone(args)
			shown[4] = "mst_…" // the token is a secret; print its shape only
			d.notef("$ meshanics-agent %s", d.display(strings.Join(shown, " ")))
			d.notef("  (and the same for %s)", strings.Join(demoDevices[1:], ", "))
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := os.MkdirAll(ag.dataDir, 0o700); err != nil {
				errs[i] = err
				return
			}
			b, err := exec.CommandContext(ctx, agentBin, args...).CombinedOutput()
			if err != nil {
				mu.Lock()
				errs[i] = fmt.Errorf("meshanics-agent enroll -name %s: %v\n%s", name, err, tail(string(b), 2000))
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	for _, name := range demoDevices {
		ag := d.agents[name]
		// Every device but the canary gets the camera calibration that
		// detector 1.1.0 needs (its rollout probes for it).
		if name != d.canary {
			if err := os.MkdirAll(filepath.Join(ag.dataDir, "calibration"), 0o700); err != nil {
				return err
			}
			if err := os.WriteFile(filepath.Join(ag.dataDir, "calibration", "camera.json"), []byte(`{"fx":912.4,"fy":911.8,"cx":640,"cy":360}`+"\n"), 0o600); err != nil {
				return err
			}
		}
		env, err := agentenv.Read(filepath.Join(ag.root, "etc", "agent.env"))
		if err != nil {
			return err
		}
		ag.proc, err = d.procs.start("meshanics-agent "+name, ag.dataDir, filepath.Join(ag.root, "agent.log"), demoEnv(env...), agentBin)
		if err != nil {
			return err
		}
	}
	d.notef("started five agents with their agent.env (as the systemd unit would); each runs in its data dir")
	d.notef("every device but %s has a camera calibration file, calibration/camera.json, in its data dir", d.canary)
	if err := d.waitFor(ctx, "five devices online", 60*time.Second, d.allOnline); err != nil {
		return err
	}
	_, err = d.meshctl(ctx, true, "devices", "list")
	return err
}

// allOnline is a waitFor condition: every demo device is online and every
// agent process still runs.
func (d *demo) allOnline() (bool, string, error) {
	if err := d.agentsAlive(); err != nil {
		return false, "", err
	}
	var l list[struct {
		Name   string `json:"name"`
		Status string `json:"status"`
	}]
	q := url.Values{"limit": {"200"}}
	if err := d.getJSON(apiPath("devices"), q, &l); err != nil {
		return false, err.Error(), nil
	}
	online := 0
	var seen []string
	for _, dev := range l.Items {
		seen = append(seen, dev.Name+"="+dev.Status)
		if _, ok := d.agents[dev.Name]; ok && dev.Status == "online" {
			online++
		}
	}
	return online == len(d.agents), strings.Join(seen, " "), nil
}

// agentsAlive fails when an agent process has exited.
func (d *demo) agentsAlive() error {
	for _, name := range demoDevices {
		ag := d.agents[name]
		if ag == nil || ag.proc == nil {
			continue
		}
		if done, err := ag.proc.exited(); done {
			return fmt.Errorf("agent %s exited (%v); its log:\n%s", name, err, logTail(ag.proc.logPath, 3000))
		}
	}
	return nil
}

// getJSON GETs an API path quietly (for the demo's own checks, not shown).
func (d *demo) getJSON(path string, q url.Values, v any) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := d.cl.do(ctx, http.MethodGet, path, q, nil)
	if err != nil {
		return err
	}
	return json.Unmarshal(resp.body, v)
}
