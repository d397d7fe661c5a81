package deviceapi

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/meshanics/meshanics/internal/errdefs"
	"github.com/meshanics/meshanics/internal/server/ca"
	"github.com/meshanics/meshanics/internal/server/store"
	devicev1 "github.com/meshanics/meshanics/proto/meshanics/device/v1"
)

// fakeDevices keeps device lives and certificates in memory, the way the
// store does: per name the current serial, and every serial ever issued
// with its fate.
type fakeDevices struct {
	mu       sync.Mutex
	certs    map[string]fakeCert // serial → cert
	regs     map[string]store.Registration
	touched  map[string]time.Time
	batches  int
	authRead int // CertAuth calls, to prove the cache works

	installed       map[string]json.RawMessage // by SetInstalled
	installedWrites int
	intervals       []time.Duration // SetHeartbeatInterval calls
}

type fakeCert struct {
	name  string
	state store.CertState
}

func newFakeDevices() *fakeDevices {
	return &fakeDevices{certs: map[string]fakeCert{}, regs: map[string]store.Registration{}, touched: map[string]time.Time{}}
}

func (f *fakeDevices) CertAuth(_ context.Context, name, serial string) (store.CertState, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.authRead++
	c, ok := f.certs[serial]
	if !ok || c.name != name {
		return store.CertUnknown, nil
	}
	return c.state, nil
}

func (f *fakeDevices) RegisterDevice(_ context.Context, name string, reg store.Registration) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.regs[name] = reg
	return nil
}

func (f *fakeDevices) SetInstalled(_ context.Context, name string, installed json.RawMessage) (bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if string(f.installed[name]) == string(installed) {
		return false, nil
	}
	if f.installed == nil {
		f.installed = map[string]json.RawMessage{}
	}
	f.installed[name] = installed
	f.installedWrites++
	return true, nil
}

func (f *fakeDevices) SetHeartbeatInterval(_ context.Context, interval time.Duration, names ...string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.intervals = append(f.intervals, interval)
	return nil
}

func (f *fakeDevices) TouchDevices(_ context.Context, seen map[string]time.Time) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.batches++
	maps.Copy(f.touched, seen)
	return nil
}

// issued records a new current certificate of name, superseding the old.
func (f *fakeDevices) issued(name, serial string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for s, c := range f.certs {
		if c.name == name && c.state == store.CertCurrent {
			c.state = store.CertRevoked
			f.certs[s] = c
		}
	}
	f.certs[serial] = fakeCert{name: name, state: store.CertCurrent}
}

// renewed records a renewal like the store: the new certificate becomes
// current and the old one (same key) stays valid, so a lost renewal
// response does not lock the device out.
func (f *fakeDevices) renewed(name, serial string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.certs[serial] = fakeCert{name: name, state: store.CertCurrent}
}

// decommission ends the current life of name.
func (f *fakeDevices) decommission(name string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for s, c := range f.certs {
		if c.name == name && c.state != store.CertRevoked {
			c.state = store.CertDecommissioned
			f.certs[s] = c
		}
	}
}

func (f *fakeDevices) stats() (authReads, batches int, touched map[string]time.Time) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.authRead, f.batches, maps.Clone(f.touched)
}

// fakeLogs holds log requests like the store does.
type fakeLogs struct {
	mu      sync.Mutex
	reqs    map[string]store.PendingLog
	bundles map[string][]byte
}

func newFakeLogs() *fakeLogs {
	return &fakeLogs{reqs: map[string]store.PendingLog{}, bundles: map[string][]byte{}}
}

func (f *fakeLogs) add(r store.PendingLog) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.reqs[r.ID] = r
}

func (f *fakeLogs) PendingLogRequests(_ context.Context, limit int) ([]store.PendingLog, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []store.PendingLog
	for id, r := range f.reqs {
		if _, done := f.bundles[id]; !done && len(out) < limit {
			out = append(out, r)
		}
	}
	return out, nil
}

func (f *fakeLogs) CompleteLogRequest(_ context.Context, device, id string, gz []byte) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	r, ok := f.reqs[id]
	if !ok || r.Device != device {
		return errdefs.NotFound("unknown log request")
	}
	if _, done := f.bundles[id]; done {
		return errdefs.Conflict("log request already fulfilled")
	}
	f.bundles[id] = append([]byte(nil), gz...)
	return nil
}

func (f *fakeLogs) bundle(id string) ([]byte, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	b, ok := f.bundles[id]
	return b, ok
}

// fakeRollouts serves assignments per device and accepts reports only for
// assignments it handed to that device.
type fakeRollouts struct {
	mu      sync.Mutex
	byDev   map[string][]*devicev1.Assignment
	reports []reportOf
}

type reportOf struct {
	device string
	r      StatusReport
}

func (f *fakeRollouts) Assignments(_ context.Context, device string, _ []*devicev1.InstalledArtifact, _ time.Time) ([]*devicev1.Assignment, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.byDev[device], nil
}

func (f *fakeRollouts) Report(_ context.Context, device string, r StatusReport) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, a := range f.byDev[device] {
		if a.Id == r.AssignmentID {
			f.reports = append(f.reports, reportOf{device, r})
			return nil
		}
	}
	return errdefs.NotFound("unknown assignment")
}

