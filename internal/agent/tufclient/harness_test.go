package tufclient

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"errors"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/theupdateframework/go-tuf/v2/metadata"

	"github.com/meshanics/meshanics/internal/artifact"
	"github.com/meshanics/meshanics/internal/ceremony"
	"github.com/meshanics/meshanics/internal/server/artifacts"
	"github.com/meshanics/meshanics/internal/server/store"
	"github.com/meshanics/meshanics/internal/server/store/storetest"
	"github.com/meshanics/meshanics/internal/server/updaterepo"
	devicev1 "github.com/meshanics/meshanics/proto/meshanics/device/v1"
)

// clock is a settable clock shared by the server, the client's TUF
// reference time and both sides' TLS.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// tamper wraps the real repository handler; a test replaces what a
// compromised server or a network attacker would serve for one path.
type tamper struct {
	next http.Handler
	mu   sync.Mutex
	over map[string][]byte
}

func (t *tamper) set(path string, body []byte) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.over[path] = body
}

func (t *tamper) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	t.mu.Lock()
	body, ok := t.over[r.URL.Path]
	t.mu.Unlock()
	if ok {
		_, _ = w.Write(body)
		return
	}
	t.next.ServeHTTP(w, r)
}

// env is the real repository (SQLite store, blob store, online keys, dev
// ceremony) behind a real mutual-TLS listener, and a device client.
type env struct {
	t        testing.TB
	ctx      context.Context
	clock    *clock
	dataDir  string
	db       *store.DB
	blobs    *artifacts.Blobs
	repo     *updaterepo.Repository
	tamper   *tamper
	srv      *httptest.Server
	client   *Client
	devDir   string // device data dir
	artDir   string // the device's artifact area
	rootJSON []byte
}

func newEnv(t testing.TB) *env {
	t.Helper()
	ctx := context.Background()
	clk := &clock{t: time.Now().UTC().Truncate(time.Second)}
	e := &env{t: t, ctx: ctx, clock: clk, dataDir: t.TempDir()}
	e.db = storetest.SQLiteWith(t, storetest.Options{Now: clk.Now})
	var err error
	if e.blobs, err = artifacts.NewBlobs(filepath.Join(e.dataDir, "blobs")); err != nil {
		t.Fatal(err)
	}
	e.repo, err = updaterepo.New(updaterepo.Config{DataDir: e.dataDir, DB: e.db, Blobs: e.blobs, Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	if err := e.repo.InitDev(ctx); err != nil {
		t.Fatal(err)
	}
	if e.rootJSON, err = e.repo.TrustAnchor(ctx); err != nil {
		t.Fatal(err)
	}
	serverTLS, _ := mtls(t, clk.Now)
	e.tamper = &tamper{next: e.repo.Handler(), over: map[string][]byte{}}
	e.srv = httptest.NewUnstartedServer(e.tamper)
	e.srv.TLS = serverTLS
	e.srv.StartTLS()
	t.Cleanup(e.srv.Close)
	e.devDir = t.TempDir()
	e.artDir = filepath.Join(e.devDir, "artifacts")
	if err := os.MkdirAll(e.artDir, 0o755); err != nil {
		t.Fatal(err)
	}
	e.client = e.newClient(e.rootJSON)
	return e
}

func (e *env) newClient(root []byte) *Client {
	e.t.Helper()
	c, err := New(Config{
		DataDir:   e.devDir,
		Root:      root,
		ServerURL: e.srv.URL,
		HTTP:      &http.Client{Transport: &http.Transport{TLSClientConfig: e.clientTLS()}},
		Now:       e.clock.Now,
	})
	if err != nil {
		e.t.Fatal(err)
	}
	return c
}

var (
	pkiOnce              sync.Once
	pkiServer, pkiClient tls.Certificate
	pkiPool              *x509.CertPool
	pkiErr               error
)

// mtls returns a server config that requires a client certificate from the
// test CA and a matching client config; both use now.
func mtls(t testing.TB, now func() time.Time) (*tls.Config, *tls.Config) {
	t.Helper()
	pkiOnce.Do(func() { pkiErr = makePKI() })
	if pkiErr != nil {
		t.Fatal(pkiErr)
	}
	srv := &tls.Config{Certificates: []tls.Certificate{pkiServer}, ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: pkiPool, Time: now, MinVersion: tls.VersionTLS13}
	cli := &tls.Config{Certificates: []tls.Certificate{pkiClient}, RootCAs: pkiPool, Time: now, MinVersion: tls.VersionTLS13}
	return srv, cli
}

func (e *env) clientTLS() *tls.Config { _, c := mtls(e.t, e.clock.Now); return c }

func makePKI() error {
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	nb, na := time.Now().Add(-time.Hour), time.Now().Add(400*24*time.Hour)
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test fleet CA"}, NotBefore: nb, NotAfter: na,
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return err
	}
	ca, _ := x509.ParseCertificate(caDER)
	pkiPool = x509.NewCertPool()
	pkiPool.AddCert(ca)
	leaf := func(serial int64, cn string, usage x509.ExtKeyUsage, server bool) (tls.Certificate, error) {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return tls.Certificate{}, err
		}
		tmpl := &x509.Certificate{SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: cn}, NotBefore: nb, NotAfter: na,
			ExtKeyUsage: []x509.ExtKeyUsage{usage}, KeyUsage: x509.KeyUsageDigitalSignature}
		if server {
			tmpl.DNSNames = []string{"localhost"}
			tmpl.IPAddresses = []net.IP{net.ParseIP("127.0.0.1")}
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &k.PublicKey, caKey)
		if err != nil {
			return tls.Certificate{}, err
		}
		return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: k}, nil
	}
	if pkiServer, err = leaf(2, "repo", x509.ExtKeyUsageServerAuth, true); err != nil {
		return err
	}
	pkiClient, err = leaf(3, "dev1", x509.ExtKeyUsageClientAuth, false)
	return err
}

