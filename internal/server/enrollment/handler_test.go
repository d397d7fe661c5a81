package enrollment

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/meshanics/meshanics/internal/server/operatorapi/ratelimit"
)

func post(t *testing.T, h http.Handler, body string) *httptest.ResponseRecorder {
	t.Helper()
	req := httptest.NewRequest(http.MethodPost, "/api/v1/enroll", strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.RemoteAddr = "192.0.2.7:40000"
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec
}

func body(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestHandlerStatuses(t *testing.T) {
	forEachEngine(t, func(t *testing.T, e env) {
		h := e.svc.Handler(nil)
		k := newKey(t)
		tok := e.mint(t, TokenOptions{})
		rec := post(t, h, body(t, Request{Token: tok, Name: "edge-01", CSRPEM: csrPEM(t, k), Hardware: json.RawMessage(`{"arch":"amd64"}`)}))
		if rec.Code != http.StatusCreated {
			t.Fatalf("enroll = %d %s, want 201", rec.Code, rec.Body)
		}
		var got map[string]json.RawMessage
		if err := json.Unmarshal(rec.Body.Bytes(), &got); err != nil {
			t.Fatal(err)
		}
		for _, k := range []string{"device", "fleet", "certificate_pem", "ca_pem", "trust_anchor", "config"} {
			if _, ok := got[k]; !ok {
				t.Errorf("response lacks %q: %s", k, rec.Body)
			}
		}
		cases := []struct {
			name string
			body string
			want int
		}{
			{"spent token", body(t, Request{Token: tok, Name: "edge-02", CSRPEM: csrPEM(t, newKey(t))}), http.StatusUnauthorized},
			{"bad name", body(t, Request{Token: e.mint(t, TokenOptions{}), Name: "-x", CSRPEM: csrPEM(t, newKey(t))}), http.StatusBadRequest},
			{"bad csr", body(t, Request{Token: e.mint(t, TokenOptions{}), Name: "edge-03", CSRPEM: "nope"}), http.StatusBadRequest},
			{"name taken", body(t, Request{Token: e.mint(t, TokenOptions{}), Name: "edge-01", CSRPEM: csrPEM(t, newKey(t))}), http.StatusConflict},
			{"unknown field", `{"token":"x","name":"a","csr_pem":"x","device":"other"}`, http.StatusBadRequest},
			{"not json", `hello`, http.StatusBadRequest},
			{"too large", `{"token":"` + strings.Repeat("a", MaxRequestBytes) + `"}`, http.StatusRequestEntityTooLarge},
		}
		for _, c := range cases {
			rec := post(t, h, c.body)
			if rec.Code != c.want {
				t.Errorf("%s: status %d %s, want %d", c.name, rec.Code, rec.Body, c.want)
			}
			var eb errorBody
			if err := json.Unmarshal(rec.Body.Bytes(), &eb); err != nil || eb.Error == "" {
				t.Errorf("%s: body %q is not {\"error\":…}", c.name, rec.Body)
			}
		}
		req := httptest.NewRequest(http.MethodGet, "/api/v1/enroll", nil)
		rec = httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code != http.StatusMethodNotAllowed {
			t.Errorf("GET = %d, want 405", rec.Code)
		}
	})
}

func TestHandlerRateLimited(t *testing.T) {
	forEachEngine(t, func(t *testing.T, e env) {
		lim := ratelimit.New(ratelimit.Config{Burst: 2, Rate: 0.001, Now: func() time.Time { return e.clock.Now() }})
		h := e.svc.Handler(lim)
		var codes []int
		for range 3 {
			codes = append(codes, post(t, h, `{}`).Code)
		}
		if codes[0] == http.StatusTooManyRequests || codes[2] != http.StatusTooManyRequests {
			t.Errorf("statuses = %v, want the third refused with 429", codes)
		}
	})
}

func TestRequestLogValueRedacts(t *testing.T) {
	r := Request{Token: "mst_secret", Name: "edge", CSRPEM: "CSRDATA"}
	var buf bytes.Buffer
	v := r.LogValue().String()
	buf.WriteString(v)
	if strings.Contains(buf.String(), "mst_secret") || strings.Contains(buf.String(), "CSRDATA") {
		t.Errorf("LogValue = %s, leaks the token or CSR", v)
	}
}
