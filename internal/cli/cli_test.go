package cli

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/tls"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/meshanics/meshanics/internal/server/ca"
	"github.com/meshanics/meshanics/internal/server/operatorapi"
	"github.com/meshanics/meshanics/internal/server/store"
	"github.com/meshanics/meshanics/internal/server/store/storetest"
)

// server is the real operator API over a real SQLite store behind TLS with
// a serving certificate from a real fleet CA.
type server struct {
	t      *testing.T
	url    string
	caFile string
	pin    string
	admin  string
	viewer string
	db     *store.DB
	client *http.Client
}

func newServer(t *testing.T) *server {
	t.Helper()
	now := func() time.Time { return time.Now() }
	db := storetest.SQLite(t)
	auth, err := ca.Create(t.TempDir(), "fleet.test", now)
	if err != nil {
		t.Fatal(err)
	}
	api, err := operatorapi.New(operatorapi.Config{
		Store: db, Logger: slog.New(slog.DiscardHandler), Now: now,
		CAPin: auth.Fingerprint(), CAPEM: auth.CertPEM(), PublicURL: "https://127.0.0.1:8443",
		Argon2: &operatorapi.Argon2Params{Memory: 64, Time: 1, Threads: 1},
	})
	if err != nil {
		t.Fatal(err)
	}
	url, caFile := serveTLS(t, auth, api.Handler())
	s := &server{t: t, url: url, caFile: caFile, pin: auth.Fingerprint(), db: db}
	s.admin = s.key("admin")
	s.viewer = s.key("viewer")
	tc := &tls.Config{RootCAs: auth.Pool()}
	s.client = &http.Client{Transport: &http.Transport{TLSClientConfig: tc}}
	return s
}

