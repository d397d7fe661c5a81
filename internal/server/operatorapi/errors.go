package operatorapi

import (
	"context"
	"errors"
	"log/slog"
	"net/http"

	"github.com/meshanics/meshanics/internal/errdefs"
	"github.com/meshanics/meshanics/internal/server/httpjson"
)

// statusOf is the one function that maps an error to an HTTP status and the
// message a client may see. Only messages built with errdefs.Invalid,
// Conflict or NotFound (or an *apiError) are shown verbatim; everything else
// gets a generic text for its kind, so internal detail never leaves the
// server.
func statusOf(err error) (int, string) {
	var ae *apiError
	if errors.As(err, &ae) {
		return ae.status, ae.msg
	}
	var mbe *http.MaxBytesError
	if errors.As(err, &mbe) {
		return http.StatusRequestEntityTooLarge, "request body too large"
	}
	msg := errdefs.PublicMessage(err)
	pick := func(generic string) string {
		if msg != "" {
			return msg
		}
		return generic
	}
	switch {
	case errors.Is(err, errdefs.ErrInvalid):
		return http.StatusBadRequest, pick("invalid request")
	case errors.Is(err, errdefs.ErrUnauthenticated):
		return http.StatusUnauthorized, pick("authentication required")
	case errors.Is(err, errdefs.ErrExpired):
		return http.StatusUnauthorized, pick("credential expired")
	case errors.Is(err, errdefs.ErrPermission):
		return http.StatusForbidden, pick("permission denied")
	case errors.Is(err, errdefs.ErrNotFound):
		return http.StatusNotFound, pick("not found")
	case errors.Is(err, errdefs.ErrConflict):
		return http.StatusConflict, pick("conflict")
	case errors.Is(err, errdefs.ErrDecommissioned):
		return http.StatusConflict, pick("device is decommissioned")
	case errors.Is(err, errdefs.ErrUnavailable):
		return http.StatusServiceUnavailable, pick("service unavailable; retry later")
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return http.StatusServiceUnavailable, "request cancelled or timed out; retry"
	}
	return http.StatusInternalServerError, "internal error"
}

// apiError is an error with an explicit status and client-facing message,
// for the few cases the errdefs kinds do not cover (413, 415, 429).
type apiError struct {
	status int
	msg    string
}

func (e *apiError) Error() string { return e.msg }

// errorf returns an error the client sees as status with msg.
func errorf(status int, msg string) error { return &apiError{status: status, msg: msg} }

// writeError answers with the status and {"error": …} body for err. Server
// errors are logged with their full (internal) text; the client gets the
// generic message.
func writeError(log *slog.Logger, w http.ResponseWriter, r *http.Request, err error) {
	status, msg := statusOf(err)
	if status >= 500 {
		log.Error("request failed", "method", r.Method, "path", r.URL.Path, "status", status, "err", err)
	} else {
		log.Debug("request refused", "method", r.Method, "path", r.URL.Path, "status", status, "err", err)
	}
	if status == http.StatusUnauthorized {
		w.Header().Set("WWW-Authenticate", `Bearer realm="meshanics"`)
	}
	httpjson.Write(w, status, errorBody{Error: msg})
}

type errorBody struct {
	Error string `json:"error"`
}
