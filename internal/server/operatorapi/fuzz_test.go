package operatorapi

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/meshanics/meshanics/internal/server/store/storetest"
)

// fuzzRoutes are the routes whose bodies FuzzRequestBodies feeds.
var fuzzRoutes = []string{
	"/api/v1/enrollment-tokens",
	"/api/v1/users",
	"/api/v1/api-keys",
	"/login",
	"/api/v1/devices/dev1/log-requests",
}

// FuzzRequestBodies posts arbitrary bytes to every JSON route of the API
// (real handler, real SQLite store) and checks the promises of SPEC §13: no
// server error, a JSON error body on refusal, and a refused request changes
// nothing (the audit chain does not move).
func FuzzRequestBodies(f *testing.F) {
	for i := range fuzzRoutes {
		for _, s := range []string{``, `{}`, `null`, `[]`, `{"uses":1}`, `{"name":"a","role":"viewer","password":"correct horse battery"}`,
			`{"username":"a","password":"b"}`, `{"max_lines":5,"since":"2026-11-27T11:00:00Z"}`, `{"ttl_seconds":-5}`, "\xff\xfe", `{"a":1}{"b":2}`} {
			f.Add(uint8(i), []byte(s))
		}
	}
	clk := &clock{t: time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)}
	e := newEnv(f, storetest.SQLiteWith(f, storetest.Options{Now: clk.Now}), clk)
	e.enroll("dev1", nil)
	f.Fuzz(func(t *testing.T, route uint8, body []byte) {
		path := fuzzRoutes[int(route)%len(fuzzRoutes)]
		auditHead := func() int64 {
			seq, _, err := e.db.AuditHead(t.Context())
			if err != nil {
				t.Fatal(err)
			}
			return seq
		}
		head := auditHead()
		req, err := http.NewRequest("POST", e.srv.URL+path, bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Authorization", "Bearer "+e.keys[RoleAdmin])
		req.Header.Set("Content-Type", "application/json")
		res, err := e.srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		out, _ := io.ReadAll(res.Body)
		if res.StatusCode >= 500 {
			t.Fatalf("POST %s %q = %d %s", path, body, res.StatusCode, out)
		}
		if res.StatusCode < 200 || res.StatusCode > 299 {
			var eb struct {
				Error string `json:"error"`
			}
			if err := json.Unmarshal(out, &eb); err != nil || eb.Error == "" {
				t.Fatalf("POST %s %q = %d with body %q, want {\"error\":…}", path, body, res.StatusCode, out)
			}
			if got := auditHead(); got != head {
				t.Fatalf("POST %s %q refused (%d) but the audit head moved %d → %d", path, body, res.StatusCode, head, got)
			}
		}
	})
}
