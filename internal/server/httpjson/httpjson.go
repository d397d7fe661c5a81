// Package httpjson writes the JSON responses of the server's HTTP endpoints
// (the operator API and the unauthenticated enrollment endpoint) with the
// same headers everywhere. Imported by internal/server/… only.
package httpjson

import (
	"bytes"
	"encoding/json"
	"net/http"
)

// Write answers with status and v encoded as one line of JSON. An encoding
// failure becomes a 500 with a generic error body, never a partial document.
func Write(w http.ResponseWriter, status int, v any) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		status = http.StatusInternalServerError
		buf.Reset()
		buf.WriteString(`{"error":"internal error"}` + "\n")
	}
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	_, _ = w.Write(buf.Bytes())
}
