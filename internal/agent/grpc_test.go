package agent

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"

	"github.com/meshanics/meshanics/internal/agent/identity"
	"github.com/meshanics/meshanics/internal/agent/identity/testca"
	"github.com/meshanics/meshanics/internal/agent/logring"
	devicev1 "github.com/meshanics/meshanics/proto/meshanics/device/v1"
)

// grpcCP is a fake DeviceService served over real mutual TLS: it records
// which client certificate each call presented.
type grpcCP struct {
	devicev1.UnimplementedDeviceServiceServer
	ca *testca.CA

	mu              sync.Mutex
	serials         []string // client cert serial of each Heartbeat
	renewed         string   // serial issued by RenewCertificate
	uploads         map[string][]byte
	decommissioned  bool
	decommissionErr error
}

func (s *grpcCP) serial(ctx context.Context) string {
	p, _ := peer.FromContext(ctx)
	info := p.AuthInfo.(credentials.TLSInfo)
	return info.State.PeerCertificates[0].SerialNumber.String()
}

func (s *grpcCP) check() error {
	if s.decommissioned {
		return s.decommissionErr
	}
	return nil
}

func (s *grpcCP) Register(ctx context.Context, _ *devicev1.RegisterRequest) (*devicev1.RegisterResponse, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.check(); err != nil {
		return nil, err
	}
	return &devicev1.RegisterResponse{Name: "dev1", Fleet: s.ca.Fleet, HeartbeatIntervalMs: 1000}, nil
}

func (s *grpcCP) Heartbeat(ctx context.Context, _ *devicev1.HeartbeatRequest) (*devicev1.HeartbeatResponse, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.check(); err != nil {
		return nil, err
	}
	s.serials = append(s.serials, s.serial(ctx))
	var lrs []*devicev1.LogRequest
	if _, done := s.uploads["lr1"]; !done {
		lrs = append(lrs, &devicev1.LogRequest{RequestId: "lr1", MaxLines: 100})
	}
	return &devicev1.HeartbeatResponse{HeartbeatIntervalMs: 1000, LogRequests: lrs}, nil
}

func (s *grpcCP) RenewCertificate(ctx context.Context, in *devicev1.RenewCertificateRequest) (*devicev1.RenewCertificateResponse, error) {
	cert, err := s.ca.SignCSR([]byte(in.GetCsrPem()), time.Now().Add(-time.Minute), 90*24*time.Hour)
	if err != nil {
		return nil, err
	}
	serial, err := serialOf(cert)
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	s.renewed = serial
	s.mu.Unlock()
	return &devicev1.RenewCertificateResponse{CertificatePem: string(cert)}, nil
}

func (s *grpcCP) UploadLogs(stream grpc.ClientStreamingServer[devicev1.UploadLogsRequest, devicev1.UploadLogsResponse]) error {
	var id string
	var buf bytes.Buffer
	for {
		m, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return err
		}
		if id == "" {
			id = m.GetRequestId()
		}
		buf.Write(m.GetChunk())
	}
	s.mu.Lock()
	s.uploads[id] = buf.Bytes()
	s.mu.Unlock()
	return stream.SendAndClose(&devicev1.UploadLogsResponse{ReceivedBytes: int64(buf.Len())})
}

func serialOf(b []byte) (string, error) {
	certs, err := identity.ParseCerts(b)
	if err != nil {
		return "", err
	}
	return certs[0].SerialNumber.String(), nil
}

// countingListener counts accepted connections.
type countingListener struct {
	net.Listener
	mu sync.Mutex
	n  int
}

func (l *countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		l.mu.Lock()
		l.n++
		l.mu.Unlock()
	}
	return c, err
}

func (l *countingListener) count() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.n
}

func serveMTLS(t *testing.T, ca *testca.CA, srv devicev1.DeviceServiceServer) string {
	addr, _ := serveMTLSCounting(t, ca, srv)
	return addr
}

