package e2e

import (
	"bytes"
	"encoding/json"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"
)

// trustCenter is GET /api/v1/trust (meshctl -o json trust show).
type trustCenter struct {
	Initialized        bool `json:"initialized"`
	ConsistentSnapshot bool `json:"consistent_snapshot"`
	Roles              []struct {
		Role           string    `json:"role"`
		Online         bool      `json:"online"`
		Version        int64     `json:"version"`
		Expires        time.Time `json:"expires"`
		Threshold      int       `json:"threshold"`
		KeyIDs         []string  `json:"keyids"`
		Paths          []string  `json:"paths"`
		ServerHoldsKey bool      `json:"server_holds_key"`
	} `json:"roles"`
}

func (c *cluster) trust(t *testing.T) (tc trustCenter, role func(string) (version int64, threshold int, keyids []string)) {
	t.Helper()
	out := c.meshctl(t, "-o", "json", "trust", "show")
	if err := json.Unmarshal(out, &tc); err != nil {
		t.Fatalf("trust show = %q: %v", out, err)
	}
	return tc, func(name string) (int64, int, []string) {
		for _, r := range tc.Roles {
			if r.Role == name {
				return r.Version, r.Threshold, r.KeyIDs
			}
		}
		t.Fatalf("trust center lacks role %s: %s", name, out)
		return 0, 0, nil
	}
}

