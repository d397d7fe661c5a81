package agent

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/ecdsa"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/meshanics/meshanics/internal/agent/config"
	"github.com/meshanics/meshanics/internal/agent/control"
	"github.com/meshanics/meshanics/internal/agent/enroll"
	"github.com/meshanics/meshanics/internal/agent/hardware"
	"github.com/meshanics/meshanics/internal/agent/identity"
	"github.com/meshanics/meshanics/internal/agent/identity/testca"
	"github.com/meshanics/meshanics/internal/agent/logring"
	"github.com/meshanics/meshanics/internal/atomicfile"
	devicev1 "github.com/meshanics/meshanics/proto/meshanics/device/v1"
)

// fakeCP is an in-memory control plane implementing the client side of
// DeviceService directly (no network), so timer-driven tests can run in a
// synctest bubble. It keeps real state: calls, reports, uploads, and it
// signs renewal CSRs with a real CA.
type fakeCP struct {
	ca      *testca.CA
	certTTL time.Duration

	mu          sync.Mutex
	interval    time.Duration
	err         error // returned by Register and Heartbeat while set
	registers   int
	beats       []time.Time // time of every Heartbeat attempt
	assignments []*devicev1.Assignment
	logReqs     []*devicev1.LogRequest
	reports     []*devicev1.ReportArtifactStatusRequest
	uploads     map[string][]byte
	renewals    int
	lastReg     *devicev1.RegisterRequest
}

func newFakeCP(ca *testca.CA) *fakeCP {
	return &fakeCP{ca: ca, interval: 10 * time.Second, uploads: map[string][]byte{}, certTTL: 90 * 24 * time.Hour}
}

func (f *fakeCP) setErr(err error) { f.mu.Lock(); f.err = err; f.mu.Unlock() }

func (f *fakeCP) Register(_ context.Context, in *devicev1.RegisterRequest, _ ...grpc.CallOption) (*devicev1.RegisterResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.beats = append(f.beats, time.Now())
	if f.err != nil {
		return nil, f.err
	}
	f.registers++
	f.lastReg = in
	return &devicev1.RegisterResponse{Name: "dev1", Fleet: f.ca.Fleet, HeartbeatIntervalMs: f.interval.Milliseconds()}, nil
}

func (f *fakeCP) Heartbeat(context.Context, *devicev1.HeartbeatRequest, ...grpc.CallOption) (*devicev1.HeartbeatResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.beats = append(f.beats, time.Now())
	if f.err != nil {
		return nil, f.err
	}
	return &devicev1.HeartbeatResponse{Assignments: f.assignments, LogRequests: f.logReqs, HeartbeatIntervalMs: f.interval.Milliseconds()}, nil
}

func (f *fakeCP) ReportArtifactStatus(_ context.Context, in *devicev1.ReportArtifactStatusRequest, _ ...grpc.CallOption) (*devicev1.ReportArtifactStatusResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.reports = append(f.reports, in)
	return &devicev1.ReportArtifactStatusResponse{}, nil
}

func (f *fakeCP) RenewCertificate(_ context.Context, in *devicev1.RenewCertificateRequest, _ ...grpc.CallOption) (*devicev1.RenewCertificateResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	cert, err := f.ca.SignCSR([]byte(in.GetCsrPem()), time.Now(), f.certTTL)
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, "bad csr")
	}
	f.renewals++
	return &devicev1.RenewCertificateResponse{CertificatePem: string(cert)}, nil
}

func (f *fakeCP) UploadLogs(ctx context.Context, _ ...grpc.CallOption) (grpc.ClientStreamingClient[devicev1.UploadLogsRequest, devicev1.UploadLogsResponse], error) {
	return &fakeUpload{f: f, ctx: ctx}, nil
}

// fakeUpload is the client end of one UploadLogs stream.
type fakeUpload struct {
	grpc.ClientStream
	f   *fakeCP
	ctx context.Context
	id  string
	buf bytes.Buffer
}

func (u *fakeUpload) Send(m *devicev1.UploadLogsRequest) error {
	if u.id == "" {
		u.id = m.GetRequestId()
	}
	u.buf.Write(m.GetChunk())
	return nil
}

func (u *fakeUpload) CloseAndRecv() (*devicev1.UploadLogsResponse, error) {
	u.f.mu.Lock()
	defer u.f.mu.Unlock()
	u.f.uploads[u.id] = u.buf.Bytes()
	return &devicev1.UploadLogsResponse{ReceivedBytes: int64(u.buf.Len())}, nil
}

func (u *fakeUpload) Header() (metadata.MD, error) { return nil, nil }
func (u *fakeUpload) Context() context.Context     { return u.ctx }

