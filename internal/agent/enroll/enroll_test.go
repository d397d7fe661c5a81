package enroll

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/meshanics/meshanics/internal/agent/config"
	"github.com/meshanics/meshanics/internal/agent/hardware"
	"github.com/meshanics/meshanics/internal/agent/identity"
	"github.com/meshanics/meshanics/internal/agent/identity/testca"
)

// fakeCP is a control plane's enroll endpoint: it signs CSRs with its CA.
type fakeCP struct {
	ca     *testca.CA
	srv    *httptest.Server
	root   string
	status int // non-zero: refuse with this status

	mu    sync.Mutex
	calls int
	last  request
}

func newFakeCP(t *testing.T, serving func(*testca.CA) tls.Certificate) *fakeCP {
	t.Helper()
	f := &fakeCP{ca: testca.New(t), root: `{"signed":{"_type":"root","version":1},"signatures":[]}`}
	if serving == nil {
		serving = func(ca *testca.CA) tls.Certificate { return ca.Serving(t) }
	}
	f.srv = httptest.NewUnstartedServer(http.HandlerFunc(f.handle))
	f.srv.TLS = &tls.Config{Certificates: []tls.Certificate{serving(f.ca)}}
	f.srv.StartTLS()
	t.Cleanup(f.srv.Close)
	return f
}

func (f *fakeCP) handle(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls++
	if r.URL.Path != "/api/v1/enroll" || r.Method != http.MethodPost {
		http.NotFound(w, r)
		return
	}
	if f.status != 0 {
		w.WriteHeader(f.status)
		io.WriteString(w, `{"error":"token is not valid"}`)
		return
	}
	var req request
	if err := json.NewDecoder(io.LimitReader(r.Body, 1<<20)).Decode(&req); err != nil {
		http.Error(w, `{"error":"bad json"}`, 400)
		return
	}
	f.last = req
	cert, err := f.ca.SignCSR([]byte(req.CSRPEM), time.Now().Add(-time.Minute), 90*24*time.Hour)
	if err != nil {
		http.Error(w, `{"error":"bad csr"}`, 400)
		return
	}
	host := strings.TrimPrefix(f.srv.URL, "https://")
	w.WriteHeader(http.StatusCreated)
	json.NewEncoder(w).Encode(map[string]any{
		"device": req.Name, "fleet": f.ca.Fleet, "certificate_pem": string(cert), "ca_pem": string(f.ca.PEM),
		"trust_anchor": json.RawMessage(f.root),
		"config":       map[string]string{"server": host, "artifact_server": "https://" + host},
	})
}

type setup struct {
	cfg         *config.Enroll
	dir, podman string
	docker      string
}

func newSetup(t *testing.T, f *fakeCP, pin [32]byte) setup {
	t.Helper()
	base := t.TempDir()
	s := setup{dir: filepath.Join(base, "etc"), podman: filepath.Join(base, "containers"), docker: filepath.Join(base, "docker")}
	s.cfg = &config.Enroll{
		URL: f.srv.URL, Token: "mst_secret", CAPin: pin, Name: "dev1",
		Tags: map[string]string{"site": "lab", "rack": "r2"}, ConfigDir: s.dir, DataDir: filepath.Join(base, "data"),
		Runtime: "auto", LogLevel: "info", Containers: s.podman, Docker: s.docker,
		Allow: config.Allowlists{ExecProbe: []string{"/usr/bin/true"}, ConfigDest: []string{"/etc/app", "/opt/app"}},
	}
	return s
}

func deps() Deps {
	return Deps{Log: slog.New(slog.DiscardHandler), Hardware: hardware.Profile{Model: "m", Arch: "amd64", Accelerators: []string{}}, AgentVersion: "test"}
}

