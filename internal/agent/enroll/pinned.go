package enroll

import (
	"bytes"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"time"
)

// ErrPinMismatch means the server did not prove a chain to the pinned CA.
var ErrPinMismatch = errors.New("server certificate does not chain to the pinned CA")

// PinnedTLSConfig returns a client TLS config for first contact: the only
// trusted root is the certificate whose DER hashes to pin, taken from
// known (a CA the caller already holds, e.g. the installer's copy; may be
// nil) or else from the chain the server presents, and the leaf must be a
// valid server certificate for serverName under it.
//
// Go's default verification is replaced, not skipped: the system roots must
// not be trusted here (any public CA could then vouch for an impostor), and
// the pinned root is only known once the handshake shows it.
// VerifyConnection performs the full x509 verification against that one
// root, so a handshake completes only for the pinned fleet.
func PinnedTLSConfig(pin [32]byte, known *x509.Certificate, serverName string, now func() time.Time) *tls.Config {
	return &tls.Config{
		MinVersion:         tls.VersionTLS12,
		ServerName:         serverName,
		InsecureSkipVerify: true, // replaced by VerifyConnection below (pinned root, hostname, usage)
		Time:               now,
		VerifyConnection: func(cs tls.ConnectionState) error {
			_, err := VerifyPinnedChain(cs.PeerCertificates, pin, known, serverName, now())
			return err
		},
	}
}

// VerifyPinnedChain verifies certs (leaf first) against the certificate
// whose sha256 equals pin (known, or one of certs[1:]), for serverName at
// now, and returns that CA.
func VerifyPinnedChain(certs []*x509.Certificate, pin [32]byte, known *x509.Certificate, serverName string, now time.Time) (*x509.Certificate, error) {
	if len(certs) == 0 {
		return nil, fmt.Errorf("%w: no certificate presented", ErrPinMismatch)
	}
	var root *x509.Certificate
	if known != nil && sha256.Sum256(known.Raw) == pin {
		root = known
	}
	inter := x509.NewCertPool()
	for _, c := range certs[1:] {
		if sha256.Sum256(c.Raw) == pin {
			if root == nil {
				root = c
			}
			continue
		}
		inter.AddCert(c)
	}
	if root == nil {
		if sha256.Sum256(certs[0].Raw) == pin && bytes.Equal(certs[0].RawIssuer, certs[0].RawSubject) {
			return nil, fmt.Errorf("%w: the server presents the CA itself as its certificate", ErrPinMismatch)
		}
		return nil, fmt.Errorf("%w: no presented certificate matches the pin", ErrPinMismatch)
	}
	if !root.IsCA {
		return nil, fmt.Errorf("%w: the pinned certificate is not a CA", ErrPinMismatch)
	}
	roots := x509.NewCertPool()
	roots.AddCert(root)
	if _, err := certs[0].Verify(x509.VerifyOptions{
		Roots:         roots,
		Intermediates: inter,
		DNSName:       serverName,
		CurrentTime:   now,
		KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrPinMismatch, err)
	}
	return root, nil
}
