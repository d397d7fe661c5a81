// Package control is the agent's client side of the device API (SPEC §3):
// the mutual-TLS configuration, the one long-lived gRPC connection with
// keepalive, and the recognition of the decommission signal.
//
// Imported by internal/agent only (and tests).
package control

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/status"
)

// The decommission signal (SPEC §3): PERMISSION_DENIED carrying a
// google.rpc.ErrorInfo with exactly this reason and domain.
const (
	ReasonDecommissioned = "DEVICE_DECOMMISSIONED"
	ErrorDomain          = "meshanics"
)

// IsDecommissioned reports whether err is the decommission signal. Nothing
// weaker counts: a PERMISSION_DENIED without the detail, UNAUTHENTICATED, a
// TLS failure or a timeout all return false, so they never wipe anything.
func IsDecommissioned(err error) bool {
	if err == nil {
		return false
	}
	st, ok := status.FromError(err)
	if !ok || st.Code() != codes.PermissionDenied {
		return false
	}
	for _, d := range st.Details() {
		if info, ok := d.(*errdetails.ErrorInfo); ok && info.GetReason() == ReasonDecommissioned && info.GetDomain() == ErrorDomain {
			return true
		}
	}
	return false
}

// IsTransient reports whether err only says the device API could not be
// reached or did not answer in time (no connection, a deadline, load
// shedding): the device's record and registration still stand, so the
// agent retries with a heartbeat rather than registering again.
func IsTransient(err error) bool {
	switch status.Code(err) {
	case codes.Unavailable, codes.DeadlineExceeded, codes.ResourceExhausted:
		return true
	}
	return errors.Is(err, context.DeadlineExceeded)
}

// ClientCertSource gives TLS the current device certificate on each
// handshake (identity.Store implements it), so a renewed certificate is
// used without rebuilding the connection.
type ClientCertSource interface {
	GetClientCertificate(*tls.CertificateRequestInfo) (*tls.Certificate, error)
}

// TLSConfig is the device side of the mutual TLS: the fleet CA is the only
// root, the server name is checked, the client certificate comes from certs.
// now feeds certificate validity checks (the agent's clock).
func TLSConfig(server string, roots *x509.CertPool, certs ClientCertSource, now func() time.Time) (*tls.Config, error) {
	host, _, err := net.SplitHostPort(server)
	if err != nil {
		return nil, fmt.Errorf("server address: %w", err)
	}
	if roots == nil {
		return nil, errors.New("no CA roots")
	}
	return &tls.Config{
		MinVersion:           tls.VersionTLS13,
		RootCAs:              roots,
		ServerName:           host,
		GetClientCertificate: certs.GetClientCertificate,
		Time:                 now,
	}, nil
}

// Keepalive: ping an idle connection every minute (the server permits
// pings without streams from 10 s on), give up after 20 s of silence, so a
// dead path is noticed and redialled between heartbeats.
var keepaliveParams = keepalive.ClientParameters{
	Time:                time.Minute,
	Timeout:             20 * time.Second,
	PermitWithoutStream: true,
}

// MaxRecvMsgSize bounds what the agent accepts from the server in one
// message (a heartbeat response with many assignments is well below).
const MaxRecvMsgSize = 4 << 20

// Dial builds the one long-lived connection to server. It does not block:
// the connection is made on first use and re-made by gRPC after failures.
func Dial(server string, tlsConf *tls.Config, extra ...grpc.DialOption) (*grpc.ClientConn, error) {
	opts := append([]grpc.DialOption{
		grpc.WithTransportCredentials(credentials.NewTLS(tlsConf)),
		grpc.WithKeepaliveParams(keepaliveParams),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(MaxRecvMsgSize)),
		grpc.WithUserAgent("meshanics-agent"),
	}, extra...)
	conn, err := grpc.NewClient("passthrough:///"+server, opts...)
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", server, err)
	}
	return conn, nil
}
