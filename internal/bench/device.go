package bench

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/keepalive"

	devicev1 "github.com/meshanics/meshanics/proto/meshanics/device/v1"
)

// device is one simulated device: its own P-256 key and the certificate the
// real enrollment endpoint issued for it.
type device struct {
	name       string
	cert       tls.Certificate
	deviceAddr string // from the enrollment response
	conn       *grpc.ClientConn
	client     devicev1.DeviceServiceClient
}

type enrollRequest struct {
	Token        string            `json:"token"`
	Name         string            `json:"name"`
	CSRPEM       string            `json:"csr_pem"`
	Hardware     json.RawMessage   `json:"hardware"`
	Tags         map[string]string `json:"tags"`
	AgentVersion string            `json:"agent_version"`
}

type enrollResponse struct {
	Device         string `json:"device"`
	CertificatePEM string `json:"certificate_pem"`
	Config         struct {
		Server         string `json:"server"`
		ArtifactServer string `json:"artifact_server"`
	} `json:"config"`
	TrustAnchor json.RawMessage `json:"trust_anchor"`
}

// A simulated device enrolls and registers with the same profile, as an
// agent does: a reconnect then only refreshes last_seen (no record change,
// no audit event), like a real fleet reconnecting after a server restart.
var (
	simHardware = &devicev1.HardwareProfile{Model: "bench", Arch: "amd64", MemoryBytes: 4 << 30, CpuCores: 4, Os: "linux", Kernel: "6.1"}
	// simHardwareJSON is simHardware as the device API records it.
	simHardwareJSON = json.RawMessage(`{"model":"bench","soc":"","arch":"amd64","memory_bytes":4294967296,"cpu_cores":4,"accelerators":[],"os":"linux","kernel":"6.1"}`)
	simTags         = map[string]string{"bench": "1"}
)

// enroller enrolls devices against one web URL, spreading connections
// over several loopback source addresses when the server is local: the
// enrollment endpoint rate-limits per address (100/s), and a real fleet
// enrolls from many addresses.
type enroller struct {
	webURLs []string
	tokens  []string
	clients []*http.Client
	next    atomic.Uint64
}

func newEnroller(webURLs []string, tokens []string, caPEM []byte) *enroller {
	e := &enroller{webURLs: webURLs, tokens: tokens}
	u, _ := url.Parse(webURLs[0])
	for _, src := range loopbackSources(u.Hostname(), 1, 32) {
		e.clients = append(e.clients, httpClient(caPEM, src))
	}
	return e
}

func (e *enroller) close() {
	for _, c := range e.clients {
		c.CloseIdleConnections()
	}
}

// enroll generates a key, sends the CSR with token i of the enroller's
// (modulo their number) and returns the enrolled device.
func (e *enroller) enroll(ctx context.Context, i int, name string) (*device, enrollResponse, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, enrollResponse{}, err
	}
	csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key)
	if err != nil {
		return nil, enrollResponse{}, err
	}
	body, _ := json.Marshal(enrollRequest{
		Token: e.tokens[i%len(e.tokens)], Name: name, AgentVersion: "bench",
		CSRPEM:   string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: csr})),
		Hardware: simHardwareJSON,
		Tags:     simTags,
	})
	k := e.next.Add(1)
	c, webURL := e.clients[k%uint64(len(e.clients))], e.webURLs[k%uint64(len(e.webURLs))]
	var resp *http.Response
	for attempt := 0; ; attempt++ {
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, webURL+"/api/v1/enroll", bytes.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		resp, err = c.Do(req)
		if err != nil {
			return nil, enrollResponse{}, err
		}
		if resp.StatusCode != http.StatusTooManyRequests || attempt == 20 {
			break
		}
		resp.Body.Close()
		time.Sleep(100 * time.Millisecond)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if resp.StatusCode != http.StatusCreated {
		return nil, enrollResponse{}, fmt.Errorf("enroll %s: HTTP %d: %s", name, resp.StatusCode, tailString(string(b), 300))
	}
	var er enrollResponse
	if err := json.Unmarshal(b, &er); err != nil {
		return nil, enrollResponse{}, fmt.Errorf("enroll %s: %w", name, err)
	}
	blk, _ := pem.Decode([]byte(er.CertificatePEM))
	if blk == nil {
		return nil, enrollResponse{}, fmt.Errorf("enroll %s: no certificate", name)
	}
	return &device{name: name, deviceAddr: er.Config.Server,
		cert: tls.Certificate{Certificate: [][]byte{blk.Bytes}, PrivateKey: key}}, er, nil
}

// enrollAll enrolls names with conc requests in flight and returns the
// devices in order and the wall time.
func (e *enroller) enrollAll(ctx context.Context, names []string, conc int) ([]*device, enrollResponse, time.Duration, error) {
	devs := make([]*device, len(names))
	var (
		first enrollResponse
		once  sync.Once
		errMu sync.Mutex
		err1  error
		next  atomic.Int64
		wg    sync.WaitGroup
	)
	start := time.Now()
	for range min(conc, len(names)) {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= len(names) || ctx.Err() != nil {
					return
				}
				d, er, err := e.enroll(ctx, i, names[i])
				if err != nil {
					errMu.Lock()
					if err1 == nil {
						err1 = err
					}
					errMu.Unlock()
					return
				}
				once.Do(func() { first = er })
				devs[i] = d
			}
		})
	}
	wg.Wait()
	if err1 == nil {
		err1 = ctx.Err()
	}
	return devs, first, time.Since(start), err1
}

