package server

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"io"
	"io/fs"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/meshanics/meshanics/internal/server/ca"
)

func quietLog() *slog.Logger { return slog.New(slog.DiscardHandler) }

func testConfig(t *testing.T, dataDir string) Config {
	t.Helper()
	cfg, err := ParseFlags("serve", []string{"-data-dir", dataDir, "-public-host", "127.0.0.1",
		"-web-addr", "127.0.0.1:0", "-device-addr", "127.0.0.1:0", "-repo-addr", "127.0.0.1:0",
		"-heartbeat-interval", "1s", "-shutdown-timeout", "5s"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// snapshot hashes every file under dir.
func snapshot(t *testing.T, dir string) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		sum := sha256.Sum256(b)
		out[p] = hex.EncodeToString(sum[:])
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func TestInitTwiceRefusesAndChangesNothing(t *testing.T) {
	dir := t.TempDir()
	cfg := testConfig(t, dir)
	key, err := Initialize(context.Background(), cfg, quietLog())
	if err != nil {
		t.Fatalf("Initialize: %v", err)
	}
	if !regexp.MustCompile(`^msk_[a-z2-7]+$`).MatchString(key) {
		t.Errorf("admin key = %q, want msk_…", key)
	}
	before := snapshot(t, dir)
	if _, err := Initialize(context.Background(), cfg, quietLog()); !errors.Is(err, ErrInitialized) {
		t.Fatalf("second Initialize = %v, want ErrInitialized", err)
	}
	after := snapshot(t, dir)
	if len(before) != len(after) {
		t.Fatalf("files changed: %d → %d", len(before), len(after))
	}
	for p, h := range before {
		if after[p] != h {
			t.Errorf("%s changed by a refused init", p)
		}
	}
	st, err := os.Stat(filepath.Join(dir, "pki", ca.CAKeyFile))
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Errorf("ca.key = %v, %v; want mode 0600", st, err)
	}
}

func TestInitOnSharedPostgresRefusesSecondDataDir(t *testing.T) {
	pg := freshPostgres(t) // skips without PostgreSQL (fails under MESHANICS_TEST_REQUIRE_ALL=1)
	cfg := testConfig(t, t.TempDir())
	cfg.Database = pg
	if _, err := Initialize(context.Background(), cfg, quietLog()); err != nil {
		t.Fatalf("Initialize on PostgreSQL: %v", err)
	}
	other := testConfig(t, t.TempDir())
	other.Database = pg
	if _, err := Initialize(context.Background(), other, quietLog()); !errors.Is(err, ErrInitialized) {
		t.Fatalf("Initialize of a second data dir on the same database = %v, want ErrInitialized", err)
	}
	if ok, _ := ca.Exists(filepath.Join(other.DataDir, "pki")); ok {
		t.Error("refused init left a CA behind")
	}
}

func TestParseFlags(t *testing.T) {
	good := [][]string{
		{"-data-dir", "d"},
		{"-data-dir", "d", "-public-host", "cp.example.com", "-public-host", "10.0.0.1"},
		{"-data-dir", "d", "-database", "postgres://u@h/db", "-dev"},
		{"-data-dir", "d", "-heartbeat-budget", "3300", "-pprof-addr", "127.0.0.1:6060"},
	}
	for _, a := range good {
		if _, err := ParseFlags("serve", a, io.Discard); err != nil {
			t.Errorf("ParseFlags(%q) = %v", a, err)
		}
	}
	bad := [][]string{
		{"-data-dir", ""},
		{"-public-host", "host:8443"},
		{"-database", "mysql://x"},
		{"-web-addr", "8443"},
		{"-heartbeat-interval", "10ms"},
		{"-heartbeat-budget", "-1"},
		{"-heartbeat-budget", "NaN"},
		{"-pprof-addr", "0.0.0.0:6060"},
		{"-pprof-addr", "example.com:6060"},
		{"-device-cert-ttl", "1m"},
		{"-fleet", "Bad Fleet"},
		{"extra"},
	}
	for _, a := range bad {
		if _, err := ParseFlags("serve", a, io.Discard); err == nil {
			t.Errorf("ParseFlags(%q) succeeded, want error", a)
		}
	}
	cfg, _ := ParseFlags("serve", []string{"-public-host", "127.0.0.1", "-public-host", "CP.example.com"}, io.Discard)
	if cfg.Fleet != "cp.example.com" {
		t.Errorf("default fleet = %q, want the first public DNS name", cfg.Fleet)
	}
	if _, err := ParseFlags("init", []string{"-web-addr", ":1"}, io.Discard); err == nil {
		t.Error("init accepted -web-addr")
	}
}

// running is a server started in-process for a test.
type running struct {
	srv    *Server
	base   string
	client *http.Client
	key    string
	done   chan error
	cancel context.CancelFunc
}

func start(t *testing.T, cfg Config) *running {
	t.Helper()
	var banner bytes.Buffer
	ctx, cancel := context.WithCancel(context.Background())
	srv, err := New(ctx, cfg, quietLog(), &banner)
	if err != nil {
		cancel()
		t.Fatalf("New: %v", err)
	}
	web, _, _ := srv.Addrs()
	r := &running{srv: srv, base: "https://" + web.String(), cancel: cancel, done: make(chan error, 1)}
	if m := regexp.MustCompile(`msk_[a-z2-7]+`).FindString(banner.String()); m != "" {
		r.key = m
	}
	r.client = &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: srv.CA().Pool()}}}
	go func() { r.done <- srv.Run(ctx) }()
	t.Cleanup(func() { r.stop(t) })
	return r
}

