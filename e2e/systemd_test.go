package e2e

import (
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"
)

// Inside the systemd container: fixed ports are fine there, the container
// has its own network namespace with nothing but loopback.
const (
	sdWeb      = "https://127.0.0.1:8443"
	sdData     = "/srv/meshanics"
	sdCA       = sdData + "/pki/ca.pem"
	sdDevice   = "sd-device"
	sdUnit     = "meshanics-agent.service"
	sdV1       = "0.0.1-systemd-test"
	sdV2       = "0.0.2-systemd-test"
	sdConfDir  = "/etc/meshtest"
	sdAppUnit  = "meshtest-app.service"
	sdRepoHost = "127.0.0.1:9444"
	sdModel    = "/var/lib/meshanics/artifacts/det/current/model.onnx"
)

// TestAgentUnderSystemd proves the agent's operational story under real
// systemd as PID 1 (issue 6): the served install.sh run as an operator runs
// it installs the hardened unit and the agent comes online; the sandbox is
// really applied and still lets a config file be placed in an allowlisted
// directory with a unit reload and an exec probe; a log pull returns the
// unit's journal; re-running the installer with a newer binary upgrades in
// place (same key and device record, new certificate, payloads, data dir
// and trust anchor untouched, service restarted); decommission makes the
// agent wipe and exit 77 with the unit staying down; a later start exits 78.
func TestAgentUnderSystemd(t *testing.T) {
	if runtime.GOOS != "linux" || (runtime.GOARCH != "amd64" && runtime.GOARCH != "arm64") {
		t.Skip("the agent and its installer target linux/amd64 and linux/arm64")
	}
	start := time.Now()
	image := systemdImage(t)

	// Binaries: static, so they run on the image's libc whatever the host.
	host := t.TempDir()
	if err := os.Chmod(host, 0o755); err != nil {
		t.Fatal(err)
	}
	agents := filepath.Join(host, "agents")
	if err := os.Mkdir(agents, 0o755); err != nil {
		t.Fatal(err)
	}
	buildStatic(t, host, "./cmd/meshanics-server", "meshanics-server", "systemd-test")
	buildStatic(t, host, "./cmd/meshctl", "meshctl", "systemd-test")
	buildStatic(t, agents, "./cmd/meshanics-agent", "meshanics-agent-linux-"+runtime.GOARCH, sdV1)
	v2 := buildStatic(t, host, "./cmd/meshanics-agent", "agent-v2", sdV2)
	for name, content := range map[string]string{
		"app.conf":      "listen=2\n",
		"app2.conf":     "listen=3\n",
		"model.onnx":    "weights one",
		"manifest.json": `{"framework":"onnx"}`,
		"profile.json":  `{"activator":"place-file","destination":"` + sdConfDir + `/app.conf","mode":"0640","reload":{"systemd_unit":"` + sdAppUnit + `"}}`,
		// The allowlisted unit the config reload restarts: it records what
		// it saw, so the test knows the reload ran after the placement.
		sdAppUnit: "[Unit]\nDescription=meshtest app\n[Service]\nType=oneshot\nRemainAfterExit=yes\n" +
			"ExecStart=/usr/bin/cp " + sdConfDir + "/app.conf /run/meshtest-app.seen\n",
	} {
		if err := os.WriteFile(filepath.Join(host, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("image and binaries ready after %s", time.Since(start).Round(time.Second))

	c := startSystemdContainer(t, image, host)
	t.Logf("systemd up after %s", time.Since(start).Round(time.Second))

	// The control plane beside the device, as a transient unit.
	c.must(t, "sh", "-c", "mkdir -p "+sdData+" && /mt/meshanics-server init -dev -data-dir "+sdData+
		" -public-host 127.0.0.1 >"+sdData+"/admin-key 2>"+sdData+"/init.log")
	key := strings.TrimSpace(c.stdout(t, "cat", sdData+"/admin-key"))
	if !strings.HasPrefix(key, "msk_") {
		t.Fatalf("admin key = %q", key)
	}
	c.must(t, "systemd-run", "--unit", "meshanics-server", "/mt/meshanics-server", "-dev", "-data-dir", sdData,
		"-public-host", "127.0.0.1", "-web-addr", "127.0.0.1:8443", "-device-addr", "127.0.0.1:9443",
		"-repo-addr", sdRepoHost, "-heartbeat-interval", "1s", "-agent-dir", "/mt/agents")
	waitFor(t, "the server's /readyz", func() (bool, string) {
		out, err := c.exec(t.Context(), "curl", "-fsS", "--cacert", sdCA, sdWeb+"/readyz")
		return err == nil, out
	})
	meshctl := func(args ...string) string {
		t.Helper()
		return c.stdout(t, append([]string{"/mt/meshctl", "-server", sdWeb, "-ca", sdCA, "-api-key", key}, args...)...)
	}

	// The device side: runtime config dirs (so the agent installs its trust
	// dirs), an allowlisted config directory and the unit its reload may
	// restart.
	c.must(t, "mkdir", "-p", "/etc/docker", "/etc/containers", sdConfDir)
	c.must(t, "cp", "/mt/"+sdAppUnit, "/etc/systemd/system/"+sdAppUnit)

	// 1. Install exactly as the operator does: the command printed by
	// `meshctl tokens create`, plus allowlist flags.
	install := func() {
		t.Helper()
		var tok struct {
			Install string `json:"install_command"`
		}
		if err := json.Unmarshal([]byte(meshctl("-o", "json", "tokens", "create")), &tok); err != nil || !strings.Contains(tok.Install, "| sudo sh -s --") {
			t.Fatalf("tokens create: install_command = %q (%v)", tok.Install, err)
		}
		cmd := tok.Install + " --name " + sdDevice + " --container-runtime none --allow-config-dest " + sdConfDir +
			" --allow-reload-unit " + sdAppUnit + " --allow-exec-probe /usr/bin/test"
		out, err := c.exec(t.Context(), "bash", "-c", "set -o pipefail; "+cmd)
		if err != nil {
			t.Fatalf("install command: %v\n%s", err, out)
		}
		t.Logf("installer:\n%s", out)
	}
	install()
	t.Logf("installed after %s", time.Since(start).Round(time.Second))
	if st := c.show(t, sdUnit, "ActiveState", "UnitFileState"); st["ActiveState"] != "active" || st["UnitFileState"] != "enabled" {
		t.Fatalf("after install: %v, want active and enabled", st)
	}
	waitDevice(t, meshctl, "online", sdV1)
	if out := c.must(t, "/usr/local/bin/meshanics-agent", "-version"); !strings.Contains(out, sdV1) {
		t.Errorf("meshanics-agent -version = %q, want %s", out, sdV1)
	}
	waitFor(t, "systemctl status to show the version", func() (bool, string) {
		out, _ := c.exec(t.Context(), "systemctl", "status", "--no-pager", "-n", "50", sdUnit)
		return strings.Contains(out, "version="+sdV1), out
	})

	// 2. The sandbox is the hardened unit's, with the drop-in applied.
	checkSandbox(t, c)

	// 3. Features under the sandbox: a config placed in the allowlisted
	// directory (writable only through the installer's drop-in), the
	// allowlisted unit reloaded through systemctl, an exec probe.
	meshctl("groups", "create", "edge", sdDevice)
	meshctl("artifacts", "publish", "-kind", "config", "-name", "app", "-version", "1",
		"-file", "/mt/app.conf", "-file-name", "app.conf", "-profile", "/mt/profile.json")
	sdRollout(t, meshctl, "app@1", `{"type":"exec","target":"/usr/bin/test","args":["-s","`+sdConfDir+`/app.conf"],"attempts":3,"interval_seconds":1}`, "healthy")
	if out := c.must(t, "stat", "-c", "%a %s", sdConfDir+"/app.conf"); strings.TrimSpace(out) != "640 9" {
		t.Errorf("placed config: stat = %q, want mode 640 and 9 bytes", out)
	}
	if out, _ := c.exec(t.Context(), "cat", "/run/meshtest-app.seen"); out != "listen=2\n" {
		t.Errorf("the reload of %s did not see the placed file: %q", sdAppUnit, out)
	}
	// Replacing a file that belongs to the application's user keeps its
	// owner: CAP_CHOWN/CAP_FOWNER and the chown system calls must survive
	// the sandbox, and CAP_DAC_OVERRIDE lets root write into the
	// application's own directory.
	c.must(t, "chown", "-R", "65534:65534", sdConfDir)
	c.must(t, "chmod", "0700", sdConfDir)
	meshctl("artifacts", "publish", "-kind", "config", "-name", "app", "-version", "2",
		"-file", "/mt/app2.conf", "-file-name", "app.conf", "-profile", "/mt/profile.json")
	sdRollout(t, meshctl, "app@2", `{"type":"exec","target":"/usr/bin/test","args":["-s","`+sdConfDir+`/app.conf"],"attempts":3,"interval_seconds":1}`, "healthy")
	if out := c.must(t, "stat", "-c", "%u:%g %a %s", sdConfDir+"/app.conf"); strings.TrimSpace(out) != "65534:65534 640 9" {
		t.Errorf("replaced config: stat = %q, want owner 65534:65534 kept, mode 640, 9 bytes", out)
	}
	if out, _ := c.exec(t.Context(), "cat", "/run/meshtest-app.seen"); out != "listen=3\n" {
		t.Errorf("the reload of %s did not see the replaced file: %q", sdAppUnit, out)
	}

	// A model payload: staged in the data dir and activated by the
	// symlink swap, under ProtectSystem=strict.
	meshctl("artifacts", "publish", "-kind", "model", "-name", "det", "-version", "1",
		"-file", "/mt/model.onnx", "-file-name", "model.onnx", "-manifest", "/mt/manifest.json")
	sdRollout(t, meshctl, "det@1", `{"type":"file","target":"`+sdModel+`","attempts":3,"interval_seconds":1}`, "healthy")
	if out, _ := c.exec(t.Context(), "cat", sdModel); out != "weights one" {
		t.Errorf("model current = %q", out)
	}

	// 4. Log pull: lines from the unit's journal (journalctl format with
	// the syslog identifier and systemd's own lines for the unit), not the
	// in-memory ring.
	logs := meshctl("devices", "logs", sdDevice, "-wait", "-lines", "500")
	if !strings.Contains(logs, "meshanics-agent[") || !strings.Contains(logs, "systemd[1]: Started "+sdUnit) ||
		!strings.Contains(logs, "version="+sdV1) {
		t.Errorf("log pull is not the unit's journal:\n%s", lastLines(logs, 20))
	}

	// 5. Upgrade: re-run the installer with a newer binary served.
	before := deviceSnapshot(t, c, meshctl)
	if err := copyFile(v2, filepath.Join(agents, ".new")); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(filepath.Join(agents, ".new"), filepath.Join(agents, "meshanics-agent-linux-"+runtime.GOARCH)); err != nil {
		t.Fatal(err)
	}
	install()
	waitDevice(t, meshctl, "online", sdV2)
	after := deviceSnapshot(t, c, meshctl)
	if out := c.must(t, "/usr/local/bin/meshanics-agent", "-version"); !strings.Contains(out, sdV2) {
		t.Errorf("after upgrade: -version = %q, want %s", out, sdV2)
	}
	switch {
	case before.keySum != after.keySum:
		t.Error("upgrade replaced the device key")
	case before.certPub != after.certPub:
		t.Error("upgrade: the new certificate is not for the same key")
	case before.certSerial == after.certSerial:
		t.Error("upgrade did not obtain a fresh certificate")
	}
	if before.enrolledAt != after.enrolledAt || after.enrolledAt == "" {
		t.Errorf("upgrade changed the device record: enrolled_at %q → %q", before.enrolledAt, after.enrolledAt)
	}
	for what, pair := range map[string][2]string{
		"trust anchor":         {before.rootSum, after.rootSum},
		"data dir payloads":    {before.artifacts, after.artifacts},
		"placed config":        {before.payload, after.payload},
		"runtime trust dir CA": {before.trustCA, after.trustCA},
	} {
		if pair[0] != pair[1] {
			t.Errorf("upgrade changed the %s:\n%s\n→\n%s", what, pair[0], pair[1])
		}
	}
	// The restarted agent registers what it runs: the config payload, as
	// before the upgrade.
	if !strings.Contains(after.installed, `"name":"app","version":"2"`) {
		t.Errorf("after upgrade the device reports installed %s, want app@2", after.installed)
	}
	if before.mainPID == after.mainPID || before.invocation == after.invocation {
		t.Errorf("service not restarted by the upgrade: pid %s → %s, invocation %s → %s",
			before.mainPID, after.mainPID, before.invocation, after.invocation)
	}
	waitFor(t, "systemctl status to show the new version", func() (bool, string) {
		out, _ := c.exec(t.Context(), "systemctl", "status", "--no-pager", "-n", "20", sdUnit)
		return strings.Contains(out, "version="+sdV2), out
	})
	t.Logf("upgraded after %s", time.Since(start).Round(time.Second))

	// 6. Decommission: wipe, exit 77, unit stays down.
	meshctl("devices", "decommission", sdDevice)
	waitFor(t, "the agent to exit 77", func() (bool, string) {
		st := c.show(t, sdUnit, "ActiveState", "ExecMainStatus", "Result")
		return st["ActiveState"] == "failed" && st["ExecMainStatus"] == "77", fmt.Sprint(st)
	})
	for _, p := range []string{"/etc/meshanics/device.key", "/etc/meshanics/device.crt", "/etc/meshanics/ca.pem",
		"/etc/meshanics/root.json", "/etc/meshanics/trust-dirs.json", "/var/lib/meshanics/tuf", "/var/lib/meshanics/update",
		"/etc/docker/certs.d/" + sdRepoHost, "/etc/containers/certs.d/" + sdRepoHost} {
		if _, err := c.exec(t.Context(), "test", "!", "-e", p); err != nil {
			t.Errorf("%s still exists after decommission", p)
		}
	}
	if out, _ := c.exec(t.Context(), "cat", sdConfDir+"/app.conf"); out != "listen=3\n" {
		t.Errorf("decommission touched the running config payload: %q", out)
	}
	if out, _ := c.exec(t.Context(), "cat", sdModel); out != "weights one" {
		t.Errorf("decommission touched the running model payload: %q", out)
	}
	// A restart would come RestartSec (2 s) after the exit; give it several
	// times that and check none happened.
	time.Sleep(8 * time.Second)
	if out, _ := c.exec(t.Context(), "systemctl", "is-failed", sdUnit); strings.TrimSpace(out) != "failed" {
		t.Errorf("systemctl is-failed after decommission = %q", out)
	}
	if st := c.show(t, sdUnit, "ActiveState", "NRestarts", "ExecMainStatus"); st["ActiveState"] != "failed" || st["NRestarts"] != "0" || st["ExecMainStatus"] != "77" {
		t.Errorf("after decommission the unit = %v, want failed, no restart, status 77", st)
	}
	waitDevice(t, meshctl, "decommissioned", "")

	// 7. A start without credentials is a configuration error: 78, terminal.
	c.must(t, "systemctl", "start", sdUnit)
	waitFor(t, "the credential-less start to exit 78", func() (bool, string) {
		st := c.show(t, sdUnit, "ActiveState", "ExecMainStatus", "NRestarts")
		return st["ActiveState"] == "failed" && st["ExecMainStatus"] == "78", fmt.Sprint(st)
	})
	if st := c.show(t, sdUnit, "NRestarts"); st["NRestarts"] != "0" {
		t.Errorf("exit 78 was restarted: %v", st)
	}
	t.Logf("systemd test done in %s", time.Since(start).Round(time.Second))
}

// checkSandbox reads the running agent's sandbox from the kernel: no new
// privileges, a seccomp filter, the capability bounding set, read-only
// system paths, and the drop-in's writable config destination.
func checkSandbox(t *testing.T, c *sysdContainer) {
	t.Helper()
	st := c.show(t, sdUnit, "MainPID", "ReadWritePaths", "DropInPaths", "ProtectSystem", "NoNewPrivileges", "PrivateTmp", "ProtectHome")
	if st["ProtectSystem"] != "strict" || st["NoNewPrivileges"] != "yes" || st["PrivateTmp"] != "yes" || st["ProtectHome"] != "yes" {
		t.Errorf("running unit's sandbox = %v", st)
	}
	if !strings.Contains(st["ReadWritePaths"], sdConfDir) || !strings.Contains(st["DropInPaths"], "50-allowlist.conf") {
		t.Errorf("the installer's drop-in is not applied: %v", st)
	}
	status := c.must(t, "cat", "/proc/"+st["MainPID"]+"/status")
	for _, want := range []string{"NoNewPrivs:\t1", "Seccomp:\t2"} {
		if !strings.Contains(status, want) {
			t.Errorf("agent process status lacks %q:\n%s", want, status)
		}
	}
	// At most CAP_CHOWN, CAP_DAC_OVERRIDE, CAP_FOWNER (bits 0, 1, 3; the
	// container may lack some of them itself).
	var bnd uint64
	for _, line := range strings.Split(status, "\n") {
		if v, ok := strings.CutPrefix(line, "CapBnd:\t"); ok {
			if _, err := fmt.Sscanf(v, "%x", &bnd); err != nil {
				t.Errorf("CapBnd %q: %v", v, err)
			}
		}
	}
	if bnd == 0 || bnd&^0xb != 0 {
		t.Errorf("agent capability bounding set = %#x, want a non-empty subset of 0xb", bnd)
	}
	// The mount table as the agent sees it: / and /usr read-only, the data
	// dir and the allowlisted destination writable.
	mounts := c.must(t, "cat", "/proc/"+st["MainPID"]+"/mountinfo")
	for path, want := range map[string]string{"/": "ro", "/usr": "ro", "/etc": "ro", "/var/lib/meshanics": "rw", "/etc/meshanics": "rw",
		sdConfDir: "rw", "/etc/docker/certs.d": "rw", "/etc/containers/certs.d": "rw"} {
		if got := mountMode(mounts, path); got != want {
			t.Errorf("agent sees %s mounted %q, want %q", path, got, want)
		}
	}
}

// mountMode is the per-mount ro/rw flag of the last mount at path (or of
// the nearest parent mount), read from a mountinfo table.
func mountMode(mountinfo, path string) string {
	best, mode := "", ""
	for _, line := range strings.Split(mountinfo, "\n") {
		f := strings.Fields(line)
		if len(f) < 6 {
			continue
		}
		mp, opts := f[4], f[5]
		if mp == path || mp == "/" || strings.HasPrefix(path, mp+"/") {
			if len(mp) >= len(best) {
				best = mp
				mode = strings.Split(opts, ",")[0]
			}
		}
	}
	return mode
}

type snapshot struct {
	keySum, rootSum, certPub, certSerial string
	enrolledAt, installed                string
	artifacts, payload, trustCA          string
	mainPID, invocation                  string
}

func deviceSnapshot(t *testing.T, c *sysdContainer, meshctl func(...string) string) snapshot {
	t.Helper()
	var s snapshot
	s.keySum = c.must(t, "sha256sum", "/etc/meshanics/device.key")
	s.rootSum = c.must(t, "sha256sum", "/etc/meshanics/root.json")
	block, _ := pem.Decode([]byte(c.must(t, "cat", "/etc/meshanics/device.crt")))
	if block == nil {
		t.Fatal("device.crt is not PEM")
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	s.certPub, s.certSerial = fmt.Sprintf("%x", cert.RawSubjectPublicKeyInfo), cert.SerialNumber.String()
	var d struct {
		EnrolledAt string          `json:"enrolled_at"`
		Installed  json.RawMessage `json:"installed"`
	}
	if err := json.Unmarshal([]byte(meshctl("-o", "json", "devices", "show", sdDevice)), &d); err != nil {
		t.Fatal(err)
	}
	s.enrolledAt, s.installed = d.EnrolledAt, string(d.Installed)
	s.artifacts = c.must(t, "sh", "-c", "cd /var/lib/meshanics/artifacts && find . -printf '%p %y %s %i %l\\n' | sort")
	s.payload = c.must(t, "stat", "-c", "%i %s %a %Y", sdConfDir+"/app.conf")
	s.trustCA = c.must(t, "sha256sum", "/etc/docker/certs.d/"+sdRepoHost+"/ca.crt", "/etc/containers/certs.d/"+sdRepoHost+"/ca.crt")
	st := c.show(t, sdUnit, "MainPID", "InvocationID")
	s.mainPID, s.invocation = st["MainPID"], st["InvocationID"]
	return s
}

// waitDevice waits until the device has status (and agent version, when
// given) in `meshctl devices show`.
func waitDevice(t *testing.T, meshctl func(...string) string, status, version string) {
	t.Helper()
	waitFor(t, "device "+status+" "+version, func() (bool, string) {
		var d struct {
			Status       string `json:"status"`
			AgentVersion string `json:"agent_version"`
		}
		out := meshctl("-o", "json", "devices", "show", sdDevice)
		if err := json.Unmarshal([]byte(out), &d); err != nil {
			return false, out
		}
		return d.Status == status && (version == "" || d.AgentVersion == version), out
	})
}

// sdRollout rolls ref out to group edge and waits for the device state.
func sdRollout(t *testing.T, meshctl func(...string) string, ref, probe, want string) {
	t.Helper()
	var r struct {
		ID string `json:"id"`
	}
	if err := json.Unmarshal([]byte(meshctl("-o", "json", "rollouts", "create", "-artifact", ref, "-group", "edge", "-probe", probe)), &r); err != nil || r.ID == "" {
		t.Fatalf("rollouts create: %v", err)
	}
	waitFor(t, "rollout "+ref+" → "+want, func() (bool, string) {
		out := meshctl("-o", "json", "rollouts", "devices", r.ID)
		var l struct {
			Items []struct {
				State string `json:"state"`
			} `json:"items"`
		}
		_ = json.Unmarshal([]byte(out), &l)
		if len(l.Items) == 1 && l.Items[0].State != want {
			switch l.Items[0].State {
			case "healthy", "rolled_back", "failed": // terminal
				t.Fatalf("rollout %s ended %s, want %s: %s", ref, l.Items[0].State, want, out)
			}
		}
		return len(l.Items) == 1 && l.Items[0].State == want, out
	})
}

// waitFor polls cond (every 250 ms, up to 2 minutes) until it holds.
func waitFor(t *testing.T, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	var last string
	for time.Now().Before(deadline) {
		ok, detail := cond()
		if ok {
			return
		}
		last = detail
		time.Sleep(250 * time.Millisecond)
	}
	t.Fatalf("timed out waiting for %s; last: %s", what, lastLines(last, 30))
}

func copyFile(src, dst string) error {
	b, err := os.ReadFile(src)
	if err != nil {
		return err
	}
	return os.WriteFile(dst, b, 0o755)
}
