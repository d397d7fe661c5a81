package bench

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// binaries builds meshanics-server (and, when asked, other commands) from
// the module this benchmark runs in, into dir. binDir, when set, is used
// as it is.
func binaries(ctx context.Context, binDir, dir string, names ...string) (string, error) {
	if binDir != "" {
		for _, n := range names {
			if _, err := os.Stat(filepath.Join(binDir, n)); err != nil {
				return "", fmt.Errorf("-bin-dir: %w", err)
			}
		}
		return binDir, nil
	}
	root, err := moduleRoot(ctx)
	if err != nil {
		return "", err
	}
	args := []string{"build", "-o", dir + string(filepath.Separator)}
	for _, n := range names {
		args = append(args, "./cmd/"+n)
	}
	cmd := exec.CommandContext(ctx, "go", args...)
	cmd.Dir = root
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build %s: %v\n%s", strings.Join(names, " "), err, b)
	}
	return dir, nil
}

func moduleRoot(ctx context.Context) (string, error) {
	b, err := exec.CommandContext(ctx, "go", "env", "GOMOD").Output()
	gomod := strings.TrimSpace(string(b))
	if err != nil || gomod == "" || gomod == os.DevNull {
		return "", errors.New("run from the Meshanics source tree (the benchmark builds the binaries), or pass -bin-dir")
	}
	return filepath.Dir(gomod), nil
}

// serverProc is one running meshanics-server.
type serverProc struct {
	cmd        *exec.Cmd
	done       chan struct{}
	waitErr    error
	logPath    string
	webURL     string
	deviceAddr string
	repoURL    string
}

// controlPlane is the server(s) a benchmark talks to.
type controlPlane struct {
	apiKey  string
	caFile  string
	caPEM   []byte
	servers []*serverProc
	// pids of the servers whose footprint is measured (0 = unknown).
	pids []int
}

type serverOpts struct {
	bin      string
	dir      string // work dir: data dirs live below it
	database string
	replicas int
	args     []string // extra serve flags (-heartbeat-interval, -heartbeat-budget)
}

// startControlPlane initialises a data dir (the dev TUF ceremony included)
// and starts opts.replicas servers on free loopback ports sharing its pki/
// (and, with more than one replica, the PostgreSQL database).
func startControlPlane(ctx context.Context, o serverOpts) (*controlPlane, error) {
	if o.replicas < 1 {
		o.replicas = 1
	}
	if o.replicas > 1 && o.database == "" {
		return nil, errors.New("-replicas > 1 needs -database postgres://… (replicas share one database)")
	}
	data0 := filepath.Join(o.dir, "server-0")
	if err := os.MkdirAll(data0, 0o700); err != nil {
		return nil, err
	}
	initArgs := []string{"init", "-dev", "-data-dir", data0, "-public-host", "127.0.0.1"}
	if o.database != "" {
		initArgs = append(initArgs, "-database", o.database)
	}
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, o.bin, initArgs...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("meshanics-server init: %v\n%s", err, tailString(stderr.String(), 3000))
	}
	cp := &controlPlane{apiKey: strings.TrimSpace(stdout.String()), caFile: filepath.Join(data0, "pki", "ca.pem")}
	if !strings.HasPrefix(cp.apiKey, "msk_") {
		return nil, fmt.Errorf("meshanics-server init printed %q, want an API key", tailString(cp.apiKey, 100))
	}
	var err error
	if cp.caPEM, err = os.ReadFile(cp.caFile); err != nil {
		return nil, err
	}
	for i := range o.replicas {
		data := data0
		if i > 0 {
			data = filepath.Join(o.dir, fmt.Sprintf("server-%d", i))
			if err := copyDir(filepath.Join(data0, "pki"), filepath.Join(data, "pki")); err != nil {
				cp.stop()
				return nil, err
			}
			// The dev ceremony's keys and the online keys live in the database
			// on PostgreSQL; the data dir only carries pki/ and blobs.
		}
		s, err := startServer(ctx, o, data)
		if err != nil {
			cp.stop()
			return nil, err
		}
		cp.servers = append(cp.servers, s)
		cp.pids = append(cp.pids, s.cmd.Process.Pid)
	}
	return cp, nil
}