func (r *running) stop(t *testing.T) {
	if r.cancel == nil {
		return
	}
	r.cancel()
	r.cancel = nil
	select {
	case err := <-r.done:
		if err != nil {
			t.Errorf("Run after cancel = %v, want nil (clean stop)", err)
		}
	case <-time.After(30 * time.Second):
		t.Error("Run did not return after cancel")
	}
}

func (r *running) do(t *testing.T, method, path, body string, hdr map[string]string) (int, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, r.base+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := r.client.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

func TestFirstStartInitialisesAndServes(t *testing.T) {
	dir := t.TempDir()
	agentDir := t.TempDir()
	if err := os.WriteFile(filepath.Join(agentDir, "meshanics-agent-linux-arm64"), []byte("agent-bytes"), 0o755); err != nil {
		t.Fatal(err)
	}
	cfg := testConfig(t, dir)
	cfg.AgentDir = agentDir
	r := start(t, cfg)
	if r.key == "" {
		t.Fatal("first start did not print the admin API key")
	}
	if code, b := r.do(t, "GET", "/healthz", "", nil); code != 200 {
		t.Errorf("/healthz = %d %s", code, b)
	}
	if code, b := r.do(t, "GET", "/readyz", "", nil); code != 200 {
		t.Errorf("/readyz = %d %s", code, b)
	}
	code, script := r.do(t, "GET", "/install.sh", "", nil)
	if code != 200 || !bytes.Contains(script, bytes.TrimSpace(r.srv.CA().CertPEM())) || bytes.Contains(script, []byte("@@MESHANICS")) {
		t.Errorf("/install.sh = %d, want the script with the CA and unit filled in", code)
	}
	if code, b := r.do(t, "GET", "/downloads/meshanics-agent-linux-arm64", "", nil); code != 200 || string(b) != "agent-bytes" {
		t.Errorf("download arm64 = %d %q", code, b)
	}
	if code, b := r.do(t, "GET", "/downloads/meshanics-agent-linux-amd64", "", nil); code != 404 || !strings.Contains(string(b), "-agent-dir") {
		t.Errorf("missing download = %d %q, want 404 naming -agent-dir", code, b)
	}
	if code, _ := r.do(t, "GET", "/downloads/../pki/ca.key", "", nil); code == 200 {
		t.Error("downloads served a file outside the two agent builds")
	}

	// Mint a token over REST with the admin key, enroll over HTTP.
	auth := map[string]string{"Authorization": "Bearer " + r.key, "Content-Type": "application/json"}
	code, b := r.do(t, "POST", "/api/v1/enrollment-tokens", `{}`, auth)
	if code != 201 {
		t.Fatalf("create token = %d %s", code, b)
	}
	var tok struct {
		Token string `json:"token"`
	}
	if err := json.Unmarshal(b, &tok); err != nil {
		t.Fatal(err)
	}
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	der, _ := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "x"}}, key)
	body, _ := json.Marshal(map[string]any{"token": tok.Token, "name": "edge-01",
		"csr_pem": string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})), "hardware": map[string]any{"arch": "amd64"}})
	code, b = r.do(t, "POST", "/api/v1/enroll", string(body), map[string]string{"Content-Type": "application/json"})
	if code != 201 {
		t.Fatalf("enroll = %d %s", code, b)
	}
	var er struct {
		CertificatePEM string `json:"certificate_pem"`
		Config         struct {
			Server string `json:"server"`
		} `json:"config"`
	}
	_ = json.Unmarshal(b, &er)
	_, dev, repo := r.srv.Addrs()
	if er.Config.Server != dev.String() {
		t.Errorf("config.server = %q, want %q", er.Config.Server, dev.String())
	}
	code, b = r.do(t, "GET", "/metrics", "", nil)
	if code != 200 || !strings.Contains(string(b), `meshanics_enrollments_total{result="new"} 1`) {
		t.Errorf("/metrics lacks the enrollment: %d", code)
	}

	// The repo listener requires a fleet client certificate.
	noCert := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: r.srv.CA().Pool()}}}
	if resp, err := noCert.Get("https://" + repo.String() + "/metadata/timestamp.json"); err == nil {
		resp.Body.Close()
		t.Error("repo listener answered without a client certificate")
	}
	blk, _ := pem.Decode([]byte(er.CertificatePEM))
	withCert := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{
		RootCAs: r.srv.CA().Pool(), Certificates: []tls.Certificate{{Certificate: [][]byte{blk.Bytes}, PrivateKey: key}}}}}
	resp, err := withCert.Get("https://" + repo.String() + "/nothing-here")
	if err != nil {
		t.Fatalf("repo listener with a device cert: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != 404 {
		t.Errorf("repo unknown path = %d, want 404", resp.StatusCode)
	}
	// A decommissioned device loses the repository at once.
	if code, b := r.do(t, "POST", "/api/v1/devices/edge-01/decommission", `{}`, auth); code >= 300 {
		t.Fatalf("decommission = %d %s", code, b)
	}
	resp, err = withCert.Get("https://" + repo.String() + "/nothing-here")
	if err != nil {
		t.Fatalf("repo listener after decommission: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden {
		t.Errorf("repo after decommission = %d, want 403", resp.StatusCode)
	}

	// Restart: the same CA, no new admin key.
	pin := r.srv.CA().Fingerprint()
	r.stop(t)
	r2 := start(t, testConfig(t, dir))
	if r2.key != "" || r2.srv.CA().Fingerprint() != pin {
		t.Errorf("restart printed a key (%q) or changed the CA", r2.key)
	}
}

func TestExistingPKIWithEmptyDatabaseGetsAnAdmin(t *testing.T) {
	dir := t.TempDir()
	cfg := testConfig(t, dir)
	if _, err := Initialize(context.Background(), cfg, quietLog()); err != nil {
		t.Fatal(err)
	}
	pin := func() string { a, _ := ca.Load(filepath.Join(dir, "pki"), time.Now); return a.Fingerprint() }()
	matches, _ := filepath.Glob(filepath.Join(dir, "meshanics.db*"))
	for _, m := range matches {
		if err := os.Remove(m); err != nil {
			t.Fatal(err)
		}
	}
	r := start(t, cfg)
	if r.key == "" {
		t.Fatal("no admin key printed for an empty database")
	}
	if r.srv.CA().Fingerprint() != pin {
		t.Error("the existing CA was replaced")
	}
	if code, b := r.do(t, "GET", "/api/v1/devices", "", map[string]string{"Authorization": "Bearer " + r.key}); code != 200 {
		t.Errorf("new admin key refused: %d %s", code, b)
	}
}