func TestEnrollWritesCredentialsAndTrustDirs(t *testing.T) {
	f := newFakeCP(t, nil)
	s := newSetup(t, f, f.ca.Pin())
	res, err := Run(context.Background(), s.cfg, deps())
	if err != nil {
		t.Fatal(err)
	}
	if res.ReusedKey || res.KeptRoot || res.Device != "dev1" {
		t.Errorf("Run() = %+v, want a fresh enrollment of dev1", res)
	}
	if f.last.Token != "mst_secret" || f.last.Hardware.Model != "m" || f.last.Tags["site"] != "lab" {
		t.Errorf("request = %+v", f.last)
	}
	fi, err := os.Stat(filepath.Join(s.dir, KeyFile))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("device.key mode = %v, %v; want 0600", fi, err)
	}
	if _, err := identity.Load(filepath.Join(s.dir, CertFile), filepath.Join(s.dir, KeyFile)); err != nil {
		t.Errorf("written credentials do not load: %v", err)
	}
	root, _ := os.ReadFile(filepath.Join(s.dir, RootFile))
	if !strings.Contains(string(root), `"_type":"root"`) {
		t.Errorf("root.json = %s", root)
	}
	env, _ := os.ReadFile(filepath.Join(s.dir, AgentEnvFile))
	host := strings.TrimPrefix(f.srv.URL, "https://")
	for _, want := range []string{
		"MESHANICS_SERVER=" + host + "\n",
		"MESHANICS_KEY=" + filepath.Join(s.dir, KeyFile) + "\n",
		"MESHANICS_ARTIFACT_SERVER=https://" + host + "\n",
		"MESHANICS_TUF_ROOT=" + filepath.Join(s.dir, RootFile) + "\n",
		"MESHANICS_TAGS=rack=r2,site=lab\n",
		"MESHANICS_ALLOW_CONFIG_DEST=/etc/app,/opt/app\n",
		"MESHANICS_ALLOW_EXEC_PROBE=/usr/bin/true\n",
	} {
		if !strings.Contains(string(env), want) {
			t.Errorf("agent.env lacks %q:\n%s", want, env)
		}
	}
	// The agent.env written must parse as a valid run configuration.
	vals := map[string]string{}
	for _, line := range strings.Split(string(env), "\n") {
		if k, v, ok := strings.Cut(line, "="); ok && !strings.HasPrefix(k, "#") {
			vals[k] = v
		}
	}
	if _, err := config.Parse(nil, func(k string) string { return vals[k] }); err != nil {
		t.Errorf("agent.env does not parse as agent config: %v", err)
	}
	keyPEM, _ := os.ReadFile(filepath.Join(s.dir, KeyFile))
	for _, base := range []string{s.podman, s.docker} {
		d := filepath.Join(base, host)
		for name, want := range map[string]string{"ca.crt": string(f.ca.PEM), "client.key": string(keyPEM)} {
			got, err := os.ReadFile(filepath.Join(d, name))
			if err != nil || string(got) != want {
				t.Errorf("%s/%s = %v, want the written credential", d, name, err)
			}
		}
		if fi, err := os.Stat(filepath.Join(d, "client.key")); err != nil || fi.Mode().Perm() != 0o600 {
			t.Errorf("%s/client.key mode = %v", d, fi)
		}
	}
	rec, err := ReadTrustRecord(s.dir)
	if err != nil || len(rec.Dirs) != 2 {
		t.Errorf("trust record = %+v, %v; want both dirs", rec, err)
	}
}

func TestEnrollAgainReusesKeyAndKeepsRoot(t *testing.T) {
	f := newFakeCP(t, nil)
	s := newSetup(t, f, f.ca.Pin())
	if _, err := Run(context.Background(), s.cfg, deps()); err != nil {
		t.Fatal(err)
	}
	keyBefore, _ := os.ReadFile(filepath.Join(s.dir, KeyFile))
	certBefore, _ := os.ReadFile(filepath.Join(s.dir, CertFile))
	rootBefore, _ := os.ReadFile(filepath.Join(s.dir, RootFile))
	f.root = `{"signed":{"_type":"root","version":7},"signatures":[]}`

	res, err := Run(context.Background(), s.cfg, deps())
	if err != nil {
		t.Fatal(err)
	}
	if !res.ReusedKey || !res.KeptRoot {
		t.Errorf("second Run() = %+v, want ReusedKey and KeptRoot", res)
	}
	keyAfter, _ := os.ReadFile(filepath.Join(s.dir, KeyFile))
	certAfter, _ := os.ReadFile(filepath.Join(s.dir, CertFile))
	rootAfter, _ := os.ReadFile(filepath.Join(s.dir, RootFile))
	if string(keyAfter) != string(keyBefore) {
		t.Error("upgrade changed device.key")
	}
	if string(certAfter) == string(certBefore) {
		t.Error("upgrade did not write the fresh certificate")
	}
	if string(rootAfter) != string(rootBefore) {
		t.Error("upgrade replaced the pinned root.json")
	}
	rec, _ := ReadTrustRecord(s.dir)
	if len(rec.Dirs) != 2 {
		t.Errorf("trust record after upgrade = %v, want 2 dirs", rec.Dirs)
	}
}

func TestEnrollRefusesPinMismatchBeforeSendingTheToken(t *testing.T) {
	f := newFakeCP(t, nil)
	other := testca.New(t)
	s := newSetup(t, f, other.Pin())
	_, err := Run(context.Background(), s.cfg, deps())
	if !errors.Is(err, ErrPinMismatch) {
		t.Fatalf("Run(wrong pin) = %v, want ErrPinMismatch", err)
	}
	if f.calls != 0 {
		t.Errorf("server saw %d requests; the token must not leave the device", f.calls)
	}
	for _, name := range []string{CertFile, CAFile, RootFile, AgentEnvFile} {
		if _, err := os.Stat(filepath.Join(s.dir, name)); err == nil {
			t.Errorf("%s written despite a refused server", name)
		}
	}
}