// publish stores data as a model artifact and signs it; it returns the
// assignment artifact a device would receive.
func (e *env) publish(name, version string, data []byte) *devicev1.Artifact {
	e.t.Helper()
	sum, n, err := e.blobs.Put(bytes.NewReader(data), 1<<30)
	if err != nil {
		e.t.Fatal(err)
	}
	path := artifact.TargetPath(artifact.KindModel, name, version, "model.onnx")
	custom, _ := artifact.EncodeTargetCustom(artifact.Custom{Kind: artifact.KindModel, Name: name, Version: version,
		Manifest: &artifact.ModelManifest{Framework: "onnx", Metrics: map[string]float64{"map": 0.61}}})
	if err := e.repo.AddTarget(e.ctx, updaterepo.Target{Path: path, SHA256: sum, Length: n, Custom: custom}, nil); err != nil {
		e.t.Fatal(err)
	}
	return &devicev1.Artifact{Kind: artifact.KindModel, Name: name, Version: version, TargetPath: path, Sha256: sum, Length: n}
}

// fetch runs FetchFile into the artifact area.
func (e *env) fetch(a *devicev1.Artifact) error {
	_, err := e.client.FetchFile(e.ctx, a, filepath.Join(e.artDir, a.Name+"-"+a.Version))
	return err
}

// mustRefuse asserts a verification failure of kind want for the reason
// cause (an error errors.Is must find, e.g. a go-tuf error type, or a
// substring of the message), and an empty artifact area: a refusal for an
// incidental reason would prove nothing about the attack.
func (e *env) mustRefuse(a *devicev1.Artifact, want error, cause any) {
	e.t.Helper()
	err := e.fetch(a)
	if err == nil || !errors.Is(err, want) {
		e.t.Fatalf("FetchFile(%s) = %v, want %v", a.TargetPath, err, want)
	}
	switch c := cause.(type) {
	case error:
		if !errors.Is(err, c) {
			e.t.Fatalf("FetchFile(%s) refused for another reason: %v; want %T", a.TargetPath, err, c)
		}
	case string:
		if !strings.Contains(err.Error(), c) {
			e.t.Fatalf("FetchFile(%s) refused for another reason: %v; want %q", a.TargetPath, err, c)
		}
	default:
		e.t.Fatalf("mustRefuse: cause %T is neither an error nor a string", cause)
	}
	ents, rerr := os.ReadDir(e.artDir)
	if rerr != nil || len(ents) != 0 {
		e.t.Fatalf("artifact area after refused fetch: %v entries (%v), want none", len(ents), rerr)
	}
	if ents, rerr := os.ReadDir(filepath.Join(e.devDir, "tuf", "staging")); rerr != nil || len(ents) != 0 {
		e.t.Fatalf("staging area after refused fetch: %v entries (%v), want none", len(ents), rerr)
	}
	e.t.Logf("refused as expected: %v", err)
}

// doc returns the stored body of role at version (0 = newest).
func (e *env) doc(role string, version int64) []byte {
	e.t.Helper()
	d, err := e.db.TUFDoc(e.ctx, role, version)
	if err != nil {
		e.t.Fatal(err)
	}
	return d.Body
}

// onlineKey returns the server's private key for role (the compromised
// server's view).
func (e *env) onlineKey(role string) *ceremony.PrivateKey {
	e.t.Helper()
	keys, err := ceremony.LoadKeys(filepath.Join(e.dataDir, "tuf", "keys"))
	if err != nil {
		e.t.Fatal(err)
	}
	for _, k := range keys {
		if k.Role == role {
			return k
		}
	}
	e.t.Fatalf("no %s key", role)
	return nil
}

func metaOf(version int64, raw []byte) *metadata.MetaFiles {
	sum := sha256.Sum256(raw)
	return &metadata.MetaFiles{Version: version, Length: int64(len(raw)), Hashes: metadata.Hashes{"sha256": sum[:]}}
}

func hexSum(b []byte) string { s := sha256.Sum256(b); return hex.EncodeToString(s[:]) }

func signed[T metadata.Roles](t testing.TB, m *metadata.Metadata[T], keys ...*ceremony.PrivateKey) []byte {
	t.Helper()
	if err := ceremony.Sign(m, keys...); err != nil {
		t.Fatal(err)
	}
	b, err := m.ToBytes(false)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
