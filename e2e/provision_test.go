package e2e

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"testing"
)

// TestProvisionOfflineEndToEnd is the air-gapped path of SPEC §2: the
// device makes its key and CSR (`meshanics-agent csr`), the operator signs
// it into a bundle (`meshctl devices provision-offline`), the bundle is
// placed next to the key, and the agent runs from it exactly as an
// enrolled one does: online, then offline after it stops.
func TestProvisionOfflineEndToEnd(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("the agent runs on Linux")
	}
	c := startCluster(t, "")
	agentBin := filepath.Join(c.bin, "meshanics-agent-linux-"+runtime.GOARCH)
	dev := t.TempDir()
	cfgDir, dataDir := filepath.Join(dev, "etc"), filepath.Join(dev, "var")
	csrFile := filepath.Join(t.TempDir(), "air-01.csr")
	if out, err := exec.Command(agentBin, "csr", "-name", "air-01", "-config-dir", cfgDir, "-out", csrFile).CombinedOutput(); err != nil {
		t.Fatalf("meshanics-agent csr: %v\n%s", err, out)
	}
	keyBefore, err := os.ReadFile(filepath.Join(cfgDir, "device.key"))
	if err != nil {
		t.Fatalf("csr did not leave device.key: %v", err)
	}

	bundle := filepath.Join(t.TempDir(), "bundle")
	var resp struct {
		Device string `json:"device"`
		Fleet  string `json:"fleet"`
	}
	out := c.meshctl(t, "-o", "json", "devices", "provision-offline", "air-01", "-csr", csrFile, "-out", bundle,
		"-tag", "site=vault", "-config-dir", cfgDir, "-data-dir", dataDir)
	if err := json.Unmarshal(out, &resp); err != nil || resp.Device != "air-01" || resp.Fleet == "" {
		t.Fatalf("provision-offline -o json = %q (%v)", out, err)
	}
	for _, f := range []string{"device.crt", "ca.pem", "root.json", "agent.env"} {
		b, err := os.ReadFile(filepath.Join(bundle, f))
		if err != nil {
			t.Fatalf("bundle lacks %s: %v", f, err)
		}
		if err := os.WriteFile(filepath.Join(cfgDir, f), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := os.Stat(filepath.Join(bundle, "device.key")); err == nil {
		t.Error("the bundle holds a device.key: the key must never leave the device")
	}
	c.waitStatus(t, "air-01", "offline") // recorded, not yet seen

	env := append(readEnv(t, filepath.Join(cfgDir, "agent.env")), "MESHANICS_CONTAINER_RUNTIME=none")
	agent := startProc(t, "meshanics-agent", env, agentBin)
	c.waitStatus(t, "air-01", "online")
	var show struct {
		Tags map[string]string `json:"tags"`
	}
	if err := json.Unmarshal(c.meshctl(t, "-o", "json", "devices", "show", "air-01"), &show); err != nil || show.Tags["site"] != "vault" {
		t.Errorf("devices show air-01 tags = %v (%v), want site=vault", show.Tags, err)
	}
	if code := agent.stop(t); code != 0 {
		t.Errorf("agent exit code after SIGTERM = %d, want 0", code)
	}
	c.waitStatus(t, "air-01", "offline")
	if keyAfter, _ := os.ReadFile(filepath.Join(cfgDir, "device.key")); string(keyAfter) != string(keyBefore) {
		t.Error("the device key changed")
	}
}