// loopbackSources returns n source addresses 127.0.<subnet>.1…n when host
// is an IPv4 loopback address (a local fleet comes from many addresses, as
// a real one does), and otherwise one nil: the system's choice.
func loopbackSources(host string, subnet byte, n int) []net.IP {
	if ip := net.ParseIP(host); ip == nil || !ip.IsLoopback() || ip.To4() == nil {
		return []net.IP{nil}
	}
	srcs := make([]net.IP, n)
	for i := range srcs {
		srcs[i] = net.IPv4(127, 0, subnet, byte(i+1))
	}
	return srcs
}

// dial opens the device's one long-lived mutual-TLS gRPC connection to
// addr, with the agent's keepalive settings, from source address local
// (nil: the system's choice). Small transport buffers: a simulator holds
// thousands of connections in one process.
func (d *device) dial(addr string, local net.IP, caPEM []byte) error {
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	host, _, _ := net.SplitHostPort(addr)
	tc := &tls.Config{RootCAs: pool, ServerName: host, MinVersion: tls.VersionTLS13,
		Certificates: []tls.Certificate{d.cert}}
	nd := &net.Dialer{Timeout: 20 * time.Second}
	if local != nil {
		nd.LocalAddr = &net.TCPAddr{IP: local}
	}
	conn, err := grpc.NewClient(addr,
		grpc.WithTransportCredentials(credentials.NewTLS(tc)),
		grpc.WithContextDialer(func(ctx context.Context, a string) (net.Conn, error) { return nd.DialContext(ctx, "tcp", a) }),
		grpc.WithKeepaliveParams(keepalive.ClientParameters{Time: time.Minute, Timeout: 20 * time.Second, PermitWithoutStream: true}),
		grpc.WithReadBufferSize(8<<10), grpc.WithWriteBufferSize(8<<10),
		grpc.WithSharedWriteBuffer(true),
		grpc.WithInitialWindowSize(64<<10), grpc.WithInitialConnWindowSize(64<<10),
	)
	if err != nil {
		return err
	}
	d.conn, d.client = conn, devicev1.NewDeviceServiceClient(conn)
	return nil
}

func (d *device) close() {
	if d.conn != nil {
		d.conn.Close()
	}
}

// connectAttempts is how often a device tries to connect and register
// before the run fails. An agent retries for ever with backoff; the
// simulator retries a few times (1 s, 2 s, 4 s, 8 s, with jitter) so that
// a connect storm on an overloaded machine delays the run instead of
// ending it, and reports how many retries there were.
const connectAttempts = 5

// sourceAddrs is how many loopback source addresses (127.0.2.x) the
// connections of a local fleet come from: 100,000 connections from one
// address would crowd its ephemeral ports.
const sourceAddrs = 64

// connectAll dials and registers every device (conc at a time), calls
// registered with each device and the interval its Register returned, and
// returns the last interval the server handed out and the number of
// retries.
func connectAll(ctx context.Context, devs []*device, addrs []string, caPEM []byte, conc int, registered func(*device, time.Duration)) (time.Duration, int64, error) {
	var (
		next     atomic.Int64
		retries  atomic.Int64
		wg       sync.WaitGroup
		errMu    sync.Mutex
		err1     error
		interval atomic.Int64
	)
	host, _, _ := net.SplitHostPort(addrs[0])
	srcs := loopbackSources(host, 2, sourceAddrs)
	connect := func(i int) (*devicev1.RegisterResponse, error) {
		d := devs[i]
		if err := d.dial(addrs[i%len(addrs)], srcs[i%len(srcs)], caPEM); err != nil {
			return nil, err
		}
		rctx, cancel := context.WithTimeout(ctx, 60*time.Second)
		defer cancel()
		return d.client.Register(rctx, &devicev1.RegisterRequest{AgentVersion: "bench", Hardware: simHardware, Tags: simTags})
	}
	for range min(conc, len(devs)) {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= len(devs) || ctx.Err() != nil {
					return
				}
				var resp *devicev1.RegisterResponse
				var err error
				for attempt := range connectAttempts {
					if attempt > 0 {
						devs[i].close()
						retries.Add(1)
						time.Sleep(time.Duration(float64(time.Second<<(attempt-1)) * (0.5 + mrand.Float64())))
					}
					if resp, err = connect(i); err == nil || ctx.Err() != nil {
						break
					}
				}
				if err != nil {
					errMu.Lock()
					if err1 == nil {
						err1 = fmt.Errorf("device %s (after %d attempts): %w", devs[i].name, connectAttempts, err)
					}
					errMu.Unlock()
					return
				}
				interval.Store(resp.GetHeartbeatIntervalMs())
				if ms := resp.GetHeartbeatIntervalMs(); ms > 0 && registered != nil {
					registered(devs[i], time.Duration(ms)*time.Millisecond)
				}
			}
		})
	}
	wg.Wait()
	if err1 == nil {
		err1 = ctx.Err()
	}
	if err1 == nil && interval.Load() <= 0 {
		err1 = errors.New("register: no heartbeat interval")
	}
	return time.Duration(interval.Load()) * time.Millisecond, retries.Load(), err1
}
