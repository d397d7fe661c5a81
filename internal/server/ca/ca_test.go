package ca

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/meshanics/meshanics/internal/errdefs"
)

var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

type clock struct{ t time.Time }

func (c *clock) now() time.Time { return c.t }

func newCA(t *testing.T, fleet string) (*Authority, *clock) {
	t.Helper()
	c := &clock{t: t0}
	a, err := Create(filepath.Join(t.TempDir(), "pki"), fleet, c.now)
	if err != nil {
		t.Fatalf("Create: %v", err)
	}
	return a, c
}

func newCSR(t testing.TB, key any, cn string) []byte {
	t.Helper()
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: cn}}, key)
	if err != nil {
		t.Fatalf("CreateCertificateRequest: %v", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})
}

func p256(t testing.TB) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func TestCreateThenLoadKeepsTheCA(t *testing.T) {
	a, c := newCA(t, "fleet.example")
	st, err := os.Stat(filepath.Join(a.dir, CAKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Errorf("ca.key mode = %v, want 0600", st.Mode().Perm())
	}
	b, err := Load(a.dir, c.now)
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	if b.Fingerprint() != a.Fingerprint() || b.Fleet() != "fleet.example" {
		t.Errorf("Load = (%s, %s), want (%s, fleet.example)", b.Fingerprint(), b.Fleet(), a.Fingerprint())
	}
	if !strings.HasPrefix(a.Fingerprint(), "sha256:") || len(a.Fingerprint()) != len("sha256:")+64 {
		t.Errorf("Fingerprint() = %q, want sha256:<64 hex>", a.Fingerprint())
	}
	if got := Fingerprint(a.Certificate().Raw); got != a.Fingerprint() {
		t.Errorf("Fingerprint(DER) = %q, want %q", got, a.Fingerprint())
	}
	if _, err := Create(a.dir, "fleet.example", c.now); err == nil {
		t.Error("Create on an existing CA succeeded, want refusal")
	}
	if b2, _ := Load(a.dir, c.now); b2.Fingerprint() != a.Fingerprint() {
		t.Error("refused Create changed the CA")
	}
}

func TestCreateRejectsBadFleet(t *testing.T) {
	for _, f := range []string{"", "Fleet.Example", "a/b", "-x", "x y"} {
		if _, err := Create(t.TempDir(), f, time.Now); err == nil {
			t.Errorf("Create(fleet %q) succeeded, want error", f)
		}
	}
}

func TestServingCertificateReusedUntilHostsChange(t *testing.T) {
	a, c := newCA(t, "fleet.example")
	s1, err := a.ServingCertificate([]string{"cp.fleet.example", "127.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	for _, host := range []string{"cp.fleet.example", "127.0.0.1"} {
		if _, err := s1.Leaf.Verify(x509.VerifyOptions{DNSName: host, Roots: a.Pool(), CurrentTime: c.t}); err != nil {
			t.Errorf("serving cert does not verify for %s: %v", host, err)
		}
	}
	// Same set, other order and case: reused.
	s2, err := a.ServingCertificate([]string{"127.0.0.1", "CP.fleet.example"})
	if err != nil {
		t.Fatal(err)
	}
	if s2.Leaf.SerialNumber.Cmp(s1.Leaf.SerialNumber) != 0 {
		t.Error("serving certificate reissued for the same host set")
	}
	// A new host: reissued.
	s3, err := a.ServingCertificate([]string{"cp.fleet.example", "127.0.0.1", "10.0.0.5"})
	if err != nil {
		t.Fatal(err)
	}
	if s3.Leaf.SerialNumber.Cmp(s1.Leaf.SerialNumber) == 0 {
		t.Error("serving certificate not reissued after the host set changed")
	}
	if _, err := s3.Leaf.Verify(x509.VerifyOptions{DNSName: "10.0.0.5", Roots: a.Pool(), CurrentTime: c.t}); err != nil {
		t.Errorf("reissued cert does not cover the new host: %v", err)
	}
	// Near expiry: reissued.
	c.t = s3.Leaf.NotAfter.Add(-24 * time.Hour)
	s4, err := a.ServingCertificate([]string{"cp.fleet.example", "127.0.0.1", "10.0.0.5"})
	if err != nil {
		t.Fatal(err)
	}
	if !s4.Leaf.NotAfter.After(s3.Leaf.NotAfter) {
		t.Error("serving certificate close to expiry not reissued")
	}
}

func TestParseHostsRejects(t *testing.T) {
	for _, h := range [][]string{nil, {"host:8443"}, {"a b"}, {"https://x"}, {"-bad.example"}} {
		if _, err := ParseHosts(h); err == nil {
			t.Errorf("ParseHosts(%q) succeeded, want error", h)
		}
	}
}

func TestIssueDeviceFollowsSpec(t *testing.T) {
	a, c := newCA(t, "fleet.example")
	key := p256(t)
	pub, err := ParseCSR(newCSR(t, key, "someone-else"))
	if err != nil {
		t.Fatalf("ParseCSR: %v", err)
	}
	iss, err := a.IssueDevice("edge-01", pub, DefaultDeviceTTL)
	if err != nil {
		t.Fatalf("IssueDevice: %v", err)
	}
	cert := iss.Cert
	if cert.Subject.CommonName != "edge-01" {
		t.Errorf("CN = %q, want edge-01 (the CSR subject is ignored)", cert.Subject.CommonName)
	}
	if len(cert.URIs) != 1 || cert.URIs[0].String() != "spiffe://fleet.example/device/edge-01" {
		t.Errorf("URIs = %v, want [spiffe://fleet.example/device/edge-01]", cert.URIs)
	}
	if len(cert.ExtKeyUsage) != 1 || cert.ExtKeyUsage[0] != x509.ExtKeyUsageClientAuth {
		t.Errorf("ExtKeyUsage = %v, want [clientAuth]", cert.ExtKeyUsage)
	}
	if len(cert.DNSNames)+len(cert.IPAddresses)+len(cert.EmailAddresses) != 0 || cert.IsCA {
		t.Error("device certificate carries extra SANs or is a CA")
	}
	if got := cert.NotAfter.Sub(c.t); got != DefaultDeviceTTL {
		t.Errorf("validity = %v, want %v", got, DefaultDeviceTTL)
	}
	if !key.PublicKey.Equal(cert.PublicKey) {
		t.Error("certificate key is not the CSR key")
	}
	if _, err := cert.Verify(x509.VerifyOptions{Roots: a.Pool(), CurrentTime: c.t, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Errorf("device certificate does not verify: %v", err)
	}
	id, err := a.Identity(cert)
	if err != nil || id.Name != "edge-01" || id.Fleet != "fleet.example" || id.Serial != iss.Serial {
		t.Errorf("Identity = %+v, %v; want edge-01 in fleet.example", id, err)
	}
}

func TestIssueDeviceRejects(t *testing.T) {
	a, _ := newCA(t, "fleet.example")
	pub := &p256(t).PublicKey
	if _, err := a.IssueDevice("Bad_Name", pub, DefaultDeviceTTL); !errors.Is(err, errdefs.ErrInvalid) {
		t.Errorf("IssueDevice(bad name) = %v, want ErrInvalid", err)
	}
	k384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if _, err := a.IssueDevice("ok", &k384.PublicKey, DefaultDeviceTTL); err == nil {
		t.Error("IssueDevice(P-384) succeeded")
	}
	if _, err := a.IssueDevice("ok", pub, time.Minute); err == nil {
		t.Error("IssueDevice(1m TTL) succeeded")
	}
}

func TestParseCSRRejects(t *testing.T) {
	good := newCSR(t, p256(t), "x")
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	k384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	block, _ := pem.Decode(good)
	tampered := append([]byte(nil), block.Bytes...)
	tampered[len(tampered)-3] ^= 0xff // inside the signature
	cases := map[string][]byte{
		"empty":      nil,
		"garbage":    []byte("hello"),
		"wrong type": pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: block.Bytes}),
		"two blocks": append(append([]byte(nil), good...), good...),
		"trailing":   append(append([]byte(nil), good...), "junk"...),
		"rsa":        newCSR(t, rsaKey, "x"),
		"p384":       newCSR(t, k384, "x"),
		"bad sig":    pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: tampered}),
		"oversized":  append(append([]byte(nil), good...), make([]byte, MaxCSRBytes)...),
		"not der":    pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: []byte{1, 2, 3}}),
	}
	for name, in := range cases {
		if _, err := ParseCSR(in); !errors.Is(err, errdefs.ErrInvalid) {
			t.Errorf("ParseCSR(%s) = %v, want ErrInvalid", name, err)
		}
	}
	if _, err := ParseCSR(good); err != nil {
		t.Errorf("ParseCSR(good) = %v", err)
	}
}

