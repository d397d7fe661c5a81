package operatorapi

import (
	"context"
	"net/http"
	"strings"
	"testing"

	"github.com/meshanics/meshanics/internal/server/store"
)

// TestBadBodiesChangeNothing sends malformed and oversized bodies to every
// create route and checks the answer and that neither the audit chain nor
// the tables moved.
func TestBadBodiesChangeNothing(t *testing.T) {
	forEachEngine(t, func(t *testing.T, e *env) {
		e.enroll("dev1", nil)
		ctx := context.Background()
		count := func() (n int) {
			_, toks, _ := e.db.ListEnrollmentTokens(ctx, store.Page{})
			_, users, _ := e.db.ListUsers(ctx, store.Page{})
			_, keys, _ := e.db.ListAPIKeys(ctx, "", store.Page{})
			return toks*10000 + users*100 + keys
		}
		head, before := e.auditHead(), count()
		huge := `{"name":"` + strings.Repeat("a", 2<<20) + `"}`
		for _, path := range []string{"/api/v1/enrollment-tokens", "/api/v1/users", "/api/v1/api-keys", "/api/v1/devices/dev1/log-requests"} {
			for _, tc := range []struct {
				name   string
				body   string
				ctype  string
				status int
			}{
				{"too large", huge, "application/json", http.StatusRequestEntityTooLarge},
				{"unknown field", `{"bogus":1}`, "application/json", http.StatusBadRequest},
				{"not JSON", `{"name":`, "application/json", http.StatusBadRequest},
				{"two objects", `{} {}`, "application/json", http.StatusBadRequest},
				{"array", `[]`, "application/json", http.StatusBadRequest},
				{"wrong type", `{"uses":"many","name":1,"max_lines":"x"}`, "application/json", http.StatusBadRequest},
				{"form", `a=b`, "application/x-www-form-urlencoded", http.StatusUnsupportedMediaType},
			} {
				r := e.reqRaw("POST", path, e.keys[RoleAdmin], tc.body, tc.ctype)
				if r.status != tc.status || r.errorMessage() == "" {
					t.Errorf("POST %s %s = %d %.200s, want %d with an error message", path, tc.name, r.status, r.body, tc.status)
				}
				if strings.Contains(string(r.body), "sql") || strings.Contains(string(r.body), "goroutine") {
					t.Errorf("POST %s %s leaks internals: %.200s", path, tc.name, r.body)
				}
			}
		}
		if got := e.auditHead(); got != head {
			t.Errorf("audit head moved %d → %d", head, got)
		}
		if got := count(); got != before {
			t.Errorf("row counts changed %d → %d", before, got)
		}
		// Semantically bad values are refused too.
		for _, tc := range []struct {
			path string
			body any
		}{
			{"/api/v1/enrollment-tokens", map[string]any{"ttl_seconds": 31 * 24 * 3600}},
			{"/api/v1/enrollment-tokens", map[string]any{"uses": -1}},
			{"/api/v1/users", map[string]string{"name": "Bad Name", "role": "viewer", "password": "correct horse battery"}},
			{"/api/v1/users", map[string]string{"name": "bob", "role": "root", "password": "correct horse battery"}},
			{"/api/v1/users", map[string]string{"name": "bob", "role": "viewer", "password": "short"}},
			{"/api/v1/api-keys", map[string]string{"name": "", "role": "viewer"}},
			{"/api/v1/api-keys", map[string]string{"name": "ci", "role": "superuser"}},
			{"/api/v1/devices/dev1/log-requests", map[string]any{"max_lines": 1 << 30}},
			{"/api/v1/devices/dev1/log-requests", map[string]any{"since": "2099-01-01T00:00:00Z"}},
		} {
			if r := e.admin("POST", tc.path, tc.body); r.status != 400 {
				t.Errorf("POST %s %v = %d %s, want 400", tc.path, tc.body, r.status, r.body)
			}
		}
		if got := e.auditHead(); got != head {
			t.Errorf("audit head moved %d → %d after invalid values", head, got)
		}
	})
}