func serveMTLSCounting(t *testing.T, ca *testca.CA, srv devicev1.DeviceServiceServer) (string, *countingListener) {
	t.Helper()
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	lis := &countingListener{Listener: inner}
	gs := grpc.NewServer(grpc.Creds(credentials.NewTLS(&tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{ca.Serving(t)},
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ClientCAs:    ca.Pool(),
	})))
	devicev1.RegisterDeviceServiceServer(gs, srv)
	go gs.Serve(lis)
	t.Cleanup(gs.Stop)
	return lis.Addr().String(), lis
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestOverRealMutualTLS runs the agent's real dialer against a DeviceService
// on a loopback port: renewal swaps the certificate the connection
// presents, a log pull uploads the ring, and the decommission signal wipes
// and ends Run with ErrDecommissioned.
func TestOverRealMutualTLS(t *testing.T) {
	ca := testca.New(t)
	cp := &grpcCP{ca: ca, uploads: map[string][]byte{}, decommissionErr: decommissionErr(t)}
	addr := serveMTLS(t, ca, cp)
	// Two hours into a three-hour life: renewal is due at once.
	dev := newDevice(t, ca, time.Now().Add(-2*time.Hour), 3*time.Hour)
	dev.cfg.Server = addr
	ring := logring.NewRing(100)
	d := testDeps(nil, nil, ring)
	d.Dial = nil // the real control.Dial
	d.Log = ringLogger(ring)
	a := New(dev.cfg, d)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()

	waitFor(t, "a heartbeat with the renewed certificate", func() bool {
		cp.mu.Lock()
		defer cp.mu.Unlock()
		return cp.renewed != "" && len(cp.serials) > 0 && cp.serials[len(cp.serials)-1] == cp.renewed
	})
	cp.mu.Lock()
	first := cp.serials[0]
	cp.mu.Unlock()
	if first == cp.renewed {
		t.Error("the first heartbeat already used the renewed certificate; renewal not exercised")
	}
	waitFor(t, "the log upload", func() bool {
		cp.mu.Lock()
		defer cp.mu.Unlock()
		return cp.uploads["lr1"] != nil
	})
	if text := gunzip(t, cp.uploads["lr1"]); !bytes.Contains([]byte(text), []byte("registered")) {
		t.Errorf("uploaded log = %q, want the agent's log lines", text)
	}

	cp.mu.Lock()
	cp.decommissioned = true
	cp.mu.Unlock()
	var err error
	select {
	case err = <-done:
	case <-time.After(60 * time.Second):
		t.Fatal("agent did not stop after the decommission signal")
	}
	if ExitCode(err) != ExitDecommissioned {
		t.Fatalf("Run() = %v, want exit 77", err)
	}
	for _, p := range []string{dev.cfg.KeyFile, dev.cfg.CertFile, dev.trustDir} {
		if _, err := os.Stat(p); err == nil {
			t.Errorf("%s survived decommission", p)
		}
	}
}

// TestTLSFailureNeverWipes points the agent at a server of another fleet:
// every handshake fails, and the agent only backs off.
func TestTLSFailureNeverWipes(t *testing.T) {
	ours, impostor := testca.New(t), testca.New(t)
	cp := &grpcCP{ca: impostor, uploads: map[string][]byte{}}
	addr, lis := serveMTLSCounting(t, impostor, cp)
	dev := newDevice(t, ours, time.Now().Add(-time.Hour), 90*24*time.Hour)
	dev.cfg.Server = addr
	d := testDeps(nil, nil, nil)
	d.Dial = nil
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- New(dev.cfg, d).Run(ctx) }()
	waitFor(t, "two refused handshakes", func() bool { return lis.count() >= 2 })
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run() = %v, want nil after cancel", err)
	}
	cp.mu.Lock()
	beats := len(cp.serials)
	cp.mu.Unlock()
	if beats != 0 {
		t.Errorf("the impostor saw %d heartbeats", beats)
	}
	for _, p := range []string{dev.cfg.KeyFile, dev.cfg.CertFile, dev.cfg.CAFile, dev.trustDir} {
		if _, err := os.Stat(p); err != nil {
			t.Errorf("%s after TLS failures: %v", p, err)
		}
	}
}
