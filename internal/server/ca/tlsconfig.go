package ca

import (
	"crypto/tls"
	"fmt"
)

// WebTLSConfig is the server-auth TLS of the web listener (console, REST,
// enrollment, installer, downloads). No client certificate is asked for.
func (a *Authority) WebTLSConfig(serving tls.Certificate) *tls.Config {
	// Present the fleet CA after the leaf: clients that pin it by
	// fingerprint (meshctl -ca-pin, meshanics-agent enroll -ca-pin without
	// a CA file) find the pinned root in the chain and verify against it.
	serving.Certificate = append(serving.Certificate[:len(serving.Certificate):len(serving.Certificate)], a.cert.Raw)
	return &tls.Config{
		MinVersion:   tls.VersionTLS12,
		Certificates: []tls.Certificate{serving},
		NextProtos:   []string{"h2", "http/1.1"},
		Time:         a.now,
	}
}

// MutualTLSConfig is the TLS of the device and repository listeners: a
// client certificate issued by the fleet CA is required and verified with the
// authority's clock, and the handshake fails unless the leaf is a
// well-formed device certificate of this fleet. Revocation (decommissioned
// or replaced certificates) is the business of the handlers, which look the
// identity up.
func (a *Authority) MutualTLSConfig(serving tls.Certificate, nextProtos ...string) *tls.Config {
	return &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{serving},
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ClientCAs:    a.Pool(),
		NextProtos:   nextProtos,
		Time:         a.now,
		VerifyConnection: func(cs tls.ConnectionState) error {
			if _, err := a.PeerIdentity(&cs); err != nil {
				return fmt.Errorf("client certificate: %w", err)
			}
			return nil
		},
	}
}
