package deviceapi

import (
	"context"
	"errors"
	"log/slog"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/meshanics/meshanics/internal/errdefs"
)

// The decommission signal of SPEC §3. The agent wipes its identity on this
// exact pair and on nothing weaker, so it is built in one place only.
const (
	ReasonDecommissioned = "DEVICE_DECOMMISSIONED"
	ErrorDomain          = "meshanics"
)

// decommissionedStatus is PERMISSION_DENIED with the ErrorInfo detail.
func decommissionedStatus() *status.Status {
	st := status.New(codes.PermissionDenied, "device decommissioned")
	withInfo, err := st.WithDetails(&errdetails.ErrorInfo{Reason: ReasonDecommissioned, Domain: ErrorDomain})
	if err != nil {
		// WithDetails fails only if the detail cannot be marshalled, which a
		// fixed ErrorInfo can always be.
		panic("deviceapi: build decommission status: " + err.Error())
	}
	return withInfo
}

// toStatus is the one function that turns an error into what a device sees.
// Kinds become codes; the message is the kind's public message or a generic
// text, never the wrapped internal detail (which is logged instead).
func toStatus(log *slog.Logger, method string, err error) error {
	if err == nil {
		return nil
	}
	var pub *publicError
	if errors.As(err, &pub) {
		return pub.st.Err() // built by this package for the client
	}
	var code codes.Code
	msg := errdefs.PublicMessage(err)
	switch {
	case errors.Is(err, errdefs.ErrDecommissioned):
		return decommissionedStatus().Err()
	case errors.Is(err, context.Canceled):
		code, msg = codes.Canceled, "canceled"
	case errors.Is(err, context.DeadlineExceeded):
		code, msg = codes.DeadlineExceeded, "deadline exceeded"
	case errors.Is(err, errdefs.ErrInvalid):
		code = codes.InvalidArgument
	case errors.Is(err, errdefs.ErrNotFound):
		code = codes.NotFound
	case errors.Is(err, errdefs.ErrConflict):
		code = codes.FailedPrecondition
	case errors.Is(err, errdefs.ErrUnauthenticated):
		code = codes.Unauthenticated
	case errors.Is(err, errdefs.ErrPermission):
		code = codes.PermissionDenied
	case errors.Is(err, errdefs.ErrExpired):
		code = codes.FailedPrecondition
	case errors.Is(err, errdefs.ErrUnavailable):
		code = codes.Unavailable
	default:
		code, msg = codes.Internal, "internal error"
	}
	if msg == "" {
		msg = code.String()
	}
	if code == codes.Internal || code == codes.Unavailable {
		log.Error("device rpc failed", "method", method, "err", err)
	} else {
		log.Debug("device rpc refused", "method", method, "code", code.String(), "err", err)
	}
	return status.Error(code, msg)
}

// publicError is a status this package built for the client. Statuses from
// anywhere else are treated as internal errors: a dependency's gRPC error
// must not leak through.
type publicError struct{ st *status.Status }

func (e *publicError) Error() string { return e.st.Message() }

// resourceExhausted is the upload-limit error (SPEC §3: 8 MiB in all).
func resourceExhausted(msg string) error {
	return &publicError{status.New(codes.ResourceExhausted, msg)}
}