func TestEnrollRefusesServerNotShowingThePinnedCA(t *testing.T) {
	// An impostor with a certificate for the right host from another CA,
	// presenting that CA in its chain.
	f := newFakeCP(t, func(*testca.CA) tls.Certificate { return testca.New(t).Serving(t) })
	s := newSetup(t, f, f.ca.Pin())
	if _, err := Run(context.Background(), s.cfg, deps()); !errors.Is(err, ErrPinMismatch) {
		t.Fatalf("Run(impostor) = %v, want ErrPinMismatch", err)
	}
	// The fleet's own serving cert without the CA in the chain.
	f2 := newFakeCP(t, func(ca *testca.CA) tls.Certificate {
		c := ca.Serving(t)
		c.Certificate = c.Certificate[:1]
		return c
	})
	s2 := newSetup(t, f2, f2.ca.Pin())
	if _, err := Run(context.Background(), s2.cfg, deps()); !errors.Is(err, ErrPinMismatch) {
		t.Fatalf("Run(no CA in chain) = %v, want ErrPinMismatch", err)
	}
}

func TestEnrollReportsRefusal(t *testing.T) {
	f := newFakeCP(t, nil)
	f.status = http.StatusUnauthorized
	s := newSetup(t, f, f.ca.Pin())
	_, err := Run(context.Background(), s.cfg, deps())
	if err == nil || !strings.Contains(err.Error(), "401") || strings.Contains(err.Error(), "mst_secret") {
		t.Fatalf("Run(401) = %v, want a 401 error without the token", err)
	}
}

func TestEnvRefusesUnsafeValues(t *testing.T) {
	c := &config.Enroll{ConfigDir: "/etc/meshanics", Allow: config.Allowlists{ConfigDest: []string{"/etc/my app"}}}
	_, err := renderEnv(c, "h:1", "")
	var ce *config.Error
	if !errors.As(err, &ce) || ce.Flag != "-allow-config-dest" {
		t.Errorf("renderEnv(space in path) = %v, want an error naming -allow-config-dest", err)
	}
}

func TestVerifyPinnedChainHostname(t *testing.T) {
	ca := testca.New(t)
	c := ca.Serving(t)
	if _, err := VerifyPinnedChain(certsOf(t, c), ca.Pin(), nil, "localhost", time.Now()); err != nil {
		t.Errorf("VerifyPinnedChain(localhost) = %v, want nil", err)
	}
	if _, err := VerifyPinnedChain(certsOf(t, c), ca.Pin(), nil, "evil.example", time.Now()); !errors.Is(err, ErrPinMismatch) {
		t.Errorf("VerifyPinnedChain(evil.example) = %v, want ErrPinMismatch", err)
	}
	if _, err := VerifyPinnedChain(certsOf(t, c), sha256.Sum256(c.Leaf.Raw), nil, "localhost", time.Now()); !errors.Is(err, ErrPinMismatch) {
		t.Errorf("VerifyPinnedChain(pin = leaf) = %v, want ErrPinMismatch", err)
	}
	if _, err := VerifyPinnedChain(certsOf(t, c), ca.Pin(), nil, "localhost", time.Now().Add(20*365*24*time.Hour)); !errors.Is(err, ErrPinMismatch) {
		t.Errorf("VerifyPinnedChain(expired) = %v, want ErrPinMismatch", err)
	}
}

func certsOf(t *testing.T, c tls.Certificate) []*x509.Certificate {
	t.Helper()
	var out []*x509.Certificate
	for _, der := range c.Certificate {
		x, err := x509.ParseCertificate(der)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, x)
	}
	return out
}

func TestEnrollWithKnownCAWhenTheChainLacksIt(t *testing.T) {
	f := newFakeCP(t, func(ca *testca.CA) tls.Certificate {
		c := ca.Serving(t)
		c.Certificate = c.Certificate[:1]
		return c
	})
	s := newSetup(t, f, f.ca.Pin())
	s.cfg.CAFile = filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(s.cfg.CAFile, f.ca.PEM, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Run(context.Background(), s.cfg, deps()); err != nil {
		t.Fatalf("Run(-ca-file) = %v", err)
	}
	// A -ca-file that is not the pinned CA is refused before contact.
	s2 := newSetup(t, f, f.ca.Pin())
	s2.cfg.CAFile = filepath.Join(t.TempDir(), "other.pem")
	os.WriteFile(s2.cfg.CAFile, testca.New(t).PEM, 0o644)
	calls := f.calls
	_, err := Run(context.Background(), s2.cfg, deps())
	var ce *config.Error
	if !errors.As(err, &ce) || ce.Flag != "-ca-file" || f.calls != calls {
		t.Errorf("Run(foreign -ca-file) = %v after %d requests, want a -ca-file error and none", err, f.calls-calls)
	}
}