func TestIdentityRefusesOtherFleetAndMalformed(t *testing.T) {
	a, _ := newCA(t, "fleet.example")
	b, _ := newCA(t, "other.example")
	iss, err := b.IssueDevice("edge-01", &p256(t).PublicKey, DefaultDeviceTTL)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.Identity(iss.Cert); !errors.Is(err, errdefs.ErrUnauthenticated) {
		t.Errorf("Identity(other fleet) = %v, want ErrUnauthenticated", err)
	}
	// The serving certificate is not a device identity.
	s, err := a.ServingCertificate([]string{"localhost"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.Identity(s.Leaf); err == nil {
		t.Error("Identity(serving cert) succeeded")
	}
	if _, err := a.PeerIdentity(&tls.ConnectionState{}); !errors.Is(err, errdefs.ErrUnauthenticated) {
		t.Errorf("PeerIdentity(unverified) = %v, want ErrUnauthenticated", err)
	}
}

// TestMutualTLS runs real handshakes against the device listener config.
func TestMutualTLS(t *testing.T) {
	a, c := newCA(t, "fleet.example")
	serving, err := a.ServingCertificate([]string{"127.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	srvCfg := a.MutualTLSConfig(serving)
	ln, err := tls.Listen("tcp", "127.0.0.1:0", srvCfg)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	type result struct {
		id  Identity
		err error
	}
	results := make(chan result, 16)
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			tc := conn.(*tls.Conn)
			err = tc.Handshake()
			var r result
			if err == nil {
				cs := tc.ConnectionState()
				r.id, r.err = a.PeerIdentity(&cs)
			} else {
				r.err = err
			}
			tc.Close()
			results <- r
		}
	}()
	dial := func(certs []tls.Certificate) result {
		cfg := &tls.Config{RootCAs: a.Pool(), Certificates: certs, ServerName: "127.0.0.1", Time: c.now}
		conn, err := tls.Dial("tcp", ln.Addr().String(), cfg)
		if err == nil {
			// TLS 1.3 client auth failures surface on the first read.
			_, _ = conn.Read(make([]byte, 1))
			conn.Close()
		}
		return <-results
	}
	devKey := p256(t)
	iss, err := a.IssueDevice("edge-01", &devKey.PublicKey, DefaultDeviceTTL)
	if err != nil {
		t.Fatal(err)
	}
	good := tls.Certificate{Certificate: [][]byte{iss.Cert.Raw}, PrivateKey: devKey}
	if r := dial([]tls.Certificate{good}); r.err != nil || r.id.Name != "edge-01" {
		t.Errorf("handshake with device cert = %+v, want identity edge-01", r)
	}
	if r := dial(nil); r.err == nil {
		t.Error("handshake without client cert succeeded")
	}
	other, _ := newCA(t, "fleet.example") // same fleet name, different CA
	oiss, err := other.IssueDevice("edge-01", &devKey.PublicKey, DefaultDeviceTTL)
	if err != nil {
		t.Fatal(err)
	}
	if r := dial([]tls.Certificate{{Certificate: [][]byte{oiss.Cert.Raw}, PrivateKey: devKey}}); r.err == nil {
		t.Error("handshake with a foreign CA's cert succeeded")
	}
	if r := dial([]tls.Certificate{serving}); r.err == nil {
		t.Error("handshake with the serving cert as client cert succeeded")
	}
	c.t = iss.Cert.NotAfter.Add(time.Minute) // the shared clock drives expiry
	if r := dial([]tls.Certificate{good}); r.err == nil {
		t.Error("handshake with an expired device cert succeeded")
	}
}

func TestServingHostsIPNormalised(t *testing.T) {
	h, err := ParseHosts([]string{"::1", "[::1]", "127.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	if len(h.IPs) != 2 || !h.IPs[0].Equal(net.ParseIP("127.0.0.1")) {
		t.Errorf("ParseHosts IPs = %v, want [127.0.0.1 ::1]", h.IPs)
	}
}
