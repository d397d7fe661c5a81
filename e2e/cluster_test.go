package e2e

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// cluster is one initialised and running meshanics-server and the meshctl
// that talks to it as the admin; every end-to-end test starts one.
type cluster struct {
	bin     string
	dataDir string
	webURL  string
	key     string
	caFile  string
	server  *proc
}

func (c *cluster) meshctl(t *testing.T, args ...string) []byte {
	t.Helper()
	full := append([]string{"-server", c.webURL, "-ca", c.caFile, "-api-key", c.key}, args...)
	cmd := exec.Command(filepath.Join(c.bin, "meshctl"), full...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("meshctl %s: %v\n%s", strings.Join(args, " "), err, stderr.String())
	}
	return out
}

// startCluster initialises and starts a server in -dev mode; dsn "" =
// SQLite in the data dir, else PostgreSQL.
func startCluster(t *testing.T, dsn string) *cluster {
	t.Helper()
	var dbArgs []string
	if dsn != "" {
		dbArgs = []string{"-database", dsn}
	}
	c := newCluster(t)
	out := c.init(t, append([]string{"-dev"}, dbArgs...)...)
	lines := strings.Split(strings.TrimRight(string(out), "\n"), "\n")
	if len(lines) != 1 || !strings.HasPrefix(lines[0], "msk_") {
		t.Fatalf("init stdout = %q, want one line msk_…", out)
	}
	c.key = lines[0]
	c.serve(t, append([]string{"-dev"}, dbArgs...)...)
	return c
}

// startUntrustedCluster initialises and starts a server without -dev
// (SQLite): it has no update trust until the offline ceremony.
func startUntrustedCluster(t *testing.T) *cluster {
	t.Helper()
	c := newCluster(t)
	c.key = strings.TrimSpace(string(c.init(t)))
	c.serve(t)
	return c
}

func newCluster(t *testing.T) *cluster {
	c := &cluster{bin: bins(t), dataDir: t.TempDir()}
	c.caFile = filepath.Join(c.dataDir, "pki", "ca.pem")
	return c
}

// init runs meshanics-server init with args and returns its stdout (the
// admin key as the only line).
func (c *cluster) init(t *testing.T, args ...string) []byte {
	t.Helper()
	cmd := exec.Command(filepath.Join(c.bin, "meshanics-server"), append([]string{"init", "-data-dir", c.dataDir, "-public-host", "127.0.0.1"}, args...)...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("meshanics-server init: %v\n%s", err, stderr.String())
	}
	return out
}

// serve starts the server with args on free loopback ports. A free port can
// be taken by someone else between the probe and the server's bind: start
// again with other ports if that happens.
func (c *cluster) serve(t *testing.T, args ...string) {
	t.Helper()
	for attempt := 1; ; attempt++ {
		web, dev, repo := freePort(t), freePort(t), freePort(t)
		c.webURL = fmt.Sprintf("https://127.0.0.1:%d", web)
		c.server = startProc(t, "meshanics-server", os.Environ(), filepath.Join(c.bin, "meshanics-server"), append([]string{
			"-data-dir", c.dataDir, "-public-host", "127.0.0.1",
			"-web-addr", fmt.Sprintf("127.0.0.1:%d", web), "-device-addr", fmt.Sprintf("127.0.0.1:%d", dev),
			"-repo-addr", fmt.Sprintf("127.0.0.1:%d", repo), "-heartbeat-interval", "1s", "-agent-dir", c.bin}, args...)...)
		if !c.waitReady(t) {
			return
		}
		if attempt == 3 || !strings.Contains(c.server.logs(), "address already in use") {
			t.Fatalf("server exited: %v", c.server.err)
		}
	}
}

// waitReady waits for /readyz; it reports true if the server exited.
func (c *cluster) waitReady(t *testing.T) (exited bool) {
	t.Helper()
	pemBytes, err := os.ReadFile(c.caFile)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pemBytes)
	client := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-c.server.done:
			return true
		default:
		}
		resp, err := client.Get(c.webURL + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return false
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatal("server not ready within 60s")
	return false
}

// fileWriter returns a function that writes a file in dir (0600) and
// returns its path.
func fileWriter(t *testing.T, dir string) func(name, content string) string {
	return func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
}
