package operatorapi

import (
	"net/http"
	"strings"
	"testing"

	"github.com/meshanics/meshanics/internal/server/store"
)

func TestLoginSessionCookie(t *testing.T) {
	forEachEngine(t, func(t *testing.T, e *env) {
		e.want(e.admin("POST", "/api/v1/users", map[string]string{"name": "vera", "role": "viewer", "password": "correct horse battery"}), 201, "create vera")

		r := e.req("POST", "/login", "", map[string]string{"username": "vera", "password": "correct horse battery"})
		e.want(r, 204, "login")
		var c *http.Cookie
		for _, k := range (&http.Response{Header: r.header}).Cookies() {
			if k.Name == SessionCookie {
				c = k
			}
		}
		if c == nil {
			t.Fatalf("login set no %s cookie (headers %v)", SessionCookie, r.header)
		}
		if !c.HttpOnly || !c.Secure || c.SameSite != http.SameSiteStrictMode || c.Path != "/" || c.MaxAge <= 0 {
			t.Errorf("cookie %+v: want HttpOnly, Secure, SameSite=Strict, Path=/, MaxAge>0", c)
		}
		cookie := SessionCookie + "=" + c.Value

		e.want(e.req("GET", "/api/v1/devices", "", nil, "Cookie", cookie), 200, "viewer reads with the cookie")
		if r := e.req("GET", "/api/v1/users", "", nil, "Cookie", cookie); r.status != 403 || r.errorMessage() != "missing permission: users.manage" {
			t.Errorf("viewer GET users = %d %s, want 403 naming users.manage", r.status, r.body)
		}
		// A change with a foreign Origin is refused even with a valid cookie.
		admin := map[string]string{"name": "adam", "role": "admin", "password": "correct horse battery"}
		e.want(e.admin("POST", "/api/v1/users", admin), 201, "create adam")
		r = e.req("POST", "/login", "", map[string]string{"username": "adam", "password": "correct horse battery"})
		e.want(r, 204, "login adam")
		adamCookie := strings.Split(r.header.Get("Set-Cookie"), ";")[0]
		tok := map[string]any{"uses": 1}
		e.want(e.req("POST", "/api/v1/enrollment-tokens", "", tok, "Cookie", adamCookie, "Origin", "https://evil.example"), 403, "cross-origin POST")
		e.want(e.req("POST", "/api/v1/enrollment-tokens", "", tok, "Cookie", adamCookie), 201, "same-origin POST")

		// Logout ends the session for good.
		r = e.req("POST", "/logout", "", nil, "Cookie", cookie)
		e.want(r, 204, "logout")
		if !strings.Contains(r.header.Get("Set-Cookie"), "Max-Age=0") {
			t.Errorf("logout Set-Cookie %q, want the cookie cleared", r.header.Get("Set-Cookie"))
		}
		e.want(e.req("GET", "/api/v1/devices", "", nil, "Cookie", cookie), 401, "cookie after logout")
		e.want(e.req("POST", "/logout", "", nil), 204, "logout without a session")

		// Expiry: sessions last SessionTTL (12 h default).
		e.clock.Add(13 * 60 * 60 * 1e9)
		e.want(e.req("GET", "/api/v1/devices", "", nil, "Cookie", adamCookie), 401, "expired session")

		// Audit has the logins and the logout.
		l := decode[List[map[string]any]](t, e.admin("GET", "/api/v1/audit?type=user.login", nil))
		if l.Total != 2 {
			t.Errorf("user.login events = %d, want 2", l.Total)
		}
	})
}

func TestLoginRefusals(t *testing.T) {
	forEachEngine(t, func(t *testing.T, e *env) {
		e.want(e.admin("POST", "/api/v1/users", map[string]string{"name": "vera", "role": "viewer", "password": "correct horse battery"}), 201, "create vera")
		head := e.auditHead()
		for _, body := range []any{
			map[string]string{"username": "vera", "password": "wrong password!!"},
			map[string]string{"username": "nobody", "password": "correct horse battery"},
		} {
			r := e.req("POST", "/login", "", body)
			if r.status != 401 || r.errorMessage() != "wrong user name or password" || r.header.Get("Set-Cookie") != "" {
				t.Errorf("login %v = %d %s (cookie %q), want 401 without cookie", body, r.status, r.body, r.header.Get("Set-Cookie"))
			}
		}
		e.want(e.req("POST", "/login", "", `{"username":"vera","password":"correct horse battery","admin":true}`), 400, "unknown field")
		// A user without a password (the first admin: API key only) cannot log in.
		if err := e.db.Tx(t.Context(), func(tx *store.Tx) error {
			_, err := tx.CreateUser(t.Context(), store.ActorSystem, "root", "admin", "")
			return err
		}); err != nil {
			t.Fatal(err)
		}
		head = e.auditHead()
		for _, pw := range []string{"x", "correct horse battery"} {
			if r := e.req("POST", "/login", "", map[string]string{"username": "root", "password": pw}); r.status != 401 {
				t.Errorf("login as password-less root = %d, want 401", r.status)
			}
		}
		if got := e.auditHead(); got != head {
			t.Errorf("audit head moved %d → %d on refused logins", head, got)
		}
	})
}

func TestLoginRateLimit(t *testing.T) {
	forEachEngine(t, func(t *testing.T, e *env) {
		// The test limiter allows a burst of 5 and refills almost never.
		bad := map[string]string{"username": "nobody", "password": "whatever-password"}
		for i := range 5 {
			if r := e.req("POST", "/login", "", bad); r.status != 401 {
				t.Fatalf("attempt %d = %d, want 401", i+1, r.status)
			}
		}
		r := e.req("POST", "/login", "", bad)
		if r.status != http.StatusTooManyRequests || r.errorMessage() == "" {
			t.Fatalf("attempt 6 = %d %s, want 429 with an error", r.status, r.body)
		}
		// API-key requests are not affected by the login limiter.
		e.want(e.admin("GET", "/api/v1/devices", nil), 200, "API after login flood")
	})
}