func startServer(ctx context.Context, o serverOpts, data string) (*serverProc, error) {
	for attempt := 1; ; attempt++ {
		ports, err := freePorts(3)
		if err != nil {
			return nil, err
		}
		s := &serverProc{
			logPath:    filepath.Join(data, "server.log"),
			webURL:     fmt.Sprintf("https://127.0.0.1:%d", ports[0]),
			deviceAddr: fmt.Sprintf("127.0.0.1:%d", ports[1]),
			repoURL:    fmt.Sprintf("https://127.0.0.1:%d", ports[2]),
			done:       make(chan struct{}),
		}
		args := append([]string{"-dev", "-data-dir", data, "-public-host", "127.0.0.1",
			"-web-addr", fmt.Sprintf("127.0.0.1:%d", ports[0]),
			"-device-addr", s.deviceAddr,
			"-repo-addr", fmt.Sprintf("127.0.0.1:%d", ports[2])}, o.args...)
		if o.database != "" {
			args = append(args, "-database", o.database)
		}
		logf, err := os.OpenFile(s.logPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
		if err != nil {
			return nil, err
		}
		s.cmd = exec.Command(o.bin, args...)
		s.cmd.Stdout, s.cmd.Stderr = logf, logf
		s.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		err = s.cmd.Start()
		logf.Close()
		if err != nil {
			return nil, fmt.Errorf("start meshanics-server: %w", err)
		}
		go func() { s.waitErr = s.cmd.Wait(); close(s.done) }()
		err = s.waitReady(ctx, filepath.Join(data, "pki", "ca.pem"))
		if err == nil {
			return s, nil
		}
		s.stop()
		log, _ := os.ReadFile(s.logPath)
		if attempt == 3 || !strings.Contains(string(log), "address already in use") {
			return nil, fmt.Errorf("%w\n%s", err, tailString(string(log), 3000))
		}
	}
}

func (s *serverProc) waitReady(ctx context.Context, caFile string) error {
	deadline := time.Now().Add(90 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-s.done:
			return fmt.Errorf("meshanics-server exited: %v", s.waitErr)
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
		pem, err := os.ReadFile(caFile)
		if err != nil {
			continue
		}
		hc := httpClient(pem, nil)
		resp, err := hc.Get(s.webURL + "/readyz")
		hc.CloseIdleConnections()
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
	}
	return errors.New("meshanics-server not ready after 90 s")
}

// stop ends the server with SIGTERM (it flushes and closes cleanly) and
// SIGKILL after 20 s.
func (s *serverProc) stop() {
	if s.cmd.Process == nil {
		return
	}
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.done:
	case <-time.After(20 * time.Second):
		_ = s.cmd.Process.Kill()
		<-s.done
	}
}

func (cp *controlPlane) stop() {
	for _, s := range cp.servers {
		s.stop()
	}
}

// httpClient trusts only the fleet CA; local, when set, is the source
// address of every connection.
func httpClient(caPEM []byte, local net.IP) *http.Client {
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	d := &net.Dialer{Timeout: 10 * time.Second}
	if local != nil {
		d.LocalAddr = &net.TCPAddr{IP: local}
	}
	return &http.Client{Timeout: 60 * time.Second, Transport: &http.Transport{
		DialContext:         d.DialContext,
		TLSClientConfig:     &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12},
		MaxIdleConnsPerHost: 64,
		ForceAttemptHTTP2:   false,
	}}
}

func freePorts(n int) ([]int, error) {
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	var ports []int
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

func copyDir(src, dst string) error {
	if err := os.MkdirAll(dst, 0o700); err != nil {
		return err
	}
	ents, err := os.ReadDir(src)
	if err != nil {
		return err
	}
	for _, e := range ents {
		if e.IsDir() {
			continue
		}
		b, err := os.ReadFile(filepath.Join(src, e.Name()))
		if err != nil {
			return err
		}
		st, _ := e.Info()
		if err := os.WriteFile(filepath.Join(dst, e.Name()), b, st.Mode().Perm()); err != nil {
			return err
		}
	}
	return nil
}

func tailString(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return "…" + s[len(s)-n:]
}
