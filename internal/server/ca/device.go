package ca

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/meshanics/meshanics/internal/errdefs"
	"github.com/meshanics/meshanics/internal/names"
)

// MaxCSRBytes bounds a CSR PEM accepted from a device. A P-256 CSR is well
// under 1 KiB; the slack allows for ordinary subject fields.
const MaxCSRBytes = 8 << 10

// Device certificate TTL bounds.
const (
	DefaultDeviceTTL = 90 * 24 * time.Hour
	MinDeviceTTL     = time.Hour
	MaxDeviceTTL     = 5 * 365 * 24 * time.Hour
)

// ParseCSR decodes and checks a device CSR: exactly one PEM block of type
// CERTIFICATE REQUEST, at most MaxCSRBytes, a valid self-signature (proof
// of possession) and an ECDSA P-256 public key. The CSR's subject and
// extensions are ignored: the CA decides what goes into the certificate.
// Errors wrap errdefs.ErrInvalid and are safe to show to the client.
func ParseCSR(csrPEM []byte) (*ecdsa.PublicKey, error) {
	if len(csrPEM) == 0 {
		return nil, errdefs.Invalid("csr_pem is empty")
	}
	if len(csrPEM) > MaxCSRBytes {
		return nil, errdefs.Invalid(fmt.Sprintf("csr_pem is larger than %d bytes", MaxCSRBytes))
	}
	block, rest := pem.Decode(csrPEM)
	if block == nil || block.Type != "CERTIFICATE REQUEST" {
		return nil, errdefs.Invalid("csr_pem must hold one PEM block of type CERTIFICATE REQUEST")
	}
	if len(bytes.TrimSpace(rest)) != 0 {
		return nil, errdefs.Invalid("csr_pem must hold exactly one PEM block")
	}
	csr, err := x509.ParseCertificateRequest(block.Bytes)
	if err != nil {
		return nil, errdefs.Invalid("csr_pem does not parse as a certificate request")
	}
	pub, ok := csr.PublicKey.(*ecdsa.PublicKey)
	if !ok || pub.Curve != elliptic.P256() {
		return nil, errdefs.Invalid("the CSR key must be ECDSA P-256")
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, errdefs.Invalid("the CSR signature does not verify")
	}
	return pub, nil
}

// SPIFFEID is the URI SAN of a device certificate.
func SPIFFEID(fleet, name string) *url.URL {
	return &url.URL{Scheme: "spiffe", Host: fleet, Path: "/device/" + name}
}

// Issued is a freshly signed device certificate.
type Issued struct {
	PEM    []byte
	Cert   *x509.Certificate
	Serial string // lower-case hex, the revocation handle
}

// IssueDevice signs a certificate for device name over pub, valid for ttl
// from the authority's clock: CN=name, one URI SAN spiffe://<fleet>/device/<name>,
// ExtKeyUsage clientAuth only.
func (a *Authority) IssueDevice(name string, pub *ecdsa.PublicKey, ttl time.Duration) (Issued, error) {
	if err := names.ValidateDevice(name); err != nil {
		return Issued{}, errdefs.Invalid(err.Error())
	}
	if pub == nil || pub.Curve != elliptic.P256() {
		return Issued{}, errdefs.Invalid("device key must be ECDSA P-256")
	}
	if ttl < MinDeviceTTL || ttl > MaxDeviceTTL {
		return Issued{}, fmt.Errorf("device certificate TTL %v outside [%v, %v]", ttl, MinDeviceTTL, MaxDeviceTTL)
	}
	serial, err := newSerial()
	if err != nil {
		return Issued{}, err
	}
	now := a.now()
	notAfter := now.Add(ttl)
	if notAfter.After(a.cert.NotAfter) {
		notAfter = a.cert.NotAfter
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: name},
		NotBefore:    now.Add(-5 * time.Minute),
		NotAfter:     notAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		URIs:         []*url.URL{SPIFFEID(a.fleet, name)},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, a.cert, pub, a.key)
	if err != nil {
		return Issued{}, fmt.Errorf("sign device certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return Issued{}, fmt.Errorf("parse device certificate: %w", err)
	}
	return Issued{PEM: encodeCert(der), Cert: cert, Serial: SerialHex(cert)}, nil
}

// SerialHex is the serial number of cert as lower-case hex.
func SerialHex(cert *x509.Certificate) string {
	return hex.EncodeToString(cert.SerialNumber.Bytes())
}

// Identity is a device identity taken from a verified certificate.
type Identity struct {
	Fleet  string
	Name   string
	Serial string
	Cert   *x509.Certificate
}

// ParseIdentity reads (fleet, name) from a device certificate's structure:
// exactly one URI SAN spiffe://<fleet>/device/<name>, CN equal to the name,
// clientAuth usage. It does NOT verify the chain; use PeerIdentity on a
// verified connection.
func ParseIdentity(cert *x509.Certificate) (fleet, name string, err error) {
	if cert == nil {
		return "", "", errors.New("no certificate")
	}
	if len(cert.URIs) != 1 {
		return "", "", fmt.Errorf("device certificate must carry exactly one URI SAN, has %d", len(cert.URIs))
	}
	u := cert.URIs[0]
	if u.Scheme != "spiffe" || u.User != nil || u.RawQuery != "" || u.Fragment != "" || u.Opaque != "" || u.Port() != "" {
		return "", "", errors.New("device certificate URI SAN is not a plain spiffe:// ID")
	}
	fleet = u.Host
	if err := ValidateFleet(fleet); err != nil {
		return "", "", err
	}
	name, ok := strings.CutPrefix(u.Path, "/device/")
	if !ok {
		return "", "", errors.New("device certificate URI SAN path must be /device/<name>")
	}
	if err := names.ValidateDevice(name); err != nil {
		return "", "", err
	}
	if cert.Subject.CommonName != name {
		return "", "", errors.New("device certificate CN does not match its SPIFFE ID")
	}
	if !slices.Contains(cert.ExtKeyUsage, x509.ExtKeyUsageClientAuth) || cert.IsCA {
		return "", "", errors.New("device certificate is not a client certificate")
	}
	return fleet, name, nil
}

// Identity returns the device identity of a certificate already verified
// against this CA, refusing one of another fleet.
func (a *Authority) Identity(cert *x509.Certificate) (Identity, error) {
	fleet, name, err := ParseIdentity(cert)
	if err != nil {
		return Identity{}, fmt.Errorf("%w: %v", errdefs.ErrUnauthenticated, err)
	}
	if fleet != a.fleet {
		return Identity{}, fmt.Errorf("%w: certificate of fleet %q, this is %q", errdefs.ErrUnauthenticated, fleet, a.fleet)
	}
	return Identity{Fleet: fleet, Name: name, Serial: SerialHex(cert), Cert: cert}, nil
}

// PeerIdentity is the ONLY way a device identity is derived on the server:
// from the leaf of the chain the TLS stack verified against the fleet CA.
// A connection without a verified chain has no identity.
func (a *Authority) PeerIdentity(cs *tls.ConnectionState) (Identity, error) {
	if cs == nil || len(cs.VerifiedChains) == 0 || len(cs.VerifiedChains[0]) == 0 {
		return Identity{}, fmt.Errorf("%w: no verified client certificate", errdefs.ErrUnauthenticated)
	}
	chain := cs.VerifiedChains[0]
	if !chain[len(chain)-1].Equal(a.cert) {
		return Identity{}, fmt.Errorf("%w: client certificate not issued by the fleet CA", errdefs.ErrUnauthenticated)
	}
	return a.Identity(chain[0])
}
