package deviceapi

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/ecdsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/connectivity"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/meshanics/meshanics/internal/server/ca"
	"github.com/meshanics/meshanics/internal/server/store"
	devicev1 "github.com/meshanics/meshanics/proto/meshanics/device/v1"
)

func gz(t testing.TB, s string) []byte {
	t.Helper()
	var b bytes.Buffer
	w := gzip.NewWriter(&b)
	if _, err := w.Write([]byte(s)); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func upload(ctx context.Context, c devicev1.DeviceServiceClient, id string, chunks ...[]byte) (*devicev1.UploadLogsResponse, error) {
	st, err := c.UploadLogs(ctx)
	if err != nil {
		return nil, err
	}
	for i, ch := range chunks {
		req := &devicev1.UploadLogsRequest{Chunk: ch}
		if i == 0 {
			req.RequestId = id
		}
		if err := st.Send(req); err != nil {
			break // the server ended the stream; CloseAndRecv has its status
		}
	}
	return st.CloseAndRecv()
}

// callEveryRPC makes one call of each DeviceService RPC.
func callEveryRPC(t *testing.T, c devicev1.DeviceServiceClient, id identity) map[string]error {
	ctx := ctxT(t)
	errs := map[string]error{}
	_, errs["Register"] = c.Register(ctx, &devicev1.RegisterRequest{AgentVersion: "1.0.0"})
	_, errs["Heartbeat"] = c.Heartbeat(ctx, &devicev1.HeartbeatRequest{})
	_, errs["ReportArtifactStatus"] = c.ReportArtifactStatus(ctx, &devicev1.ReportArtifactStatusRequest{AssignmentId: "asg_1", State: "healthy"})
	_, errs["UploadLogs"] = upload(ctx, c, "lr_1", gz(t, "hello"))
	_, errs["RenewCertificate"] = c.RenewCertificate(ctx, &devicev1.RenewCertificateRequest{CsrPem: csrPEM(t, id.key, id.name)})
	return errs
}

func isDecommissionSignal(err error) bool {
	st, ok := status.FromError(err)
	if !ok || st.Code() != codes.PermissionDenied {
		return false
	}
	for _, d := range st.Details() {
		if info, ok := d.(*errdetails.ErrorInfo); ok && info.Reason == "DEVICE_DECOMMISSIONED" && info.Domain == "meshanics" {
			return true
		}
	}
	return false
}

func TestRegisterTakesIdentityFromCertificate(t *testing.T) {
	e := newEnv(t, envOpts{interval: 30 * time.Second, flush: 5 * time.Second})
	a := e.enroll("dev-a")
	e.enroll("dev-b")
	c := e.dial(a)
	resp, err := c.Register(ctxT(t), &devicev1.RegisterRequest{
		AgentVersion: "1.2.3",
		Hardware:     &devicev1.HardwareProfile{Model: "Raspberry Pi 5", Arch: "arm64", CpuCores: 4},
		Tags:         map[string]string{"site": "b"},
		Installed:    []*devicev1.InstalledArtifact{{Kind: "model", Name: "detector", Version: "1.0"}},
	})
	if err != nil {
		t.Fatalf("Register: %v", err)
	}
	if resp.Name != "dev-a" || resp.Fleet != "fleet.example" || resp.HeartbeatIntervalMs != 30000 {
		t.Errorf("Register = %v, want name dev-a, fleet fleet.example, interval 30000 ms", resp)
	}
	e.devices.mu.Lock()
	reg, okA := e.devices.regs["dev-a"]
	_, okB := e.devices.regs["dev-b"]
	e.devices.mu.Unlock()
	if !okA || okB {
		t.Fatalf("registrations: dev-a %v, dev-b %v; want only dev-a", okA, okB)
	}
	if !strings.Contains(string(reg.Hardware), `"model":"Raspberry Pi 5"`) || !strings.Contains(string(reg.Installed), `"name":"detector"`) {
		t.Errorf("stored registration = hardware %s installed %s", reg.Hardware, reg.Installed)
	}
	// Registering again is idempotent: same record, refreshed.
	if _, err := c.Register(ctxT(t), &devicev1.RegisterRequest{AgentVersion: "1.2.4"}); err != nil {
		t.Fatalf("second Register: %v", err)
	}
	e.devices.mu.Lock()
	got := e.devices.regs["dev-a"].AgentVersion
	e.devices.mu.Unlock()
	if got != "1.2.4" {
		t.Errorf("agent version after second Register = %q, want 1.2.4", got)
	}
}

// TestNoRequestNamesADevice walks the contract: no request message (or
// anything nested in one) has a field that could name a device, so body
// identity is impossible by construction.
func TestNoRequestNamesADevice(t *testing.T) {
	reqs := []proto.Message{
		&devicev1.RegisterRequest{}, &devicev1.HeartbeatRequest{}, &devicev1.ReportArtifactStatusRequest{},
		&devicev1.UploadLogsRequest{}, &devicev1.RenewCertificateRequest{},
	}
	var walk func(md protoreflect.MessageDescriptor, path string)
	walk = func(md protoreflect.MessageDescriptor, path string) {
		fields := md.Fields()
		for i := range fields.Len() {
			f := fields.Get(i)
			n := string(f.Name())
			if strings.Contains(n, "device") || strings.Contains(n, "fleet") || (n == "name" && md.Name() != "InstalledArtifact") {
				t.Errorf("%s.%s could name a device", path, n)
			}
			if f.Message() != nil {
				walk(f.Message(), path+"."+n)
			}
		}
	}
	for _, r := range reqs {
		walk(r.ProtoReflect().Descriptor(), string(r.ProtoReflect().Descriptor().Name()))
	}
}

func TestDeviceCannotActAsAnother(t *testing.T) {
	e := newEnv(t, envOpts{})
	a, b := e.enroll("dev-a"), e.enroll("dev-b")
	e.rollouts.byDev["dev-b"] = []*devicev1.Assignment{{Id: "asg_b", Action: "apply"}}
	e.logs.add(store.PendingLog{ID: "lr_b", Device: "dev-b"})
	if err := e.srv.pollLogs(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	ca := e.dial(a)
	ctx := ctxT(t)

	hb, err := ca.Heartbeat(ctx, &devicev1.HeartbeatRequest{})
	if err != nil {
		t.Fatalf("Heartbeat(a): %v", err)
	}
	if len(hb.Assignments) != 0 || len(hb.LogRequests) != 0 {
		t.Errorf("Heartbeat(a) = %v, want none of dev-b's assignments or log requests", hb)
	}
	_, err = ca.ReportArtifactStatus(ctx, &devicev1.ReportArtifactStatusRequest{AssignmentId: "asg_b", State: "failed"})
	if status.Code(err) != codes.NotFound {
		t.Errorf("a reports on b's assignment: %v, want NotFound", err)
	}
	if _, err := upload(ctx, ca, "lr_b", gz(t, "forged")); status.Code(err) != codes.NotFound {
		t.Errorf("a uploads for b's log request: %v, want NotFound", err)
	}
	if _, ok := e.logs.bundle("lr_b"); ok {
		t.Error("a's upload was stored under b's log request")
	}
	// A CSR naming b, signed by a's key, renews a (the CSR subject is ignored).
	resp, err := ca.RenewCertificate(ctx, &devicev1.RenewCertificateRequest{CsrPem: csrPEM(t, a.key, "dev-b")})
	if err != nil {
		t.Fatalf("renew with a CSR naming dev-b: %v", err)
	}
	if got := parseCertPEM(t, resp.CertificatePem); got.Subject.CommonName != "dev-a" {
		t.Errorf("renewed certificate CN = %q, want dev-a", got.Subject.CommonName)
	}

	// b itself sees its own work.
	hb, err = e.dial(b).Heartbeat(ctx, &devicev1.HeartbeatRequest{})
	if err != nil || len(hb.Assignments) != 1 || len(hb.LogRequests) != 1 {
		t.Errorf("Heartbeat(b) = %v, %v; want its assignment and log request", hb, err)
	}
	if _, ok := e.srv.presence.LastSeen("dev-b"); !ok {
		t.Error("b's heartbeat not recorded")
	}
	if at, _ := e.srv.presence.LastSeen("dev-a"); at.IsZero() {
		t.Error("a's heartbeat not recorded")
	}
}

func parseCertPEM(t *testing.T, s string) *x509.Certificate {
	t.Helper()
	block, _ := pem.Decode([]byte(s))
	if block == nil {
		t.Fatalf("no PEM in %q", s)
	}
	c, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestDecommissionedRefusedOnEveryRPC(t *testing.T) {
	e := newEnv(t, envOpts{})
	a := e.enroll("dev-a")
	c := e.dial(a)
	if _, err := c.Heartbeat(ctxT(t), &devicev1.HeartbeatRequest{}); err != nil {
		t.Fatalf("Heartbeat before decommission: %v", err) // warms the cache
	}
	e.devices.decommission("dev-a")
	e.srv.Invalidate("dev-a") // what the operator API does after its commit
	for rpc, err := range callEveryRPC(t, c, a) {
		if !isDecommissionSignal(err) {
			t.Errorf("%s after decommission = %v, want PERMISSION_DENIED with ErrorInfo{DEVICE_DECOMMISSIONED, meshanics}", rpc, err)
		}
	}
	if got := e.srv.OnlineDevices(); got != 0 {
		t.Errorf("OnlineDevices() after decommission = %d, want 0", got)
	}
}

func TestDecommissionedEarlierLifeStillSignalled(t *testing.T) {
	e := newEnv(t, envOpts{})
	old := e.enroll("dev-a")
	e.devices.decommission("dev-a")
	e.enroll("dev-a") // the name enrolled again as a new device life
	for rpc, err := range callEveryRPC(t, e.dial(old), old) {
		if !isDecommissionSignal(err) {
			t.Errorf("%s with the old life's certificate = %v, want the decommission signal", rpc, err)
		}
	}
}

func TestSupersededCertificateIsNotDecommission(t *testing.T) {
	e := newEnv(t, envOpts{})
	old := e.enrollKey("dev-a", newKey(t))
	e.enroll("dev-a") // replaced (e.g. replace=true recovery)
	for rpc, err := range callEveryRPC(t, e.dial(old), old) {
		if status.Code(err) != codes.Unauthenticated || isDecommissionSignal(err) {
			t.Errorf("%s with a superseded certificate = %v, want UNAUTHENTICATED without the decommission signal", rpc, err)
		}
	}
}

func TestUnknownCertificateRefused(t *testing.T) {
	e := newEnv(t, envOpts{})
	// Signed by the fleet CA but never recorded as enrolled.
	key := newKey(t)
	iss, err := e.ca.IssueDevice("ghost", &key.PublicKey, ca.DefaultDeviceTTL)
	if err != nil {
		t.Fatal(err)
	}
	id := identity{name: "ghost", key: key, cert: tlsCert(iss.Cert, key)}
	if _, err := e.dial(id).Heartbeat(ctxT(t), &devicev1.HeartbeatRequest{}); status.Code(err) != codes.Unauthenticated {
		t.Errorf("Heartbeat with a never-enrolled certificate = %v, want Unauthenticated", err)
	}
}

func TestForeignCAHandshakeFails(t *testing.T) {
	e := newEnv(t, envOpts{})
	other, err := ca.Create(filepath.Join(t.TempDir(), "pki"), "fleet.example", time.Now)
	if err != nil {
		t.Fatal(err)
	}
	key := newKey(t)
	iss, err := other.IssueDevice("dev-a", &key.PublicKey, ca.DefaultDeviceTTL)
	if err != nil {
		t.Fatal(err)
	}
	e.devices.issued("dev-a", iss.Serial) // even a matching serial in the store does not help
	conn := e.dialConn(tlsCert(iss.Cert, key), e.ca.Pool())
	_, err = devicev1.NewDeviceServiceClient(conn).Heartbeat(ctxT(t), &devicev1.HeartbeatRequest{})
	if status.Code(err) != codes.Unavailable {
		t.Errorf("Heartbeat with a certificate of another CA = %v, want the handshake to fail (Unavailable)", err)
	}
}

func TestRenewSameKeyOnly(t *testing.T) {
	e := newEnv(t, envOpts{})
	a := e.enroll("dev-a")
	c := e.dial(a)
	ctx := ctxT(t)
	_, err := c.RenewCertificate(ctx, &devicev1.RenewCertificateRequest{CsrPem: csrPEM(t, newKey(t), "dev-a")})
	if status.Code(err) != codes.PermissionDenied || isDecommissionSignal(err) {
		t.Fatalf("renew with another key = %v, want PermissionDenied", err)
	}
	if _, err := c.RenewCertificate(ctx, &devicev1.RenewCertificateRequest{CsrPem: "garbage"}); status.Code(err) != codes.InvalidArgument {
		t.Errorf("renew with a malformed CSR = %v, want InvalidArgument", err)
	}
	resp, err := c.RenewCertificate(ctx, &devicev1.RenewCertificateRequest{CsrPem: csrPEM(t, a.key, "dev-a")})
	if err != nil {
		t.Fatalf("renew with the same key: %v", err)
	}
	nc := parseCertPEM(t, resp.CertificatePem)
	if !nc.PublicKey.(*ecdsa.PublicKey).Equal(&a.key.PublicKey) || ca.SerialHex(nc) == a.serial {
		t.Fatal("renewed certificate must carry the same key and a new serial")
	}
	// The new certificate works at once (its serial was never cached).
	renewed := identity{name: "dev-a", key: a.key, cert: tlsCert(nc, a.key)}
	if _, err := e.dial(renewed).Heartbeat(ctx, &devicev1.HeartbeatRequest{}); err != nil {
		t.Errorf("Heartbeat with the renewed certificate: %v", err)
	}
}

func TestUploadLogs(t *testing.T) {
	e := newEnv(t, envOpts{})
	a := e.enroll("dev-a")
	c := e.dial(a)
	ctx := ctxT(t)
	e.logs.add(store.PendingLog{ID: "lr_1", Device: "dev-a", MaxLines: 100})
	if err := e.srv.pollLogs(ctx); err != nil {
		t.Fatal(err)
	}
	hb, err := c.Heartbeat(ctx, &devicev1.HeartbeatRequest{})
	if err != nil || len(hb.LogRequests) != 1 || hb.LogRequests[0].RequestId != "lr_1" || hb.LogRequests[0].MaxLines != 100 {
		t.Fatalf("Heartbeat = %v, %v; want log request lr_1 with max_lines 100", hb, err)
	}

	// Over the limit: refused, nothing stored.
	big := make([]byte, 1<<20)
	chunks := make([][]byte, 0, 9)
	for range 9 {
		chunks = append(chunks, big)
	}
	if _, err := upload(ctx, c, "lr_1", chunks...); status.Code(err) != codes.ResourceExhausted {
		t.Errorf("upload of 9 MiB = %v, want ResourceExhausted", err)
	}
	if _, err := upload(ctx, c, "lr_1", []byte("not gzip")); status.Code(err) != codes.InvalidArgument {
		t.Errorf("upload of non-gzip bytes = %v, want InvalidArgument", err)
	}
	if _, ok := e.logs.bundle("lr_1"); ok {
		t.Fatal("a refused upload was stored")
	}

	data := gz(t, strings.Repeat("journal line\n", 1000))
	resp, err := upload(ctx, c, "lr_1", data[:10], data[10:])
	if err != nil {
		t.Fatalf("upload: %v", err)
	}
	if resp.ReceivedBytes != int64(len(data)) {
		t.Errorf("ReceivedBytes = %d, want %d", resp.ReceivedBytes, len(data))
	}
	if got, _ := e.logs.bundle("lr_1"); !bytes.Equal(got, data) {
		t.Error("stored bundle differs from the uploaded bytes")
	}
	if hb, _ := c.Heartbeat(ctx, &devicev1.HeartbeatRequest{}); len(hb.GetLogRequests()) != 0 {
		t.Errorf("fulfilled log request still handed out: %v", hb.GetLogRequests())
	}
	if _, err := upload(ctx, c, "lr_1", data); status.Code(err) != codes.FailedPrecondition {
		t.Errorf("second upload for a fulfilled request = %v, want FailedPrecondition", err)
	}
}

func TestReportArtifactStatusValidation(t *testing.T) {
	e := newEnv(t, envOpts{})
	a := e.enroll("dev-a")
	e.rollouts.byDev["dev-a"] = []*devicev1.Assignment{{Id: "asg_1", Action: "apply"}}
	c := e.dial(a)
	ctx := ctxT(t)
	bad := []*devicev1.ReportArtifactStatusRequest{
		{AssignmentId: "asg_1", State: "pending"},  // not reportable by an agent
		{AssignmentId: "asg_1", State: "exploded"}, // unknown
		{AssignmentId: "", State: "healthy"},
		{AssignmentId: "asg_1", State: "failed", Detail: strings.Repeat("x", MaxDetailBytes+1)},
		{AssignmentId: "asg_1", State: "failed", Detail: "bad \x00 byte"},
	}
	for _, r := range bad {
		if _, err := c.ReportArtifactStatus(ctx, r); status.Code(err) != codes.InvalidArgument {
			t.Errorf("ReportArtifactStatus(%.60v) = %v, want InvalidArgument", r, err)
		}
	}
	if _, err := c.ReportArtifactStatus(ctx, &devicev1.ReportArtifactStatusRequest{
		AssignmentId: "asg_1", State: "verifying", Detail: "digest ok\nsignature ok", StartedUnixMs: 1700000000000,
	}); err != nil {
		t.Fatalf("valid report: %v", err)
	}
	e.rollouts.mu.Lock()
	defer e.rollouts.mu.Unlock()
	if len(e.rollouts.reports) != 1 || e.rollouts.reports[0].device != "dev-a" || e.rollouts.reports[0].r.State != "verifying" ||
		!e.rollouts.reports[0].r.StartedAt.Equal(time.UnixMilli(1700000000000)) {
		t.Errorf("reports = %+v, want one verifying report from dev-a", e.rollouts.reports)
	}
}

func TestHealthService(t *testing.T) {
	e := newEnv(t, envOpts{})
	conn := e.dialConn(e.enroll("dev-a").cert, e.ca.Pool())
	resp, err := healthpb.NewHealthClient(conn).Check(ctxT(t), &healthpb.HealthCheckRequest{Service: serviceName})
	if err != nil || resp.Status != healthpb.HealthCheckResponse_SERVING {
		t.Errorf("health Check = %v, %v; want SERVING", resp, err)
	}
}

func TestSteadyStateHeartbeatsTouchNoStoreAndFlushInBatches(t *testing.T) {
	e := newEnv(t, envOpts{})
	ctx := ctxT(t)
	const n = 20
	clients := make([]devicev1.DeviceServiceClient, n)
	for i := range n {
		clients[i] = e.dial(e.enroll(devName(i)))
		if _, err := clients[i].Heartbeat(ctx, &devicev1.HeartbeatRequest{}); err != nil {
			t.Fatal(err)
		}
	}
	readsAfterWarmup, batches, _ := e.devices.stats()
	if batches != 0 {
		t.Fatalf("TouchDevices called %d times before any flush, want 0 (no write per heartbeat)", batches)
	}
	for range 5 {
		for _, c := range clients {
			if _, err := c.Heartbeat(ctx, &devicev1.HeartbeatRequest{}); err != nil {
				t.Fatal(err)
			}
		}
	}
	reads, batches, _ := e.devices.stats()
	if reads != readsAfterWarmup || batches != 0 {
		t.Fatalf("100 steady-state heartbeats did %d store reads and %d writes, want 0 and 0", reads-readsAfterWarmup, batches)
	}
	if err := e.srv.presence.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	_, batches, touched := e.devices.stats()
	if batches != 1 || len(touched) != n {
		t.Errorf("flush: %d TouchDevices calls covering %d devices, want 1 call covering %d", batches, len(touched), n)
	}
}

func TestStaleCacheEntryIsReread(t *testing.T) {
	clock := &fakeClock{t: time.Now()}
	e := newEnv(t, envOpts{now: clock.now})
	a := e.enroll("dev-a")
	c := e.dial(a)
	if _, err := c.Heartbeat(ctxT(t), &devicev1.HeartbeatRequest{}); err != nil {
		t.Fatal(err)
	}
	// Decommissioned on another replica: no Invalidate here. Within the TTL
	// the cached verdict stands; past it the store is asked again.
	e.devices.decommission("dev-a")
	clock.advance(DefaultCacheTTL + time.Second)
	if _, err := c.Heartbeat(ctxT(t), &devicev1.HeartbeatRequest{}); !isDecommissionSignal(err) {
		t.Errorf("Heartbeat past the cache TTL = %v, want the decommission signal", err)
	}
}

func TestChangePollInvalidates(t *testing.T) {
	changes := &fakeChanges{}
	e := newEnv(t, envOpts{changes: changes, poll: 5 * time.Millisecond})
	a := e.enroll("dev-a")
	c := e.dial(a)
	if _, err := c.Heartbeat(ctxT(t), &devicev1.HeartbeatRequest{}); err != nil {
		t.Fatal(err)
	}
	e.devices.decommission("dev-a") // on another replica: no Invalidate here
	n := changes.calls()
	changes.report("dev-a")
	ctx := ctxT(t)
	for changes.calls() < n+2 && ctx.Err() == nil { // a whole poll after the change
		time.Sleep(5 * time.Millisecond)
	}
	if _, err := c.Heartbeat(ctxT(t), &devicev1.HeartbeatRequest{}); !isDecommissionSignal(err) {
		t.Errorf("Heartbeat after the change poll = %v, want the decommission signal", err)
	}
}

type fakeChanges struct {
	mu    sync.Mutex
	names []string
	fail  bool
	n     int
}

func (f *fakeChanges) DevicesChangedSince(context.Context, time.Time) ([]string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.n++
	if f.fail {
		return nil, errors.New("connection refused")
	}
	return f.names, nil
}

func (f *fakeChanges) setFail(v bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.fail = v
}

func (f *fakeChanges) report(name string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.names = append(f.names, name)
}

func (f *fakeChanges) calls() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.n
}

func tlsCert(c *x509.Certificate, key *ecdsa.PrivateKey) tls.Certificate {
	return tls.Certificate{Certificate: [][]byte{c.Raw}, PrivateKey: key, Leaf: c}
}

func TestIntervalWidensForLargeFleets(t *testing.T) {
	// A budget of 0.02 heartbeats/s with two devices online wants 100 s;
	// the cap for 30 s with a 5 s flush is 75 s.
	e := newEnv(t, envOpts{interval: 30 * time.Second, flush: 5 * time.Second, budget: 0.02, poll: 5 * time.Millisecond})
	ctx := ctxT(t)
	a, b := e.dial(e.enroll("dev-a")), e.dial(e.enroll("dev-b"))
	for _, c := range []devicev1.DeviceServiceClient{a, b} {
		if _, err := c.Heartbeat(ctx, &devicev1.HeartbeatRequest{}); err != nil {
			t.Fatal(err)
		}
	}
	for e.srv.interval.onlineCount() < 2 && ctx.Err() == nil {
		time.Sleep(5 * time.Millisecond) // wait for a poll that sees both devices
	}
	hb, err := a.Heartbeat(ctx, &devicev1.HeartbeatRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if hb.HeartbeatIntervalMs != 75000 {
		t.Errorf("heartbeat interval with 2 devices online and a budget of 0.02/s = %d ms, want 75000", hb.HeartbeatIntervalMs)
	}
	if got := e.srv.OnlineDevices(); got != 2 {
		t.Errorf("OnlineDevices() = %d, want 2", got)
	}
}

// Devices that are connected but have not heartbeated yet (a fleet that
// just reconnected) already count: the interval widens before their
// heartbeats arrive at the base rate, and narrows when they go.
func TestIntervalWidensForConnectedDevices(t *testing.T) {
	e := newEnv(t, envOpts{interval: 30 * time.Second, flush: 5 * time.Second, budget: 0.02, poll: 5 * time.Millisecond})
	ctx := ctxT(t)
	var conns []*grpc.ClientConn
	for _, name := range []string{"dev-a", "dev-b"} {
		c := e.dialConn(e.enroll(name).cert, e.ca.Pool())
		c.Connect()
		conns = append(conns, c)
	}
	for _, c := range conns {
		for s := c.GetState(); s != connectivity.Ready; s = c.GetState() {
			if !c.WaitForStateChange(ctx, s) {
				t.Fatalf("connection never became ready: %v", ctx.Err())
			}
		}
	}
	for e.srv.interval.current() != 75*time.Second && ctx.Err() == nil {
		time.Sleep(5 * time.Millisecond)
	}
	if got := e.srv.interval.current(); got != 75*time.Second || e.srv.OnlineDevices() != 0 {
		t.Fatalf("two connected devices that never heartbeated: interval %v (online %d), want 75s with nobody seen online", got, e.srv.OnlineDevices())
	}
	for _, c := range conns {
		c.Close()
	}
	for e.srv.interval.current() != 30*time.Second && ctx.Err() == nil {
		time.Sleep(5 * time.Millisecond)
	}
	if got, n := e.srv.interval.current(), e.srv.conns.Load(); got != 30*time.Second || n != 0 {
		t.Errorf("after both disconnected: interval %v with %d connections counted, want 30s and 0", got, n)
	}
}

func TestWriteRPCsAreRateLimitedPerDevice(t *testing.T) {
	clock := &fakeClock{t: time.Now()}
	e := newEnv(t, envOpts{now: clock.now})
	a, b := e.dial(e.enroll("dev-a")), e.dial(e.enroll("dev-b"))
	ctx := ctxT(t)
	for i := range writeBurst {
		if _, err := a.Register(ctx, &devicev1.RegisterRequest{}); err != nil {
			t.Fatalf("Register %d: %v", i+1, err)
		}
	}
	if _, err := a.Register(ctx, &devicev1.RegisterRequest{}); status.Code(err) != codes.ResourceExhausted {
		t.Errorf("Register beyond the burst = %v, want ResourceExhausted", err)
	}
	if _, err := a.Heartbeat(ctx, &devicev1.HeartbeatRequest{}); err != nil {
		t.Errorf("Heartbeat of a limited device: %v (heartbeats write nothing and are not limited)", err)
	}
	if _, err := b.Register(ctx, &devicev1.RegisterRequest{}); err != nil {
		t.Errorf("another device's Register: %v", err)
	}
	clock.advance(2 * time.Second)
	if _, err := a.Register(ctx, &devicev1.RegisterRequest{}); err != nil {
		t.Errorf("Register after the bucket refilled: %v", err)
	}
}

// waitPolls waits until the change feed has been asked n more times.
func waitPolls(ctx context.Context, f *fakeChanges, n int) {
	want := f.calls() + n
	for f.calls() < want && ctx.Err() == nil {
		time.Sleep(2 * time.Millisecond)
	}
}

func TestHealthyChangeFeedKeepsEntriesLongAndFailingFeedFallsBackToTTL(t *testing.T) {
	clock := &fakeClock{t: time.Now()}
	changes := &fakeChanges{}
	e := newEnv(t, envOpts{now: clock.now, changes: changes, poll: 5 * time.Millisecond})
	c := e.dial(e.enroll("dev-a"))
	ctx := ctxT(t)
	if _, err := c.Heartbeat(ctx, &devicev1.HeartbeatRequest{}); err != nil {
		t.Fatal(err)
	}
	reads, _, _ := e.devices.stats()

	// Well past CacheTTL, but the feed keeps vouching: no store read.
	clock.advance(10 * time.Minute)
	waitPolls(ctx, changes, 2)
	if _, err := c.Heartbeat(ctx, &devicev1.HeartbeatRequest{}); err != nil {
		t.Fatal(err)
	}
	if r, _, _ := e.devices.stats(); r != reads {
		t.Errorf("heartbeat with a healthy change feed re-read the store (%d reads, want %d)", r, reads)
	}

	// The feed breaks; a change it would have reported is only caught by
	// the short TTL.
	changes.setFail(true)
	e.devices.decommission("dev-a")
	clock.advance(time.Minute)
	waitPolls(ctx, changes, 2)
	if _, err := c.Heartbeat(ctx, &devicev1.HeartbeatRequest{}); !isDecommissionSignal(err) {
		t.Errorf("Heartbeat with a failing change feed past CacheTTL = %v, want the decommission signal", err)
	}
}

func TestShutdownFlushesLastSeen(t *testing.T) {
	e := newEnv(t, envOpts{}) // the periodic flush never fires (1 h)
	c := e.dial(e.enroll("dev-a"))
	if _, err := c.Heartbeat(ctxT(t), &devicev1.HeartbeatRequest{}); err != nil {
		t.Fatal(err)
	}
	if _, batches, _ := e.devices.stats(); batches != 0 {
		t.Fatalf("TouchDevices called %d times before shutdown, want 0", batches)
	}
	if err := e.stop(); err != nil {
		t.Fatalf("Serve = %v", err)
	}
	if _, _, touched := e.devices.stats(); touched["dev-a"].IsZero() {
		t.Error("last_seen of a heartbeat before shutdown was not flushed")
	}
}
