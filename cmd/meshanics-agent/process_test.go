package main

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	"github.com/meshanics/meshanics/internal/agent/control"
	"github.com/meshanics/meshanics/internal/agent/identity"
	"github.com/meshanics/meshanics/internal/agent/identity/testca"
	devicev1 "github.com/meshanics/meshanics/proto/meshanics/device/v1"
)

// cp is a minimal DeviceService over real mutual TLS for the process test.
type cp struct {
	devicev1.UnimplementedDeviceServiceServer
	mu             sync.Mutex
	registers      int
	beats          int
	decommissioned bool
}

func (c *cp) refuse() error {
	if !c.decommissioned {
		return nil
	}
	st, _ := status.New(codes.PermissionDenied, "device decommissioned").WithDetails(&errdetails.ErrorInfo{Reason: control.ReasonDecommissioned, Domain: control.ErrorDomain})
	return st.Err()
}

func (c *cp) Register(context.Context, *devicev1.RegisterRequest) (*devicev1.RegisterResponse, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.refuse(); err != nil {
		return nil, err
	}
	c.registers++
	return &devicev1.RegisterResponse{Name: "dev1", Fleet: "fleet.test", HeartbeatIntervalMs: 1000}, nil
}

func (c *cp) Heartbeat(context.Context, *devicev1.HeartbeatRequest) (*devicev1.HeartbeatResponse, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.refuse(); err != nil {
		return nil, err
	}
	c.beats++
	return &devicev1.HeartbeatResponse{HeartbeatIntervalMs: 1000}, nil
}

func (c *cp) count() (int, int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.registers, c.beats
}

func buildAgent(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "meshanics-agent")
	// Built as shipped (see README): static, stripped, without grpc's
	// x/net/trace (which would add ~2.7 MB and its html/template).
	cmd := exec.Command("go", "build", "-tags", "grpcnotrace", "-trimpath", "-ldflags=-s -w", "-o", bin, ".")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// TestBinaryAgainstMutualTLSServer runs the real binary: it registers and
// heartbeats, stops with 0 on SIGTERM, and exits 77 after wiping on the
// decommission signal; a restart then exits 78.
func TestBinaryAgainstMutualTLSServer(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	bin := buildAgent(t)
	ca := testca.New(t)
	srv := &cp{}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer(grpc.Creds(credentials.NewTLS(&tls.Config{
		MinVersion: tls.VersionTLS13, Certificates: []tls.Certificate{ca.Serving(t)},
		ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: ca.Pool(),
	})))
	devicev1.RegisterDeviceServiceServer(gs, srv)
	go gs.Serve(lis)
	defer gs.Stop()

	dir := t.TempDir()
	key, _ := identity.GenerateKey()
	kb, _ := identity.EncodeKey(key)
	files := map[string][]byte{
		"device.key": kb,
		"device.crt": ca.Device(t, "dev1", &key.PublicKey, time.Now().Add(-time.Hour), 90*24*time.Hour),
		"ca.pem":     ca.PEM,
	}
	for name, b := range files {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	args := []string{"-server", lis.Addr().String(), "-cert", filepath.Join(dir, "device.crt"),
		"-key", filepath.Join(dir, "device.key"), "-ca", filepath.Join(dir, "ca.pem"), "-data-dir", filepath.Join(dir, "data")}
	start := func() (*exec.Cmd, *strings.Builder) {
		cmd := exec.Command(bin, args...)
		var stderr strings.Builder
		cmd.Stderr = &stderr
		cmd.Env = []string{} // nothing from the test's environment
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		return cmd, &stderr
	}
	wait := func(what string, cond func() bool) {
		t.Helper()
		deadline := time.Now().Add(60 * time.Second)
		for !cond() {
			if time.Now().After(deadline) {
				t.Fatalf("timed out waiting for %s", what)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}

	cmd, stderr := start()
	wait("three heartbeats", func() bool { _, b := srv.count(); return b >= 3 })
	if d, _ := time.ParseDuration(os.Getenv("MESHANICS_AGENT_IDLE")); d > 0 {
		time.Sleep(d) // measuring idle footprint by hand
	}
	if rss := vmRSS(cmd.Process.Pid); rss != "" {
		t.Logf("agent VmRSS while idle-heartbeating: %s", rss)
	}
	cmd.Process.Signal(syscall.SIGTERM)
	if err := cmd.Wait(); err != nil {
		t.Fatalf("agent after SIGTERM: %v (want exit 0)\n%s", err, stderr)
	}

	cmd, stderr = start()
	wait("a second registration", func() bool { r, _ := srv.count(); return r >= 2 })
	srv.mu.Lock()
	srv.decommissioned = true
	srv.mu.Unlock()
	err = cmd.Wait()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 77 {
		t.Fatalf("agent after decommission: %v, want exit 77\n%s", err, stderr)
	}
	for name := range files {
		if _, err := os.Stat(filepath.Join(dir, name)); err == nil {
			t.Errorf("%s survived decommission", name)
		}
	}
	cmd, stderr = start()
	err = cmd.Wait()
	if !errors.As(err, &ee) || ee.ExitCode() != 78 {
		t.Fatalf("restart after decommission: %v, want exit 78\n%s", err, stderr)
	}
}

func vmRSS(pid int) string {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return ""
	}
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, "VmRSS:") {
			return strings.TrimSpace(strings.TrimPrefix(line, "VmRSS:"))
		}
	}
	return ""
}
