package operatorapi

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"

	"github.com/meshanics/meshanics/internal/errdefs"
	"github.com/meshanics/meshanics/internal/server/operatorapi/ratelimit"
)

// Body size limits. Every route that reads a body bounds it; routes that
// take uploads (artifacts) set their own, larger limit.
const (
	// MaxJSONBody bounds ordinary JSON request bodies.
	MaxJSONBody = 64 << 10
	// maxEmptyBody bounds bodies of routes that take none (POST …/decommission):
	// a small JSON object such as {} is accepted, anything larger refused.
	maxEmptyBody = 1 << 10
)

// decodeJSON reads r's body (at most limit bytes; 0 = MaxJSONBody) into v.
// Unknown fields, trailing data, a wrong content type or an oversized body are
// errors the client sees as 400/413/415. Nothing may be changed before it
// returns nil.
func decodeJSON(w http.ResponseWriter, r *http.Request, limit int64, v any) error {
	if limit <= 0 {
		limit = MaxJSONBody
	}
	if ct := r.Header.Get("Content-Type"); ct != "" {
		mt, _, err := mime.ParseMediaType(ct)
		if err != nil || mt != "application/json" {
			return errorf(http.StatusUnsupportedMediaType, "request body must be application/json")
		}
	}
	body := http.MaxBytesReader(w, r.Body, limit)
	dec := json.NewDecoder(body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return jsonError(err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return err
		}
		return errdefs.Invalid("request body must be a single JSON object")
	}
	return nil
}

// jsonError turns a decoder error into a client-safe one.
func jsonError(err error) error {
	var (
		mbe *http.MaxBytesError
		se  *json.SyntaxError
		te  *json.UnmarshalTypeError
	)
	switch {
	case errors.As(err, &mbe):
		return err
	case errors.Is(err, io.EOF):
		return errdefs.Invalid("request body is empty; want a JSON object")
	case errors.As(err, &se), errors.Is(err, io.ErrUnexpectedEOF):
		return errdefs.Invalid("request body is not valid JSON")
	case errors.As(err, &te):
		if te.Field != "" {
			return errdefs.Invalid(fmt.Sprintf("field %q has the wrong type (want %s)", te.Field, te.Type))
		}
		return errdefs.Invalid("request body has the wrong shape")
	}
	// "json: unknown field \"x\"" is the only other decoder error and names
	// nothing internal.
	if msg := err.Error(); len(msg) < 200 {
		return errdefs.Invalid(msg)
	}
	return errdefs.Invalid("request body is not valid")
}

// decodeOptionalJSON is decodeJSON for routes whose body may be absent: an
// empty body leaves v unchanged.
func decodeOptionalJSON(w http.ResponseWriter, r *http.Request, limit int64, v any) error {
	if r.ContentLength == 0 && len(r.TransferEncoding) == 0 {
		return nil
	}
	if limit <= 0 {
		limit = MaxJSONBody
	}
	raw, err := io.ReadAll(http.MaxBytesReader(w, r.Body, limit))
	if err != nil {
		return err
	}
	if len(bytes.TrimSpace(raw)) == 0 {
		return nil
	}
	r.Body = io.NopCloser(bytes.NewReader(raw))
	return decodeJSON(w, r, limit, v)
}

// decodeOptionalBody bounds the body of a route that takes none: up to
// maxEmptyBody bytes are read and ignored, more is refused (413).
func decodeOptionalBody(w http.ResponseWriter, r *http.Request) ([]byte, error) {
	return io.ReadAll(http.MaxBytesReader(w, r.Body, maxEmptyBody))
}

// writeNoContent answers 204.
func writeNoContent(w http.ResponseWriter) { w.WriteHeader(http.StatusNoContent) }

// remoteIP is the client address recorded in audit data.
func remoteIP(r *http.Request) string { return ratelimit.AddressKey(r) }
