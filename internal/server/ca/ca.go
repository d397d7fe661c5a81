// Package ca is the fleet certificate authority of the control plane: it
// creates and loads the fleet CA and the serving certificate under
// <data>/pki/, issues device certificates from CSRs (SPEC §2), builds the TLS
// configurations of the three listeners, and is the one place where a
// verified peer certificate becomes a device identity.
//
// Only the server composition root, enrollment and deviceapi import it.
// An *Authority is safe for concurrent use once loaded.
package ca

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"time"

	"github.com/meshanics/meshanics/internal/atomicfile"
)

// File names under the PKI directory.
const (
	CACertFile     = "ca.pem"
	CAKeyFile      = "ca.key"
	ServerCertFile = "server.pem"
	ServerKeyFile  = "server.key"
)

// caValidity is long: rotating the fleet CA means re-enrolling every device.
const caValidity = 20 * 365 * 24 * time.Hour

// fleetRE is the SPIFFE trust-domain alphabet.
var fleetRE = regexp.MustCompile(`^[a-z0-9]([a-z0-9._-]{0,253}[a-z0-9])?$`)

// ValidateFleet checks a fleet name (a SPIFFE trust domain such as fleet.example).
func ValidateFleet(f string) error {
	if !fleetRE.MatchString(f) {
		return fmt.Errorf("invalid fleet name %q: want a trust domain such as fleet.example (lower-case letters, digits, '.', '-', '_')", f)
	}
	return nil
}

// Authority holds the fleet CA. Its fields never change after Load.
type Authority struct {
	dir    string
	fleet  string
	cert   *x509.Certificate
	key    *ecdsa.PrivateKey
	pem    []byte
	now    func() time.Time
	pool   *x509.CertPool
	finger string
}

// Exists reports whether dir already holds a fleet CA.
func Exists(dir string) (bool, error) {
	_, err := os.Stat(filepath.Join(dir, CACertFile))
	if err == nil {
		return true, nil
	}
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	return false, fmt.Errorf("stat fleet CA: %w", err)
}

// Create makes a new fleet CA for fleet in dir (created 0700 if missing). It
// refuses to overwrite an existing CA.
func Create(dir, fleet string, now func() time.Time) (*Authority, error) {
	if err := ValidateFleet(fleet); err != nil {
		return nil, err
	}
	if ok, err := Exists(dir); err != nil {
		return nil, err
	} else if ok {
		return nil, fmt.Errorf("create fleet CA: %s already holds one", dir)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("create pki dir: %w", err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate CA key: %w", err)
	}
	serial, err := newSerial()
	if err != nil {
		return nil, err
	}
	t := now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: "Meshanics fleet CA " + fleet, Organization: []string{"Meshanics"}},
		NotBefore:             t.Add(-5 * time.Minute),
		NotAfter:              t.Add(caValidity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
		URIs:                  []*url.URL{{Scheme: "spiffe", Host: fleet}},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, fmt.Errorf("sign CA certificate: %w", err)
	}
	// Key first: a CA cert without its key would make Exists lie.
	if err := writeKey(filepath.Join(dir, CAKeyFile), key); err != nil {
		return nil, err
	}
	if err := atomicfile.WriteFile(filepath.Join(dir, CACertFile), encodeCert(der), 0o644); err != nil {
		return nil, err
	}
	return Load(dir, now)
}

// Load reads the fleet CA from dir.
func Load(dir string, now func() time.Time) (*Authority, error) {
	certPEM, err := os.ReadFile(filepath.Join(dir, CACertFile))
	if err != nil {
		return nil, fmt.Errorf("read CA certificate: %w", err)
	}
	cert, err := parseCertPEM(certPEM)
	if err != nil {
		return nil, fmt.Errorf("CA certificate: %w", err)
	}
	key, err := readKey(filepath.Join(dir, CAKeyFile))
	if err != nil {
		return nil, fmt.Errorf("CA key: %w", err)
	}
	if !key.PublicKey.Equal(cert.PublicKey) {
		return nil, fmt.Errorf("CA key does not match %s", CACertFile)
	}
	if !cert.IsCA || len(cert.URIs) != 1 || cert.URIs[0].Scheme != "spiffe" {
		return nil, fmt.Errorf("%s is not a Meshanics fleet CA (want a CA with one spiffe://<fleet> URI)", CACertFile)
	}
	fleet := cert.URIs[0].Host
	if err := ValidateFleet(fleet); err != nil {
		return nil, fmt.Errorf("CA certificate: %w", err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	sum := sha256.Sum256(cert.Raw)
	return &Authority{
		dir:    dir,
		fleet:  fleet,
		cert:   cert,
		key:    key,
		pem:    encodeCert(cert.Raw),
		now:    now,
		pool:   pool,
		finger: "sha256:" + hex.EncodeToString(sum[:]),
	}, nil
}

// Fleet is the trust domain the CA speaks for.
func (a *Authority) Fleet() string { return a.fleet }

// CertPEM is the CA bundle devices pin (ca.pem).
func (a *Authority) CertPEM() []byte { return append([]byte(nil), a.pem...) }

// Certificate is the CA certificate.
func (a *Authority) Certificate() *x509.Certificate { return a.cert }

// Pool is a pool holding only the fleet CA.
func (a *Authority) Pool() *x509.CertPool { return a.pool.Clone() }

// Fingerprint is "sha256:<hex of the CA certificate's DER>", the pin of the
// install command.
func (a *Authority) Fingerprint() string { return a.finger }

// Fingerprint computes the pin of any certificate's DER bytes.
func Fingerprint(der []byte) string {
	sum := sha256.Sum256(der)
	return "sha256:" + hex.EncodeToString(sum[:])
}

func newSerial() (*big.Int, error) {
	s, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, fmt.Errorf("serial: %w", err)
	}
	return s.Add(s, big.NewInt(1)), nil
}
