package enrollment

import (
	"context"
	"errors"
	"io"
	"mime"
	"net/http"

	"github.com/meshanics/meshanics/internal/errdefs"
	"github.com/meshanics/meshanics/internal/server/httpjson"
	"github.com/meshanics/meshanics/internal/server/operatorapi/ratelimit"
)

// Handler serves POST /api/v1/enroll. There is no operator authentication:
// the token is the credential. limiter bounds requests per client address
// (nil = no limit, for tests only).
func (s *Service) Handler(limiter *ratelimit.Limiter) http.Handler {
	h := http.HandlerFunc(s.serveEnroll)
	if limiter == nil {
		return h
	}
	return limiter.Middleware(h)
}

func (s *Service) serveEnroll(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		httpjson.Write(w, http.StatusMethodNotAllowed, errorBody{"use POST"})
		return
	}
	if ct := r.Header.Get("Content-Type"); ct != "" {
		if mt, _, err := mime.ParseMediaType(ct); err != nil || mt != "application/json" {
			httpjson.Write(w, http.StatusUnsupportedMediaType, errorBody{"request body must be application/json"})
			return
		}
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxRequestBytes))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			httpjson.Write(w, http.StatusRequestEntityTooLarge, errorBody{"request body too large"})
			return
		}
		httpjson.Write(w, http.StatusBadRequest, errorBody{"cannot read request body"})
		return
	}
	req, err := ParseRequest(body)
	if err == nil {
		var resp Response
		resp, err = s.Enroll(r.Context(), req)
		if err == nil {
			httpjson.Write(w, http.StatusCreated, resp)
			return
		}
	} else {
		s.enrollments.WithLabelValues("invalid").Inc()
	}
	status, msg := statusOf(err)
	if status >= 500 {
		s.log.Error("enrollment failed", "err", err)
	}
	httpjson.Write(w, status, errorBody{msg})
}

// statusOf maps enrollment errors to the statuses of SPEC §2: 400 bad CSR
// or name, 401 token, 409 name taken. Only client-safe messages are shown.
func statusOf(err error) (int, string) {
	msg := errdefs.PublicMessage(err)
	pick := func(generic string) string {
		if msg != "" {
			return msg
		}
		return generic
	}
	switch {
	case errors.Is(err, errdefs.ErrInvalid):
		return http.StatusBadRequest, pick("invalid enrollment request")
	case errors.Is(err, errdefs.ErrUnauthenticated):
		return http.StatusUnauthorized, tokenRejectedMsg
	case errors.Is(err, errdefs.ErrConflict):
		return http.StatusConflict, pick("device name is taken") + " (mint a token with replace=true to recover a wiped device)"
	case errors.Is(err, errdefs.ErrUnavailable):
		return http.StatusServiceUnavailable, "enrollment is unavailable; retry later"
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return http.StatusServiceUnavailable, "request cancelled or timed out; retry"
	}
	return http.StatusInternalServerError, "internal error"
}

type errorBody struct {
	Error string `json:"error"`
}
