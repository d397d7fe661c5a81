package operatorapi

import (
	"net/http"
	"strings"
	"testing"
)

func TestUnauthenticated(t *testing.T) {
	forEachEngine(t, func(t *testing.T, e *env) {
		created := decode[createdAPIKeyJSON](t, e.admin("POST", "/api/v1/api-keys", map[string]string{"name": "doomed", "role": "admin"}))
		e.want(e.req("GET", "/api/v1/devices", created.Key, nil), 200, "fresh key")
		e.want(e.admin("DELETE", "/api/v1/api-keys/"+created.ID, nil), 204, "revoke key")

		for _, tc := range []struct {
			name   string
			header string
		}{
			{"no credentials", ""},
			{"unknown key", "Bearer " + NewAPIKey()},
			{"revoked key", "Bearer " + created.Key},
			{"not a key", "Bearer hello"},
			{"basic auth", "Basic YWRtaW46YWRtaW4="},
			{"oversized", "Bearer msk_" + strings.Repeat("a", 4096)},
		} {
			r := e.req("GET", "/api/v1/devices", "", nil, "Authorization", tc.header)
			if r.status != http.StatusUnauthorized {
				t.Errorf("%s: GET /api/v1/devices = %d %s, want 401", tc.name, r.status, r.body)
			}
			if r.errorMessage() == "" || r.header.Get("WWW-Authenticate") == "" {
				t.Errorf("%s: body %s, WWW-Authenticate %q; want an error message and a challenge", tc.name, r.body, r.header.Get("WWW-Authenticate"))
			}
		}
	})
}

func TestForbiddenNamesThePermission(t *testing.T) {
	forEachEngine(t, func(t *testing.T, e *env) {
		for _, tc := range []struct {
			role   Role
			method string
			path   string
			body   any
			perm   string
		}{
			{RoleViewer, "POST", "/api/v1/enrollment-tokens", map[string]any{}, "enrollment.write"},
			{RoleViewer, "POST", "/api/v1/devices/dev1/decommission", nil, "devices.write"},
			{RoleViewer, "GET", "/api/v1/users", nil, "users.manage"},
			{RoleOperator, "GET", "/api/v1/users", nil, "users.manage"},
			{RoleOperator, "POST", "/api/v1/api-keys", map[string]string{"name": "x", "role": "admin"}, "apikeys.manage"},
			{RoleApprover, "DELETE", "/api/v1/users/alice", nil, "users.manage"},
		} {
			r := e.req(tc.method, tc.path, e.keys[tc.role], tc.body)
			want := `{"error":"missing permission: ` + tc.perm + `"}` + "\n"
			if r.status != http.StatusForbidden || string(r.body) != want {
				t.Errorf("%s %s %s = %d %q, want 403 %q", tc.role, tc.method, tc.path, r.status, r.body, want)
			}
		}
		// Reads a viewer may do.
		for _, path := range []string{"/api/v1/devices", "/api/v1/audit"} {
			e.want(e.req("GET", path, e.keys[RoleViewer], nil), 200, "viewer GET "+path)
		}
		e.want(e.req("GET", "/api/v1/enrollment-tokens", e.keys[RoleOperator], nil), 200, "operator lists tokens")
	})
}

func TestNotFound(t *testing.T) {
	forEachEngine(t, func(t *testing.T, e *env) {
		for _, tc := range []struct{ method, path string }{
			{"GET", "/api/v1/devices/nope"},
			{"GET", "/api/v1/devices/NOT_A_NAME"},
			{"POST", "/api/v1/devices/nope/decommission"},
			{"POST", "/api/v1/devices/nope/log-requests"},
			{"GET", "/api/v1/log-requests/lr_nope"},
			{"DELETE", "/api/v1/enrollment-tokens/tok_nope"},
			{"DELETE", "/api/v1/users/nobody"},
			{"DELETE", "/api/v1/api-keys/key_nope"},
			{"GET", "/api/v1/no-such-route"},
		} {
			r := e.admin(tc.method, tc.path, nil)
			if r.status != http.StatusNotFound || r.errorMessage() == "" {
				t.Errorf("%s %s = %d %s, want 404 with an error message", tc.method, tc.path, r.status, r.body)
			}
		}
		// Unknown routes need authentication like every other (no probing).
		if r := e.req("GET", "/api/v1/no-such-route", "", nil); r.status != http.StatusNotFound && r.status != http.StatusUnauthorized {
			t.Errorf("unauthenticated unknown route = %d", r.status)
		}
	})
}

func TestConflict(t *testing.T) {
	forEachEngine(t, func(t *testing.T, e *env) {
		u := map[string]string{"name": "alice", "role": "viewer", "password": "correct horse battery"}
		e.want(e.admin("POST", "/api/v1/users", u), 201, "create alice")
		r := e.admin("POST", "/api/v1/users", u)
		if r.status != http.StatusConflict || !strings.Contains(r.errorMessage(), "alice") {
			t.Errorf("second create alice = %d %s, want 409 naming alice", r.status, r.body)
		}
		e.enroll("dev1", nil)
		e.want(e.admin("POST", "/api/v1/devices/dev1/decommission", nil), 200, "decommission dev1")
		e.want(e.admin("POST", "/api/v1/devices/dev1/decommission", nil), 409, "decommission dev1 again")
	})
}

func TestPagination(t *testing.T) {
	forEachEngine(t, func(t *testing.T, e *env) {
		for _, n := range []string{"dev-c", "dev-a", "dev-b"} {
			e.enroll(n, nil)
		}
		l := decode[List[deviceJSON]](t, e.admin("GET", "/api/v1/devices?limit=2", nil))
		if l.Total != 3 || l.Limit != 2 || l.Offset != 0 || len(l.Items) != 2 || l.Items[0].Name != "dev-a" || l.Items[1].Name != "dev-b" {
			t.Errorf("limit=2: %+v, want dev-a, dev-b of 3", l)
		}
		l = decode[List[deviceJSON]](t, e.admin("GET", "/api/v1/devices?limit=2&offset=2", nil))
		if l.Total != 3 || len(l.Items) != 1 || l.Items[0].Name != "dev-c" {
			t.Errorf("offset=2: %+v, want dev-c", l)
		}
		l = decode[List[deviceJSON]](t, e.admin("GET", "/api/v1/devices?limit=5000", nil))
		if l.Limit != MaxLimit || len(l.Items) != 3 {
			t.Errorf("limit=5000: limit %d, %d items; want clamped to 200, 3 items", l.Limit, len(l.Items))
		}
		l = decode[List[deviceJSON]](t, e.admin("GET", "/api/v1/devices", nil))
		if l.Limit != DefaultLimit || l.Offset != 0 {
			t.Errorf("defaults: limit %d offset %d, want 50 0", l.Limit, l.Offset)
		}
		l = decode[List[deviceJSON]](t, e.admin("GET", "/api/v1/devices?offset=10", nil))
		if l.Items == nil || len(l.Items) != 0 || l.Total != 3 {
			t.Errorf("offset past the end: %+v, want empty items (not null), total 3", l)
		}
		if r := e.admin("GET", "/api/v1/devices?offset=10", nil); !strings.Contains(string(r.body), `"items":[]`) {
			t.Errorf("empty page body %s, want \"items\":[]", r.body)
		}
		for _, q := range []string{"limit=0", "limit=-1", "limit=x", "offset=-1", "offset=y"} {
			e.want(e.admin("GET", "/api/v1/devices?"+q, nil), 400, q)
		}
	})
}
