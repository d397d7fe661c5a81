package control

import (
	"context"
	"errors"
	"net"
	"testing"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

func withInfo(t *testing.T, code codes.Code, reason, domain string) error {
	t.Helper()
	st, err := status.New(code, "x").WithDetails(&errdetails.ErrorInfo{Reason: reason, Domain: domain})
	if err != nil {
		t.Fatal(err)
	}
	return st.Err()
}

func TestIsDecommissionedOnlyOnTheExactSignal(t *testing.T) {
	tests := []struct {
		name string
		err  error
		want bool
	}{
		{"signal", withInfo(t, codes.PermissionDenied, ReasonDecommissioned, ErrorDomain), true},
		{"nil", nil, false},
		{"plain permission denied", status.Error(codes.PermissionDenied, "device decommissioned"), false},
		{"unauthenticated with the detail", withInfo(t, codes.Unauthenticated, ReasonDecommissioned, ErrorDomain), false},
		{"other domain", withInfo(t, codes.PermissionDenied, ReasonDecommissioned, "evil"), false},
		{"other reason", withInfo(t, codes.PermissionDenied, "CERT_REVOKED", ErrorDomain), false},
		{"unavailable (TLS failure)", status.Error(codes.Unavailable, "x509: certificate signed by unknown authority"), false},
		{"deadline", status.Error(codes.DeadlineExceeded, "deadline"), false},
		{"context deadline", context.DeadlineExceeded, false},
		{"net error", &net.OpError{Op: "dial", Err: errors.New("refused")}, false},
	}
	for _, tt := range tests {
		if got := IsDecommissioned(tt.err); got != tt.want {
			t.Errorf("IsDecommissioned(%s) = %v, want %v", tt.name, got, tt.want)
		}
	}
}
