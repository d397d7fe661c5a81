// Package testca is a throwaway fleet CA for the agent's tests: it issues
// serving and device certificates shaped like the server's (SPEC §2). Test
// code only.
package testca

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"net/url"
	"sync/atomic"
	"testing"
	"time"
)

// CA is a test fleet CA.
type CA struct {
	Cert  *x509.Certificate
	Key   *ecdsa.PrivateKey
	PEM   []byte
	Fleet string
}

var serial atomic.Int64

// New makes a CA valid from now-1h for 10 years.
func New(t testing.TB) *CA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(serial.Add(1)),
		Subject:               pkix.Name{CommonName: "test fleet CA"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(10 * 365 * 24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	return &CA{Cert: cert, Key: key, PEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), Fleet: "fleet.test"}
}

// Pin is the CA's sha256 DER fingerprint.
func (ca *CA) Pin() [32]byte { return sha256.Sum256(ca.Cert.Raw) }

// Pool returns a pool holding only this CA.
func (ca *CA) Pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(ca.Cert)
	return p
}

// Serving issues a server certificate for 127.0.0.1 and localhost; the
// chain includes the CA so clients can pin it.
func (ca *CA) Serving(t testing.TB) tls.Certificate {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	now := time.Now()
	der, err := x509.CreateCertificate(rand.Reader, &x509.Certificate{
		SerialNumber: big.NewInt(serial.Add(1)),
		Subject:      pkix.Name{CommonName: "localhost"},
		DNSNames:     []string{"localhost"},
		IPAddresses:  []net.IP{net.ParseIP("127.0.0.1")},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(365 * 24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}, ca.Cert, &key.PublicKey, ca.Key)
	if err != nil {
		t.Fatal(err)
	}
	leaf, _ := x509.ParseCertificate(der)
	return tls.Certificate{Certificate: [][]byte{der, ca.Cert.Raw}, PrivateKey: key, Leaf: leaf}
}

// Device issues a device certificate for pub shaped as SPEC §2.
func (ca *CA) Device(t testing.TB, name string, pub *ecdsa.PublicKey, notBefore time.Time, ttl time.Duration) []byte {
	t.Helper()
	b, err := ca.IssueDevice(name, pub, notBefore, ttl)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// IssueDevice is Device without a testing.TB, for fake servers' goroutines.
func (ca *CA) IssueDevice(name string, pub *ecdsa.PublicKey, notBefore time.Time, ttl time.Duration) ([]byte, error) {
	u, _ := url.Parse("spiffe://" + ca.Fleet + "/device/" + name)
	der, err := x509.CreateCertificate(rand.Reader, &x509.Certificate{
		SerialNumber: big.NewInt(serial.Add(1)),
		Subject:      pkix.Name{CommonName: name},
		URIs:         []*url.URL{u},
		NotBefore:    notBefore,
		NotAfter:     notBefore.Add(ttl),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}, ca.Cert, pub, ca.Key)
	if err != nil {
		return nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), nil
}

// SignCSR issues a device certificate for the key in a PEM CSR.
func (ca *CA) SignCSR(csrPEM []byte, notBefore time.Time, ttl time.Duration) ([]byte, error) {
	blk, _ := pem.Decode(csrPEM)
	if blk == nil {
		return nil, errNoPEM
	}
	csr, err := x509.ParseCertificateRequest(blk.Bytes)
	if err != nil {
		return nil, err
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, err
	}
	pub, ok := csr.PublicKey.(*ecdsa.PublicKey)
	if !ok {
		return nil, errNoPEM
	}
	return ca.IssueDevice(csr.Subject.CommonName, pub, notBefore, ttl)
}

type constErr string

func (e constErr) Error() string { return string(e) }

const errNoPEM = constErr("bad csr")