// serveTLS serves h behind the web listener's TLS, as the server builds
// it, with a serving certificate from auth; it returns the URL and a file
// holding the CA certificate.
func serveTLS(t *testing.T, auth *ca.Authority, h http.Handler) (url, caFile string) {
	t.Helper()
	cert, err := auth.ServingCertificate([]string{"127.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(h)
	srv.TLS = auth.WebTLSConfig(cert)
	srv.StartTLS()
	t.Cleanup(srv.Close)
	caFile = filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(caFile, auth.CertPEM(), 0o600); err != nil {
		t.Fatal(err)
	}
	return srv.URL, caFile
}

func (s *server) key(role string) string {
	s.t.Helper()
	secret := operatorapi.NewAPIKey()
	err := s.db.Tx(context.Background(), func(tx *store.Tx) error {
		_, err := tx.CreateAPIKey(context.Background(), store.ActorSystem, store.NewAPIKey{Hash: store.HashSecret(secret), Name: role, Role: role, Owner: store.ActorSystem})
		return err
	})
	if err != nil {
		s.t.Fatal(err)
	}
	return secret
}

func (s *server) enroll(name string) {
	s.t.Helper()
	ctx := context.Background()
	err := s.db.Tx(ctx, func(tx *store.Tx) error {
		_, _, err := tx.EnrollDevice(ctx, store.Enrollment{
			Name: name, Fleet: "fleet.test",
			Cert:         store.IssuedCert{Serial: "01" + name, KeySHA256: strings.Repeat("b", 64), NotAfter: time.Now().Add(time.Hour)},
			AgentVersion: "9.9.9", Tags: map[string]string{"site": "lab"}, HeartbeatInterval: 30 * time.Second,
		})
		return err
	})
	if err != nil {
		s.t.Fatal(err)
	}
}

// get fetches path directly (not through meshctl) with the admin key.
func (s *server) get(path string) []byte {
	s.t.Helper()
	req, _ := http.NewRequest("GET", s.url+path, nil)
	req.Header.Set("Authorization", "Bearer "+s.admin)
	res, err := s.client.Do(req)
	if err != nil {
		s.t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return b
}

type result struct {
	code           int
	stdout, stderr string
}

// run runs meshctl with args; env maps MESHCTL_* variables.
func runCLI(t *testing.T, env map[string]string, stdin string, args ...string) result {
	t.Helper()
	var out, errb bytes.Buffer
	lookup := func(k string) (string, bool) { v, ok := env[k]; return v, ok }
	code := run(context.Background(), args, strings.NewReader(stdin), &out, &errb, lookup)
	return result{code: code, stdout: out.String(), stderr: errb.String()}
}

// as runs meshctl against s with the CA file and key given as flags.
func (s *server) as(key string, args ...string) result {
	s.t.Helper()
	return runCLI(s.t, nil, "", append([]string{"-server", s.url, "-ca", s.caFile, "-api-key", key}, args...)...)
}

func TestJSONOutputIsTheBodyUnchanged(t *testing.T) {
	s := newServer(t)
	s.enroll("dev1")
	r := s.as(s.admin, "-o", "json", "devices", "show", "dev1")
	if r.code != 0 {
		t.Fatalf("devices show = %d, stderr %s", r.code, r.stderr)
	}
	if want := string(s.get("/api/v1/devices/dev1")); r.stdout != want {
		t.Errorf("-o json devices show stdout = %q, want the REST body %q", r.stdout, want)
	}
	r = s.as(s.admin, "-o", "json", "devices", "list")
	if want := string(s.get("/api/v1/devices")); r.code != 0 || r.stdout != want {
		t.Errorf("-o json devices list = %d %q, want %q", r.code, r.stdout, want)
	}

	r = s.as(s.admin, "-o", "json", "tokens", "create", "-uses", "2", "-tag", "site=lab")
	if r.code != 0 {
		t.Fatalf("tokens create = %d, stderr %s", r.code, r.stderr)
	}
	var tok map[string]any
	if err := json.Unmarshal([]byte(r.stdout), &tok); err != nil {
		t.Fatalf("tokens create stdout %q: %v", r.stdout, err)
	}
	var keys []string
	for k := range tok {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	if want := []string{"ca_pin", "expires_at", "id", "install_command", "token", "uses"}; !slices.Equal(keys, want) {
		t.Errorf("tokens create keys = %v, want %v", keys, want)
	}
	if tok["uses"] != 2.0 || !strings.HasPrefix(tok["token"].(string), "mst_") {
		t.Errorf("token %v", tok)
	}
}

func TestTableOutput(t *testing.T) {
	s := newServer(t)
	s.enroll("dev1")
	r := s.as(s.admin, "devices", "list")
	if r.code != 0 || !strings.Contains(r.stdout, "NAME") || !strings.Contains(r.stdout, "dev1") || !strings.Contains(r.stdout, "site=lab") {
		t.Errorf("devices list = %d %q", r.code, r.stdout)
	}
	r = s.as(s.admin, "tokens", "create")
	if r.code != 0 || !strings.Contains(r.stdout, "curl -fsSL --cacert") || !strings.Contains(r.stdout, "shown only this once") {
		t.Errorf("tokens create = %d %q", r.code, r.stdout)
	}
	var tok struct{ ID string }
	json.Unmarshal([]byte(s.as(s.admin, "-o", "json", "tokens", "create", "-ttl", "2h").stdout), &tok)
	if r := s.as(s.admin, "tokens", "revoke", tok.ID); r.code != 0 || !strings.Contains(r.stdout, "revoked token "+tok.ID) {
		t.Errorf("tokens revoke = %d %q %q", r.code, r.stdout, r.stderr)
	}
	if r := s.as(s.admin, "tokens", "list"); r.code != 0 || !strings.Contains(r.stdout, tok.ID) || !strings.Contains(r.stdout, "revoked") || strings.Contains(r.stdout, "mst_") {
		t.Errorf("tokens list = %d %q", r.code, r.stdout)
	}
	r = s.as(s.admin, "devices", "show", "dev1")
	if r.code != 0 || !strings.Contains(r.stdout, "Status:") || !strings.Contains(r.stdout, "9.9.9") {
		t.Errorf("devices show = %d %q", r.code, r.stdout)
	}
}

func TestDevicesListPages(t *testing.T) {
	s := newServer(t)
	for _, n := range []string{"d1", "d2", "d3"} {
		s.enroll(n)
	}
	r := s.as(s.admin, "devices", "list", "-limit", "2")
	if r.code != 0 || !strings.Contains(r.stdout, "d2") || strings.Contains(r.stdout, "d3") || !strings.Contains(r.stdout, "next page: -offset 2") {
		t.Errorf("devices list -limit 2 = %d %q", r.code, r.stdout)
	}
	r = s.as(s.admin, "devices", "list", "-all", "-limit", "2")
	if r.code != 0 || strings.Count(r.stdout, "\n") != 4 || !strings.Contains(r.stdout, "d1") || !strings.Contains(r.stdout, "d3") {
		t.Errorf("devices list -all -limit 2 = %d %q, want header + 3 devices over two pages", r.code, r.stdout)
	}
	if r := s.as(s.admin, "-o", "json", "devices", "list", "-all"); r.code != 2 {
		t.Errorf("-o json devices list -all = %d, want 2", r.code)
	}
}

func TestFlagsAfterArguments(t *testing.T) {
	s := newServer(t)
	s.enroll("dev1")
	for _, args := range [][]string{
		{"devices", "logs", "dev1", "-since", "2h", "-lines", "10"},
		{"devices", "logs", "-since", "2h", "dev1", "-lines=10"},
		{"devices", "logs", "-since=2h", "-lines", "10", "dev1"},
	} {
		r := s.as(s.admin, append([]string{"-o", "json"}, args...)...)
		if r.code != 0 || !strings.Contains(r.stdout, `"id"`) {
			t.Errorf("meshctl %q = %d %q %q", args, r.code, r.stdout, r.stderr)
		}
	}
	l, _, err := s.db.ListLogRequests(context.Background(), "dev1", store.Page{})
	if err != nil || len(l) != 3 {
		t.Fatalf("log requests = %d (%v), want 3", len(l), err)
	}
	for _, lr := range l {
		if lr.MaxLines != 10 {
			t.Errorf("log request %s max_lines %d, want 10 (the flag after the name was honoured)", lr.ID, lr.MaxLines)
		}
	}
}

func TestExitCodes(t *testing.T) {
	s := newServer(t)
	for _, tc := range []struct {
		name       string
		env        map[string]string
		args       []string
		code       int
		stderrHas  string
		stdoutNone bool
	}{
		{"no args", nil, nil, 2, "usage", true},
		{"unknown command", nil, []string{"frobnicate"}, 2, "unknown command", true},
		{"bad -o", nil, []string{"-o", "yaml", "devices", "list"}, 2, "table or json", true},
		{"no server", nil, []string{"devices", "list"}, 2, "MESHCTL_SERVER", true},
		{"http server", nil, []string{"-server", "http://x", "-api-key", "msk_x", "devices", "list"}, 2, "https://", true},
		{"unknown subcommand", nil, []string{"devices", "explode"}, 2, "unknown subcommand", true},
		{"unknown flag", nil, []string{"devices", "list", "-bogus"}, 2, "bogus", true},
		{"missing arg", nil, []string{"devices", "show"}, 2, "argument", true},
		{"bad device name", nil, []string{"devices", "show", "Not_A_Name"}, 2, "invalid device name", true},
		{"help", nil, []string{"help"}, 0, "", false},
		{"not found", map[string]string{"MESHCTL_SERVER": s.url, "MESHCTL_CA": s.caFile, "MESHCTL_API_KEY": s.admin}, []string{"devices", "show", "ghost"}, 1, "not found", true},
		{"bad key", map[string]string{"MESHCTL_SERVER": s.url, "MESHCTL_CA": s.caFile, "MESHCTL_API_KEY": "msk_wrong"}, []string{"devices", "list"}, 1, "MESHCTL_API_KEY", true},
		{"forbidden", map[string]string{"MESHCTL_SERVER": s.url, "MESHCTL_CA": s.caFile, "MESHCTL_API_KEY": s.viewer}, []string{"tokens", "create"}, 1, "missing permission: enrollment.write", true},
		{"no CA", map[string]string{"MESHCTL_SERVER": s.url, "MESHCTL_API_KEY": s.admin}, []string{"devices", "list"}, 1, "-ca FILE or -ca-pin", true},
		{"wrong pin", map[string]string{"MESHCTL_SERVER": s.url, "MESHCTL_API_KEY": s.admin}, []string{"-ca-pin", "sha256:" + strings.Repeat("0", 64), "devices", "list"}, 1, "pinned CA", true},
		{"malformed pin", map[string]string{"MESHCTL_SERVER": s.url, "MESHCTL_API_KEY": s.admin}, []string{"-ca-pin", "abc", "devices", "list"}, 2, "sha256", true},
		{"right pin", map[string]string{"MESHCTL_SERVER": s.url, "MESHCTL_API_KEY": s.admin}, []string{"-ca-pin", s.pin, "devices", "list"}, 0, "", false},
		{"env CA", map[string]string{"MESHCTL_SERVER": s.url, "MESHCTL_CA": s.caFile, "MESHCTL_API_KEY": s.admin}, []string{"devices", "list"}, 0, "", false},
	} {
		r := runCLI(t, tc.env, "", tc.args...)
		if r.code != tc.code || !strings.Contains(r.stderr, tc.stderrHas) || (tc.stdoutNone && r.stdout != "") {
			t.Errorf("%s: meshctl %q = %d stdout %q stderr %q; want %d, stderr containing %q", tc.name, tc.args, r.code, r.stdout, r.stderr, tc.code, tc.stderrHas)
		}
	}
}

func TestDecommissionAndAuditVerify(t *testing.T) {
	s := newServer(t)
	s.enroll("dev1")
	if r := s.as(s.admin, "devices", "decommission", "dev1"); r.code != 0 || !strings.Contains(r.stdout, "decommissioned dev1") {
		t.Fatalf("decommission = %d %q %q", r.code, r.stdout, r.stderr)
	}
	if r := s.as(s.admin, "devices", "decommission", "dev1"); r.code != 1 || !strings.Contains(r.stderr, "already decommissioned") {
		t.Errorf("decommission again = %d %q", r.code, r.stderr)
	}
	file := filepath.Join(t.TempDir(), "audit.jsonl")
	if r := s.as(s.admin, "audit", "export", "-out", file); r.code != 0 {
		t.Fatalf("audit export = %d %q", r.code, r.stderr)
	}
	// verify runs offline: no server flags at all.
	if r := runCLI(t, nil, "", "audit", "verify", file); r.code != 0 || !strings.Contains(r.stdout, "verified") {
		t.Fatalf("audit verify = %d %q %q", r.code, r.stdout, r.stderr)
	}
	b, _ := os.ReadFile(file)
	tampered := filepath.Join(t.TempDir(), "tampered.jsonl")
	os.WriteFile(tampered, bytes.Replace(b, []byte(`"dev1"`), []byte(`"dev2"`), 1), 0o600)
	if r := runCLI(t, nil, "", "audit", "verify", tampered); r.code != 1 || !strings.Contains(r.stderr, "does NOT verify") {
		t.Errorf("audit verify tampered = %d %q %q", r.code, r.stdout, r.stderr)
	}
	if r := s.as(s.admin, "audit", "list", "-type", "device.decommission"); r.code != 0 || !strings.Contains(r.stdout, "device.decommission") {
		t.Errorf("audit list = %d %q", r.code, r.stdout)
	}
}

func TestUsersAndKeys(t *testing.T) {
	s := newServer(t)
	r := runCLI(t, nil, "correct horse battery\n", "-server", s.url, "-ca", s.caFile, "-api-key", s.admin, "users", "create", "alice", "-role", "viewer", "-password-stdin")
	if r.code != 0 {
		t.Fatalf("users create = %d %q", r.code, r.stderr)
	}
	if r := s.as(s.admin, "users", "list"); r.code != 0 || !strings.Contains(r.stdout, "alice") {
		t.Errorf("users list = %d %q", r.code, r.stdout)
	}
	r = s.as(s.admin, "-o", "json", "api-keys", "create", "ci", "-role", "operator")
	var k struct{ ID, Key string }
	if r.code != 0 || json.Unmarshal([]byte(r.stdout), &k) != nil || !strings.HasPrefix(k.Key, "msk_") {
		t.Fatalf("api-keys create = %d %q", r.code, r.stdout)
	}
	if r := s.as(k.Key, "devices", "list"); r.code != 0 {
		t.Errorf("new key devices list = %d %q", r.code, r.stderr)
	}
	if r := s.as(s.admin, "api-keys", "delete", k.ID); r.code != 0 {
		t.Errorf("api-keys delete = %d %q", r.code, r.stderr)
	}
	if r := s.as(k.Key, "devices", "list"); r.code != 1 {
		t.Errorf("revoked key devices list = %d, want 1", r.code)
	}
	r = runCLI(t, nil, "a new long password\n", "-server", s.url, "-ca", s.caFile, "-api-key", s.admin, "users", "update", "-role", "approver", "alice", "-password-stdin")
	if r.code != 0 || !strings.Contains(r.stdout, "role approver") {
		t.Errorf("users update = %d %q %q", r.code, r.stdout, r.stderr)
	}
	if r := s.as(s.viewer, "whoami"); r.code != 0 || !strings.Contains(r.stdout, "role viewer") || !strings.Contains(r.stdout, "devices.read") {
		t.Errorf("whoami = %d %q %q", r.code, r.stdout, r.stderr)
	}
	if r := s.as(s.admin, "users", "delete", "alice"); r.code != 0 {
		t.Errorf("users delete = %d %q", r.code, r.stderr)
	}
}

func TestLogsWait(t *testing.T) {
	pollEvery = 10 * time.Millisecond
	defer func() { pollEvery = 2 * time.Second }()
	s := newServer(t)
	s.enroll("dev1")
	// Play the device: complete the request as soon as it appears.
	done := make(chan struct{})
	go func() {
		defer close(done)
		for range 2000 {
			l, _, err := s.db.ListLogRequests(context.Background(), "dev1", store.Page{})
			if err == nil && len(l) == 1 {
				var gz bytes.Buffer
				zw := gzip.NewWriter(&gz)
				zw.Write([]byte("2026-11-27T12:00:00 agent started\n"))
				zw.Close()
				if err := s.db.CompleteLogRequest(context.Background(), "dev1", l[0].ID, gz.Bytes()); err != nil {
					t.Error(err)
				}
				return
			}
			time.Sleep(5 * time.Millisecond)
		}
	}()
	r := s.as(s.admin, "devices", "logs", "dev1", "-wait", "-timeout", "30s")
	<-done
	if r.code != 0 || r.stdout != "2026-11-27T12:00:00 agent started\n" {
		t.Errorf("devices logs -wait = %d %q %q, want the decompressed logs", r.code, r.stdout, r.stderr)
	}
}

// TestHelpDoesNotShowTheAPIKey: flag defaults are printed by -h and help;
// the key from MESHCTL_API_KEY must not be one of them.
func TestHelpDoesNotShowTheAPIKey(t *testing.T) {
	const secret = "msk_donotprintme"
	for _, args := range [][]string{{"-h"}, {"help"}, {}} {
		r := runCLI(t, map[string]string{"MESHCTL_API_KEY": secret}, "", args...)
		if strings.Contains(r.stdout+r.stderr, secret) {
			t.Errorf("meshctl %q printed the API key from the environment:\n%s%s", args, r.stdout, r.stderr)
		}
	}
}