func decommissionErr(t testing.TB) error {
	st, err := status.New(codes.PermissionDenied, "device decommissioned").WithDetails(&errdetails.ErrorInfo{Reason: control.ReasonDecommissioned, Domain: control.ErrorDomain})
	if err != nil {
		t.Fatal(err)
	}
	return st.Err()
}

// device is an enrolled device's files in temp dirs.
type device struct {
	cfg                  *config.Config
	configDir, dataDir   string
	trustDir             string
	key                  *ecdsa.PrivateKey
	certPEM              []byte
	artifactsCurrentFile string
}

// newDevice writes credentials like enrollment would, including a runtime
// trust dir and its record, update state and a running payload.
func newDevice(t testing.TB, ca *testca.CA, notBefore time.Time, ttl time.Duration) *device {
	t.Helper()
	base := t.TempDir()
	d := &device{configDir: filepath.Join(base, "etc"), dataDir: filepath.Join(base, "data")}
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.MkdirAll(d.configDir, 0o700))
	k, err := identity.GenerateKey()
	must(err)
	d.key = k
	kb, _ := identity.EncodeKey(k)
	must(atomicfile.WriteFile(filepath.Join(d.configDir, enroll.KeyFile), kb, 0o600))
	d.certPEM = ca.Device(t, "dev1", &k.PublicKey, notBefore, ttl)
	must(atomicfile.WriteFile(filepath.Join(d.configDir, enroll.CertFile), d.certPEM, 0o644))
	must(atomicfile.WriteFile(filepath.Join(d.configDir, enroll.CAFile), ca.PEM, 0o644))
	must(atomicfile.WriteFile(filepath.Join(d.configDir, enroll.RootFile), []byte(`{"signed":{}}`), 0o644))
	d.trustDir = filepath.Join(base, "containers", "certs.d", "cp.test:9444")
	must(os.MkdirAll(d.trustDir, 0o755))
	must(os.WriteFile(filepath.Join(d.trustDir, "client.cert"), d.certPEM, 0o644))
	must(os.WriteFile(filepath.Join(d.configDir, enroll.TrustRecordFile), []byte(`{"dirs":["`+d.trustDir+`"]}`), 0o644))
	must(os.MkdirAll(filepath.Join(d.dataDir, "update"), 0o700))
	must(os.WriteFile(filepath.Join(d.dataDir, "update", "journal.json"), []byte("{}"), 0o600))
	must(os.MkdirAll(filepath.Join(d.dataDir, "tuf"), 0o700))
	d.artifactsCurrentFile = filepath.Join(d.dataDir, "artifacts", "model", "versions", "1", "model.onnx")
	must(os.MkdirAll(filepath.Dir(d.artifactsCurrentFile), 0o755))
	must(os.WriteFile(d.artifactsCurrentFile, []byte("weights"), 0o644))
	d.cfg = &config.Config{
		Server:   "127.0.0.1:9443",
		CertFile: filepath.Join(d.configDir, enroll.CertFile), KeyFile: filepath.Join(d.configDir, enroll.KeyFile),
		CAFile: filepath.Join(d.configDir, enroll.CAFile), DataDir: d.dataDir, ContainerRuntime: "none",
		Tags: map[string]string{"site": "lab"},
	}
	return d
}

// inMemory returns a Dial that hands out f and counts dials.
func inMemory(f *fakeCP, dials *int) func(context.Context, *Session) (devicev1.DeviceServiceClient, func() error, error) {
	var mu sync.Mutex
	return func(context.Context, *Session) (devicev1.DeviceServiceClient, func() error, error) {
		mu.Lock()
		*dials++
		mu.Unlock()
		return f, func() error { return nil }, nil
	}
}

func testDeps(f *fakeCP, dials *int, ring *logring.Ring) Deps {
	return Deps{
		Log:          slog.New(slog.DiscardHandler),
		AgentVersion: "test",
		Getenv:       func(string) string { return "" },
		Hardware:     func() hardware.Profile { return hardware.Profile{Model: "fixture", Arch: "amd64", CPUCores: 4} },
		Dial:         inMemory(f, dials),
		Ring:         ring,
	}
}

func gunzip(t testing.TB, b []byte) string {
	t.Helper()
	zr, err := gzip.NewReader(bytes.NewReader(b))
	if err != nil {
		t.Fatalf("upload is not gzip: %v", err)
	}
	out, err := io.ReadAll(zr)
	if err != nil {
		t.Fatal(err)
	}
	return string(out)
}

func ringLogger(ring *logring.Ring) *slog.Logger {
	return slog.New(logring.New(slog.DiscardHandler, ring, slog.LevelInfo))
}