// meshctlFails runs meshctl expecting a failure and returns its stderr.
func (c *cluster) meshctlFails(t *testing.T, args ...string) string {
	t.Helper()
	full := append([]string{"-server", c.webURL, "-ca", c.caFile, "-api-key", c.key}, args...)
	cmd := exec.Command(filepath.Join(c.bin, "meshctl"), full...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if out, err := cmd.Output(); err == nil {
		t.Fatalf("meshctl %s succeeded, want a failure:\n%s", strings.Join(args, " "), out)
	}
	return stderr.String()
}

// TestOfflineCeremonyEndToEnd runs the update trust of SPEC §5 with the
// real binaries and no -dev anywhere: the server starts untrusted and
// refuses to publish; the offline ceremony (meshctl trust online-keys,
// tuf init with a 2-of-2 root, export, import) makes it trusted; an agent
// enrolled afterwards installs a signed model; root is rotated twice
// (offline, imported) and the same agent, still pinning root v1, walks
// the chain and installs the next model; the publisher key is rotated
// (server generates, ceremony re-delegates, import) and the agent installs
// what the new key signed. The trust center shows each step.
func TestOfflineCeremonyEndToEnd(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("the agent runs on Linux")
	}
	c := startUntrustedCluster(t)
	bin := c.bin

	work := t.TempDir()
	write := fileWriter(t, work)
	manifest := write("manifest.json", `{"framework":"onnx"}`)
	publish := func(version, content string) {
		c.meshctl(t, "artifacts", "publish", "-kind", "model", "-name", "det", "-version", version,
			"-file", write("m"+version, content), "-file-name", "model.onnx", "-manifest", manifest)
	}

	// Before the ceremony: not trusted, nothing can be published.
	if tc, _ := c.trust(t); tc.Initialized || len(tc.Roles) != 0 {
		t.Fatalf("trust center before the ceremony = %+v, want not initialized", tc)
	}
	if msg := c.meshctlFails(t, "artifacts", "publish", "-kind", "model", "-name", "det", "-version", "0",
		"-file", write("m0", "zero"), "-manifest", manifest); !strings.Contains(msg, "ceremony") {
		t.Errorf("publish before the ceremony failed with %q, want the hint to run the ceremony", msg)
	}

	// The ceremony, offline: keys in a directory the server never sees.
	ceremony, transfer, online := filepath.Join(work, "ceremony"), filepath.Join(work, "transfer"), filepath.Join(work, "online.json")
	c.meshctl(t, "trust", "online-keys", "-out", online)
	c.meshctl(t, "tuf", "init", "-keys", ceremony, "-online-keys", online, "-root-keys", "2", "-root-threshold", "2")
	keyFiles, _ := filepath.Glob(filepath.Join(ceremony, "*.key"))
	if len(keyFiles) != 3 {
		t.Fatalf("ceremony directory holds %d key files, want 2 root + 1 targets", len(keyFiles))
	}
	for _, k := range keyFiles {
		if st, err := os.Stat(k); err != nil || st.Mode().Perm() != 0o600 {
			t.Errorf("%s: mode %v (%v), want 0600", k, st.Mode().Perm(), err)
		}
	}
	c.meshctl(t, "tuf", "export", "-keys", ceremony, "-out", transfer)
	if ents, _ := os.ReadDir(transfer); slices.ContainsFunc(ents, func(e fs.DirEntry) bool { return strings.HasSuffix(e.Name(), ".key") }) {
		t.Fatalf("export carries key files: %v", ents)
	}
	c.meshctl(t, "tuf", "import", transfer)
	if msg := c.meshctlFails(t, "tuf", "import", transfer); !strings.Contains(msg, "nothing new") {
		t.Errorf("importing the same metadata again failed with %q, want nothing new to import", msg)
	}

	tc, role := c.trust(t)
	if !tc.Initialized || !tc.ConsistentSnapshot {
		t.Fatalf("trust center after import = %+v, want initialized with consistent snapshots", tc)
	}
	rootV, rootTh, rootKeys := role("root")
	if rootV != 1 || rootTh != 2 || len(rootKeys) != 2 {
		t.Errorf("root = v%d threshold %d keys %v, want v1, 2 of 2", rootV, rootTh, rootKeys)
	}
	_, _, pub1 := role("publisher")
	for _, r := range tc.Roles {
		if r.Expires.Before(time.Now()) || r.KeyIDs == nil || r.Threshold < 1 {
			t.Errorf("trust center role %+v: want keys, a threshold and a future expiry", r)
		}
		if r.Online != (r.Role == "snapshot" || r.Role == "timestamp" || r.Role == "publisher") || (r.Online && !r.ServerHoldsKey) {
			t.Errorf("trust center role %s: online %v, server holds key %v", r.Role, r.Online, r.ServerHoldsKey)
		}
		if r.Role == "publisher" && !slices.Equal(r.Paths, []string{"artifacts/*/*/*/*"}) {
			t.Errorf("publisher paths %v, want the artifacts/* delegation", r.Paths)
		}
	}
	// The offline keys never reached the server.
	filepath.WalkDir(c.dataDir, func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() && (strings.HasPrefix(d.Name(), "root-") || strings.HasPrefix(d.Name(), "targets-") || strings.Contains(p, "dev-ceremony")) {
			t.Errorf("the server's data directory holds %s", p)
		}
		return nil
	})

	// A device enrolled now pins root v1.
	tok, pin := c.mintToken(t)
	dev := t.TempDir()
	agentBin := filepath.Join(bin, "meshanics-agent-linux-"+runtime.GOARCH)
	enroll := exec.Command(agentBin, "enroll", "-url", c.webURL, "-token", tok, "-ca-pin", pin, "-name", "e2e-trust",
		"-config-dir", filepath.Join(dev, "etc"), "-data-dir", filepath.Join(dev, "var"), "-container-runtime", "none",
		"-containers-certs-dir", filepath.Join(dev, "cc"), "-docker-certs-dir", filepath.Join(dev, "dc"))
	if out, err := enroll.CombinedOutput(); err != nil {
		t.Fatalf("meshanics-agent enroll: %v\n%s", err, out)
	}
	pinned, err := os.ReadFile(filepath.Join(dev, "etc", "root.json"))
	if err != nil || !bytes.Contains(pinned, []byte(rootKeys[0])) {
		t.Fatalf("the device's pinned root.json (%v) is not the ceremony's root v1", err)
	}
	agent := startProc(t, "meshanics-agent", readEnv(t, filepath.Join(dev, "etc", "agent.env")), agentBin)
	defer agent.stop(t)
	c.waitStatus(t, "e2e-trust", "online")
	c.meshctl(t, "groups", "create", "edge", "e2e-trust")
	current := filepath.Join(dev, "var", "artifacts", "det", "current", "model.onnx")
	probe := `{"type":"file","target":"` + current + `","attempts":2,"interval_seconds":1}`
	installed := func(want string) {
		t.Helper()
		if b, err := os.ReadFile(current); err != nil || string(b) != want {
			t.Fatalf("the device runs %q (%v), want %q", b, err, want)
		}
	}

	publish("1", "weights one")
	c.rollout(t, "det@1", probe, "healthy")
	installed("weights one")

	// Root rotated twice, each imported; the agent still pins v1.
	c.meshctl(t, "tuf", "rotate-root", "-keys", ceremony, "-root-keys", "3", "-root-threshold", "2")
	c.meshctl(t, "tuf", "export", "-keys", ceremony, "-out", transfer)
	c.meshctl(t, "tuf", "import", transfer)
	c.meshctl(t, "tuf", "rotate-root", "-keys", ceremony)
	c.meshctl(t, "tuf", "import", ceremony) // the key directory works too
	_, role = c.trust(t)
	if v, th, keys := role("root"); v != 3 || th != 2 || len(keys) != 3 || slices.ContainsFunc(keys, func(k string) bool { return slices.Contains(rootKeys, k) }) {
		t.Fatalf("root after two rotations = v%d threshold %d keys %v, want v3, 2 of 3 fresh keys", v, th, keys)
	}
	if retired, _ := filepath.Glob(filepath.Join(ceremony, "retired", "root-*.key")); len(retired) != 5 {
		t.Errorf("retired root keys: %d, want 2 + 3", len(retired))
	}
	publish("2", "weights two")
	c.rollout(t, "det@2", probe, "healthy")
	installed("weights two")
	if b, err := os.ReadFile(filepath.Join(dev, "var", "tuf", "metadata", "root.json")); err != nil || !bytes.Contains(b, []byte(`"version":3`)) {
		t.Errorf("the agent's trusted root is not v3 (%v)", err)
	}
	if b, _ := os.ReadFile(filepath.Join(dev, "etc", "root.json")); !bytes.Equal(b, pinned) {
		t.Error("the pinned root.json changed; the chain must be walked from it, not replace it")
	}

	// Publisher key compromise: the server generates a new key, the
	// ceremony re-delegates to it, the import makes it sign.
	c.meshctl(t, "trust", "rotate-key", "publisher")
	c.meshctl(t, "trust", "online-keys", "-out", online)
	var offered struct {
		Publisher json.RawMessage `json:"publisher"`
	}
	if b, _ := os.ReadFile(online); json.Unmarshal(b, &offered) != nil || len(offered.Publisher) == 0 {
		t.Fatalf("online keys after rotate-key: %s", b)
	}
	c.meshctl(t, "tuf", "rotate-publisher", "-keys", ceremony, "-online-keys", online)
	c.meshctl(t, "tuf", "import", ceremony)
	_, role = c.trust(t)
	_, _, pub2 := role("publisher")
	if len(pub2) != 1 || slices.Contains(pub1, pub2[0]) {
		t.Fatalf("publisher keys after rotation %v, want one new key (was %v)", pub2, pub1)
	}
	publish("3", "weights three")
	c.rollout(t, "det@3", probe, "healthy")
	installed("weights three")
	// The old publisher key is never offered to a later ceremony again.
	if b := c.meshctl(t, "-o", "json", "trust", "online-keys"); bytes.Contains(b, []byte(pub1[0])) {
		t.Errorf("online-keys offers the rotated-out publisher key %s again", pub1[0])
	}

	// Someone with the server's disk swaps the bytes of a signed artifact
	// (same length): the agent refuses them as a verification failure,
	// keeps running v3, and its artifact area holds nothing of v4.
	publish("4", "weights four")
	var v4 struct {
		SHA256 string `json:"sha256"`
	}
	if err := json.Unmarshal(c.meshctl(t, "-o", "json", "artifacts", "show", "det@4"), &v4); err != nil || len(v4.SHA256) != 64 {
		t.Fatalf("artifacts show det@4: %v %+v", err, v4)
	}
	blob := filepath.Join(c.dataDir, "blobs", "sha256", v4.SHA256[:2], v4.SHA256)
	if err := os.WriteFile(blob, []byte("weights evil"), 0o644); err != nil {
		t.Fatal(err)
	}
	// The first refusal is reported right after its partial download is
	// removed; the retry waits at least 30 s, long enough to look.
	var r4 struct {
		ID string `json:"id"`
	}
	if err := json.Unmarshal(c.meshctl(t, "-o", "json", "rollouts", "create", "-artifact", "det@4", "-group", "edge", "-probe", probe), &r4); err != nil || r4.ID == "" {
		t.Fatalf("rollouts create det@4: %v", err)
	}
	for deadline, state := time.Now().Add(90*time.Second), ""; state != "verifying"; time.Sleep(250 * time.Millisecond) {
		var l struct {
			Items []struct {
				State  string `json:"state"`
				Detail string `json:"detail"`
			} `json:"items"`
		}
		json.Unmarshal(c.meshctl(t, "-o", "json", "rollouts", "devices", r4.ID), &l)
		if len(l.Items) == 1 {
			state = l.Items[0].State
			if state != "verifying" && state != "pending" && state != "assigned" && state != "downloading" {
				t.Fatalf("tampered det@4 reached %s (%s), want verifying (refused, retried)", state, l.Items[0].Detail)
			}
			if state == "verifying" && !strings.Contains(l.Items[0].Detail, "does not match the signed") {
				t.Errorf("tampered det@4 refused with %q, want the sha256 mismatch", l.Items[0].Detail)
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("the device never refused the tampered det@4 (last %q)", state)
		}
	}
	installed("weights three")
	filepath.WalkDir(filepath.Join(dev, "var", "artifacts"), func(p string, d fs.DirEntry, err error) error {
		if err == nil && (strings.Contains(d.Name(), "partial") || strings.Contains(p, filepath.Join("versions", "4"))) {
			t.Errorf("a refused download left %s in the artifact area", p)
		}
		return nil
	})
	c.meshctl(t, "rollouts", "abort", "-policy", "keep", r4.ID)
}