// caRenewer renews with the real CA and records the new serial.
type caRenewer struct {
	ca      *ca.Authority
	devices *fakeDevices
}

func (r caRenewer) RenewDevice(_ context.Context, name, oldSerial string, pub *ecdsa.PublicKey) ([]byte, error) {
	if st, _ := r.devices.CertAuth(context.Background(), name, oldSerial); st != store.CertCurrent {
		return nil, errdefs.Conflict("certificate is no longer current")
	}
	iss, err := r.ca.IssueDevice(name, pub, ca.DefaultDeviceTTL)
	if err != nil {
		return nil, err
	}
	r.devices.renewed(name, iss.Serial)
	return iss.PEM, nil
}

// env is a device API served over real mTLS on 127.0.0.1:0.
type env struct {
	t        testing.TB
	ca       *ca.Authority
	srv      *Server
	addr     string
	devices  *fakeDevices
	logs     *fakeLogs
	rollouts *fakeRollouts
	// stop shuts the server down and returns Serve's result (once).
	stop func() error
}

type envOpts struct {
	budget   float64
	interval time.Duration
	flush    time.Duration
	poll     time.Duration
	now      func() time.Time
	changes  Changes
	// A real store instead of the fakes.
	store *store.DB
}

// fakeClock is a settable clock safe for concurrent use.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

func newEnv(t testing.TB, o envOpts) *env {
	t.Helper()
	authority, err := ca.Create(filepath.Join(t.TempDir(), "pki"), "fleet.example", time.Now)
	if err != nil {
		t.Fatal(err)
	}
	return newEnvWithCA(t, authority, o)
}

func newEnvWithCA(t testing.TB, authority *ca.Authority, o envOpts) *env {
	t.Helper()
	serving, err := authority.ServingCertificate([]string{"127.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	e := &env{t: t, ca: authority, devices: newFakeDevices(), logs: newFakeLogs(), rollouts: &fakeRollouts{byDev: map[string][]*devicev1.Assignment{}}}
	if o.flush == 0 {
		o.flush = time.Hour // tests flush explicitly…
	}
	if o.interval == 0 {
		o.interval = 2 * time.Hour // …and the flush must be shorter than the interval
	}
	if o.poll == 0 {
		o.poll = time.Hour
	}
	var (
		devices Devices     = e.devices
		logs    LogRequests = e.logs
		renewer Renewer     = caRenewer{ca: authority, devices: e.devices}
	)
	if o.store != nil {
		devices, logs, renewer = o.store, o.store, nil
	}
	e.srv, err = New(Config{
		Fleet:             authority.Fleet(),
		Identity:          authority,
		Devices:           devices,
		Logs:              logs,
		Renewer:           renewer,
		Assignments:       e.rollouts,
		Status:            e.rollouts,
		Log:               slog.New(slog.NewTextHandler(io.Discard, nil)),
		HeartbeatInterval: o.interval,
		HeartbeatBudget:   o.budget,
		FlushInterval:     o.flush,
		PollInterval:      o.poll,
		Now:               o.now,
		Changes:           o.changes,
	})
	if err != nil {
		t.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	e.addr = lis.Addr().String()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- e.srv.Serve(ctx, lis, authority.MutualTLSConfig(serving)) }()
	e.stop = sync.OnceValue(func() error {
		cancel()
		return <-done
	})
	t.Cleanup(func() {
		if err := e.stop(); err != nil {
			t.Errorf("Serve = %v, want nil", err)
		}
	})
	return e
}

// identity is a device key and certificate.
type identity struct {
	name   string
	key    *ecdsa.PrivateKey
	cert   tls.Certificate
	serial string
}

func newKey(t testing.TB) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// enroll issues a certificate for name from the fleet CA and records it
// as current, as enrollment would.
func (e *env) enroll(name string) identity {
	e.t.Helper()
	return e.enrollKey(name, newKey(e.t))
}

func (e *env) enrollKey(name string, key *ecdsa.PrivateKey) identity {
	e.t.Helper()
	iss, err := e.ca.IssueDevice(name, &key.PublicKey, ca.DefaultDeviceTTL)
	if err != nil {
		e.t.Fatal(err)
	}
	e.devices.issued(name, iss.Serial)
	return identity{name: name, key: key, serial: iss.Serial, cert: tls.Certificate{Certificate: [][]byte{iss.Cert.Raw}, PrivateKey: key, Leaf: iss.Cert}}
}

// dial opens one long-lived connection presenting id's certificate.
func (e *env) dial(id identity) devicev1.DeviceServiceClient {
	e.t.Helper()
	conn := e.dialConn(id.cert, e.ca.Pool())
	return devicev1.NewDeviceServiceClient(conn)
}

func (e *env) dialConn(cert tls.Certificate, roots *x509.CertPool) *grpc.ClientConn {
	e.t.Helper()
	conf := &tls.Config{MinVersion: tls.VersionTLS13, RootCAs: roots, Certificates: []tls.Certificate{cert}}
	conn, err := grpc.NewClient(e.addr, grpc.WithTransportCredentials(credentials.NewTLS(conf)))
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { conn.Close() })
	return conn
}

func csrPEM(t testing.TB, key *ecdsa.PrivateKey, cn string) string {
	t.Helper()
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: cn}}, key)
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}))
}

func ctxT(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func devName(i int) string { return fmt.Sprintf("dev-%04d", i) }
