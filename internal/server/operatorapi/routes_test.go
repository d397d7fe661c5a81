package operatorapi

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/meshanics/meshanics/internal/auditchain"
)

func TestEnrollmentTokens(t *testing.T) {
	forEachEngine(t, func(t *testing.T, e *env) {
		r := e.req("POST", "/api/v1/enrollment-tokens", e.keys[RoleOperator], map[string]any{"ttl_seconds": 7200, "uses": 3, "tags": map[string]string{"site": "lab"}})
		e.want(r, 201, "create token")
		var raw map[string]json.RawMessage
		if err := json.Unmarshal(r.body, &raw); err != nil {
			t.Fatal(err)
		}
		keys := make([]string, 0, len(raw))
		for k := range raw {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		if diff := cmp.Diff([]string{"ca_pin", "expires_at", "id", "install_command", "token", "uses"}, keys); diff != "" {
			t.Errorf("create token keys mismatch (-want +got):\n%s", diff)
		}
		tok := decode[tokenCreatedJSON](t, r)
		if !strings.HasPrefix(tok.Token, "mst_") || tok.Uses != 3 || tok.CAPin != e.ca.Fingerprint() || !tok.ExpiresAt.Equal(e.clock.Now().Add(2*time.Hour)) {
			t.Errorf("created token %+v: want mst_…, 3 uses, the CA pin, expiry in 2h", tok)
		}
		wantCmd := "curl -fsSL --cacert <(printf '%s' '" + strings.TrimSpace(string(e.ca.CertPEM())) + "') https://cp.fleet.test:8443/install.sh | sudo sh -s -- --url https://cp.fleet.test:8443 --token " + tok.Token + " --ca-pin " + e.ca.Fingerprint()
		if tok.InstallCommand != wantCmd {
			t.Errorf("install command = %q\nwant %q", tok.InstallCommand, wantCmd)
		}

		list := e.admin("GET", "/api/v1/enrollment-tokens", nil)
		e.want(list, 200, "list tokens")
		if bytes.Contains(list.body, []byte(tok.Token)) || bytes.Contains(list.body, []byte(`"token"`)) {
			t.Errorf("token list shows the secret: %s", list.body)
		}
		l := decode[List[tokenJSON]](t, list)
		if l.Total != 1 || l.Items[0].ID != tok.ID || l.Items[0].State != "active" || l.Items[0].UsesLeft != 3 || l.Items[0].Tags["site"] != "lab" || l.Items[0].CreatedBy != "apikey:"+e.keyID(RoleOperator) {
			t.Errorf("token list = %+v", l)
		}

		e.want(e.admin("DELETE", "/api/v1/enrollment-tokens/"+tok.ID, nil), 204, "revoke")
		l = decode[List[tokenJSON]](t, e.admin("GET", "/api/v1/enrollment-tokens", nil))
		if l.Items[0].State != "revoked" || l.Items[0].RevokedAt == nil {
			t.Errorf("after revoke: %+v, want revoked", l.Items[0])
		}
		ev := decode[List[auditchain.Event]](t, e.admin("GET", "/api/v1/audit?subject="+tok.ID, nil))
		var types []string
		for _, x := range ev.Items {
			types = append(types, x.Type)
			if bytes.Contains(x.Data, []byte(tok.Token)) {
				t.Errorf("audit event %s contains the token secret", x.Type)
			}
		}
		if diff := cmp.Diff([]string{"enrollment_token.revoke", "enrollment_token.create"}, types); diff != "" {
			t.Errorf("token audit events mismatch (-want +got):\n%s", diff)
		}
	})
}

func TestDevices(t *testing.T) {
	forEachEngine(t, func(t *testing.T, e *env) {
		e.enroll("edge-a", map[string]string{"site": "lab", "tier": "1"})
		e.enroll("edge-b", map[string]string{"site": "lab"})
		e.enroll("edge-c", map[string]string{"site": "field"})
		now := e.clock.Now()
		// edge-a: heartbeat in this replica's memory only (not flushed yet).
		e.presence.Seen("edge-a", now.Add(-10*time.Second))
		// edge-b: stored last_seen, long ago.
		if err := e.db.TouchDevices(context.Background(), map[string]time.Time{"edge-b": now.Add(-10 * time.Minute), "edge-c": now.Add(-5 * time.Second)}); err != nil {
			t.Fatal(err)
		}

		show := e.admin("GET", "/api/v1/devices/edge-a", nil)
		e.want(show, 200, "show edge-a")
		var raw map[string]json.RawMessage
		if err := json.Unmarshal(show.body, &raw); err != nil {
			t.Fatal(err)
		}
		for _, k := range []string{"name", "status", "hardware", "agent_version", "tags", "last_seen", "installed"} {
			if _, ok := raw[k]; !ok {
				t.Errorf("device JSON %s lacks %q", show.body, k)
			}
		}
		d := decode[deviceJSON](t, show)
		if d.Status != "online" || d.LastSeen == nil || !d.LastSeen.Equal(now.Add(-10*time.Second)) || d.AgentVersion != "1.2.3" || string(d.Hardware) != `{"arch":"arm64","cpu_cores":4}` {
			t.Errorf("show edge-a = %+v, want online from presence", d)
		}

		names := func(q string) []string {
			t.Helper()
			l := decode[List[deviceJSON]](t, e.admin("GET", "/api/v1/devices"+q, nil))
			var out []string
			for _, d := range l.Items {
				out = append(out, d.Name+"="+d.Status)
			}
			return out
		}
		for _, tc := range []struct {
			q    string
			want []string
		}{
			{"", []string{"edge-a=online", "edge-b=offline", "edge-c=online"}},
			{"?status=offline", []string{"edge-b=offline"}}, // edge-a: stored offline, but fresher in memory: not shown
			{"?status=online", []string{"edge-c=online"}},
			{"?tag=site=lab", []string{"edge-a=online", "edge-b=offline"}},
			{"?tag=site=lab&tag=tier=1", []string{"edge-a=online"}},
			{"?tag=site=nowhere", nil},
		} {
			if diff := cmp.Diff(tc.want, names(tc.q)); diff != "" {
				t.Errorf("GET /api/v1/devices%s mismatch (-want +got):\n%s", tc.q, diff)
			}
		}
		// A device hidden because this replica knows better is not counted either.
		if l := decode[List[deviceJSON]](t, e.admin("GET", "/api/v1/devices?status=offline", nil)); l.Total != len(l.Items) {
			t.Errorf("?status=offline: total %d with %d items, want them equal", l.Total, len(l.Items))
		}
		e.want(e.admin("GET", "/api/v1/devices?status=sleeping", nil), 400, "bad status")
		e.want(e.admin("GET", "/api/v1/devices?tag=nokv", nil), 400, "bad tag")

		// Decommission: audited, the device API told at once, status shown.
		r := e.req("POST", "/api/v1/devices/edge-b/decommission", e.keys[RoleOperator], nil)
		e.want(r, 200, "decommission")
		if d := decode[deviceJSON](t, r); d.Status != "decommissioned" || d.DecommissionedAt == nil {
			t.Errorf("decommission answer %+v", d)
		}
		e.mu.Lock()
		inv := slices.Clone(e.invalidated)
		e.mu.Unlock()
		if diff := cmp.Diff([]string{"edge-b"}, inv); diff != "" {
			t.Errorf("Invalidate calls mismatch (-want +got):\n%s", diff)
		}
		if diff := cmp.Diff([]string{"edge-b=decommissioned"}, names("?status=decommissioned")); diff != "" {
			t.Errorf("decommissioned filter mismatch (-want +got):\n%s", diff)
		}
		ev := decode[List[auditchain.Event]](t, e.admin("GET", "/api/v1/audit?type=device.decommission", nil))
		if ev.Total != 1 || ev.Items[0].Actor != "apikey:"+e.keyID(RoleOperator) || ev.Items[0].Subject != "edge-b" {
			t.Errorf("decommission audit = %+v", ev.Items)
		}
		e.want(e.admin("POST", "/api/v1/devices/edge-b/log-requests", nil), 409, "log request for a decommissioned device")
	})
}

func TestLogRequests(t *testing.T) {
	forEachEngine(t, func(t *testing.T, e *env) {
		e.enroll("edge-a", nil)
		r := e.req("POST", "/api/v1/devices/edge-a/log-requests", e.keys[RoleOperator], map[string]any{"since": e.clock.Now().Add(-2 * time.Hour), "max_lines": 500})
		e.want(r, 202, "create log request")
		var created map[string]string
		if err := json.Unmarshal(r.body, &created); err != nil || len(created) != 1 || created["id"] == "" {
			t.Fatalf("202 body %s, want {\"id\"}", r.body)
		}
		id := created["id"]
		lr := decode[logRequestJSON](t, e.req("GET", "/api/v1/log-requests/"+id, e.keys[RoleViewer], nil))
		if lr.State != "pending" || lr.Device != "edge-a" || lr.MaxLines != 500 {
			t.Errorf("log request = %+v, want pending for edge-a, 500 lines", lr)
		}
		e.want(e.admin("GET", "/api/v1/log-requests/"+id+"/bundle", nil), 409, "bundle before upload")

		var gz bytes.Buffer
		zw := gzip.NewWriter(&gz)
		zw.Write([]byte("line one\nline two\n"))
		zw.Close()
		if err := e.db.CompleteLogRequest(context.Background(), "edge-a", id, gz.Bytes()); err != nil {
			t.Fatal(err)
		}
		b := e.admin("GET", "/api/v1/log-requests/"+id+"/bundle", nil)
		e.want(b, 200, "bundle")
		if !bytes.Equal(b.body, gz.Bytes()) || b.header.Get("Content-Type") != "application/gzip" {
			t.Errorf("bundle = %d bytes %q, want the uploaded gzip", len(b.body), b.header.Get("Content-Type"))
		}
		if lr := decode[logRequestJSON](t, e.admin("GET", "/api/v1/log-requests/"+id, nil)); lr.State != "completed" || lr.Size != int64(gz.Len()) {
			t.Errorf("after upload: %+v", lr)
		}
	})
}

func TestUsersAndAPIKeys(t *testing.T) {
	forEachEngine(t, func(t *testing.T, e *env) {
		r := e.admin("POST", "/api/v1/users", map[string]string{"name": "olga", "role": "operator", "password": "correct horse battery"})
		e.want(r, 201, "create user")
		if bytes.Contains(r.body, []byte("argon2")) || bytes.Contains(r.body, []byte("password")) {
			t.Errorf("user JSON shows the password hash: %s", r.body)
		}
		l := decode[List[userJSON]](t, e.admin("GET", "/api/v1/users", nil))
		if l.Total != 1 || l.Items[0].Name != "olga" || l.Items[0].Role != "operator" {
			t.Errorf("users = %+v", l)
		}

		k := decode[createdAPIKeyJSON](t, e.admin("POST", "/api/v1/api-keys", map[string]string{"name": "ci", "role": "viewer"}))
		if !strings.HasPrefix(k.Key, "msk_") || k.Role != "viewer" || k.Owner != "apikey:"+e.keyID(RoleAdmin) {
			t.Errorf("created key %+v", k)
		}
		e.want(e.req("GET", "/api/v1/devices", k.Key, nil), 200, "new key reads")
		e.want(e.req("POST", "/api/v1/enrollment-tokens", k.Key, map[string]any{}), 403, "new viewer key writes")
		list := e.admin("GET", "/api/v1/api-keys", nil)
		if bytes.Contains(list.body, []byte(k.Key)) || bytes.Contains(list.body, []byte(`"key"`)) {
			t.Errorf("key list shows a secret: %s", list.body)
		}
		var found bool
		for _, x := range decode[List[apiKeyJSON]](t, list).Items {
			if x.ID == k.ID {
				found = true
				if x.LastUsedAt == nil {
					t.Errorf("key %s used but last_used_at is null", x.ID)
				}
			}
		}
		if !found {
			t.Errorf("key list lacks %s", k.ID)
		}
		e.want(e.admin("DELETE", "/api/v1/api-keys/"+k.ID, nil), 204, "revoke key")
		e.want(e.req("GET", "/api/v1/devices", k.Key, nil), 401, "revoked key")

		e.want(e.admin("DELETE", "/api/v1/users/olga", nil), 204, "delete user")
		e.want(e.admin("DELETE", "/api/v1/users/olga", nil), 404, "delete user again")
		ev := decode[List[auditchain.Event]](t, e.admin("GET", "/api/v1/audit?subject=olga", nil))
		if ev.Total != 2 {
			t.Errorf("olga's audit events = %d, want create + delete", ev.Total)
		}
	})
}

func TestAuditExportVerifies(t *testing.T) {
	forEachEngine(t, func(t *testing.T, e *env) {
		e.enroll("edge-a", nil)
		e.want(e.admin("POST", "/api/v1/enrollment-tokens", map[string]any{}), 201, "token")
		e.want(e.admin("POST", "/api/v1/devices/edge-a/decommission", nil), 200, "decommission")
		r := e.req("GET", "/api/v1/audit/export", e.keys[RoleViewer], nil)
		e.want(r, 200, "export")
		if ct := r.header.Get("Content-Type"); ct != "application/x-ndjson" {
			t.Errorf("export content type %q", ct)
		}
		tr, err := auditchain.VerifyExport(bytes.NewReader(r.body))
		if err != nil {
			t.Fatalf("VerifyExport: %v\n%s", err, r.body)
		}
		seq, head, _ := e.db.AuditHead(context.Background())
		if tr.Count != seq || tr.HeadHash != head || !tr.Verified {
			t.Errorf("trailer %+v, want count %d head %s verified", tr, seq, head)
		}
		lines := bytes.Split(bytes.TrimSpace(r.body), []byte("\n"))
		var trailer map[string]any
		if err := json.Unmarshal(lines[len(lines)-1], &trailer); err != nil || len(trailer) != 3 {
			t.Errorf("last line %s, want the trailer {count, verified, head_hash}", lines[len(lines)-1])
		}
		// A changed event is detected by the verifier.
		tampered := bytes.Replace(r.body, []byte(`"edge-a"`), []byte(`"edge-x"`), 1)
		if _, err := auditchain.VerifyExport(bytes.NewReader(tampered)); err == nil {
			t.Error("VerifyExport(tampered) = nil, want an error")
		}
	})
}

func TestMeAndMethodNotAllowed(t *testing.T) {
	forEachEngine(t, func(t *testing.T, e *env) {
		me := decode[meJSON](t, e.req("GET", "/api/v1/me", e.keys[RoleViewer], nil))
		if me.Role != RoleViewer || me.Actor != "apikey:"+e.keyID(RoleViewer) || !slices.Equal(me.Permissions, RoleViewer.Permissions()) {
			t.Errorf("GET /me = %+v", me)
		}
		e.want(e.req("GET", "/api/v1/me", "", nil), 401, "me without credentials")
		r := e.admin("DELETE", "/api/v1/devices", nil)
		if r.status != 405 || r.header.Get("Allow") != "GET" || r.errorMessage() == "" {
			t.Errorf("DELETE /api/v1/devices = %d Allow %q %s, want 405 Allow GET", r.status, r.header.Get("Allow"), r.body)
		}
	})
}

func TestUpdateUser(t *testing.T) {
	forEachEngine(t, func(t *testing.T, e *env) {
		e.want(e.admin("POST", "/api/v1/users", map[string]string{"name": "ursula", "role": "viewer", "password": "correct horse battery"}), 201, "create")
		login := func(pw string) int {
			return e.req("POST", "/login", "", map[string]string{"username": "ursula", "password": pw}).status
		}
		if got := login("correct horse battery"); got != 204 {
			t.Fatalf("login = %d", got)
		}
		u := decode[userJSON](t, e.admin("PATCH", "/api/v1/users/ursula", map[string]string{"role": "approver", "password": "another long password"}))
		if u.Role != "approver" {
			t.Errorf("updated role %q, want approver", u.Role)
		}
		if got := login("correct horse battery"); got != 401 {
			t.Errorf("old password login = %d, want 401", got)
		}
		if got := login("another long password"); got != 204 {
			t.Errorf("new password login = %d, want 204", got)
		}
		e.want(e.admin("PATCH", "/api/v1/users/ursula", map[string]string{}), 400, "empty update")
		e.want(e.admin("PATCH", "/api/v1/users/ursula", map[string]string{"role": "god"}), 400, "bad role")
		e.want(e.admin("PATCH", "/api/v1/users/nobody", map[string]string{"role": "viewer"}), 404, "unknown user")
	})
}
