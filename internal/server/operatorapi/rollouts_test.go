package operatorapi

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/meshanics/meshanics/internal/server/rollout"
	"github.com/meshanics/meshanics/internal/server/store"
)

// withRollouts rebuilds e's API with the rollout engine over e's store.
func withRollouts(t *testing.T, e *env) {
	t.Helper()
	r, err := rollout.New(rollout.Config{DB: e.db, Artifacts: e.db, Now: e.clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	e.api, err = New(Config{
		Store: e.db, Logger: slog.New(slog.DiscardHandler), Now: e.clock.Now,
		CAPin: e.ca.Fingerprint(), CAPEM: e.ca.CertPEM(), PublicURL: "https://cp.fleet.test:8443",
		Argon2: &Argon2Params{Memory: 64, Time: 1, Threads: 1}, Groups: r, Rollouts: r,
	})
	if err != nil {
		t.Fatal(err)
	}
	e.srv.Close()
	e.srv = httptest.NewServer(e.api.Handler())
	t.Cleanup(e.srv.Close)
	ctx := context.Background()
	err = e.db.Tx(ctx, func(tx *store.Tx) error {
		return tx.InsertArtifact(ctx, store.Artifact{Name: "app", Version: "2.0", Kind: "model",
			TargetPath: "artifacts/model/app/2.0/m.onnx", SHA256: strings.Repeat("0", 64), Length: 1, PublishedBy: "user:admin"})
	})
	if err != nil {
		t.Fatal(err)
	}
}

func keysOf(t *testing.T, raw []byte) []string {
	t.Helper()
	var m map[string]json.RawMessage
	if err := json.Unmarshal(raw, &m); err != nil {
		t.Fatalf("decode %s: %v", raw, err)
	}
	var out []string
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func TestGroupsREST(t *testing.T) {
	forEachEngine(t, func(t *testing.T, e *env) {
		withRollouts(t, e)
		for _, d := range []string{"d1", "d2", "d3"} {
			e.enroll(d, nil)
		}
		r := e.admin("POST", "/api/v1/groups", map[string]any{"name": "line", "devices": []string{"d2", "d1", "ghost"}})
		e.want(r, http.StatusCreated, "create group")
		created := decode[struct {
			Group      rollout.GroupView `json:"group"`
			Unresolved []string          `json:"unresolved"`
		}](t, r)
		if diff := cmp.Diff([]string{"d1", "d2"}, created.Group.Devices); diff != "" || !slices.Equal(created.Unresolved, []string{"ghost"}) {
			t.Errorf("create group = %s", r.body)
		}
		e.want(e.admin("POST", "/api/v1/groups", map[string]any{"name": "line"}), http.StatusConflict, "duplicate group")
		e.want(e.admin("POST", "/api/v1/groups", map[string]any{"name": "Bad Name"}), http.StatusBadRequest, "bad group name")
		e.want(e.admin("POST", "/api/v1/groups", map[string]any{"name": "x", "devices": []string{"NOT A NAME"}}), http.StatusBadRequest, "bad device name")
		e.want(e.req("POST", "/api/v1/groups", e.keys[RoleViewer], map[string]any{"name": "v"}), http.StatusForbidden, "viewer creates group")

		r = e.admin("POST", "/api/v1/groups/line/members", map[string]any{"add": []string{"d3", "nope"}, "remove": []string{"d1", "zz"}})
		e.want(r, http.StatusOK, "change members")
		if got := string(r.body); !strings.Contains(got, `"unresolved":["nope"]`) || !strings.Contains(got, `"not_members":["zz"]`) {
			t.Errorf("change members = %s", got)
		}
		r = e.req("GET", "/api/v1/groups/line", e.keys[RoleViewer], nil)
		e.want(r, http.StatusOK, "get group")
		if g := decode[rollout.GroupView](t, r); !slices.Equal(g.Devices, []string{"d2", "d3"}) || g.Size != 2 {
			t.Errorf("get group = %s", r.body)
		}
		r = e.req("GET", "/api/v1/groups", e.keys[RoleViewer], nil)
		e.want(r, http.StatusOK, "list groups")
		if diff := cmp.Diff([]string{"items", "limit", "offset", "total"}, keysOf(t, r.body)); diff != "" || !strings.Contains(string(r.body), `"total":1`) {
			t.Errorf("list groups = %s", r.body)
		}
		r = e.admin("PUT", "/api/v1/groups/line/members", map[string]any{"devices": []string{"d1", "ghost"}})
		e.want(r, http.StatusOK, "replace members")
		if got := string(r.body); !strings.Contains(got, `"devices":["d1"]`) || !strings.Contains(got, `"unresolved":["ghost"]`) {
			t.Errorf("replace members = %s", got)
		}
		e.want(e.admin("PUT", "/api/v1/groups/nope/members", map[string]any{"devices": []string{"d1"}}), http.StatusNotFound, "replace members of a missing group")
		e.want(e.admin("DELETE", "/api/v1/groups/line", nil), http.StatusNoContent, "delete group")
		e.want(e.admin("GET", "/api/v1/groups/line", nil), http.StatusNotFound, "deleted group")
	})
}

func TestRolloutsREST(t *testing.T) {
	forEachEngine(t, func(t *testing.T, e *env) {
		withRollouts(t, e)
		for _, d := range []string{"d1", "d2", "d3", "d4"} {
			e.enroll(d, nil)
			e.presence.Seen(d, e.clock.Now())
		}
		err := e.db.TouchDevices(context.Background(), map[string]time.Time{"d1": e.clock.Now(), "d2": e.clock.Now(), "d3": e.clock.Now(), "d4": e.clock.Now()})
		if err != nil {
			t.Fatal(err)
		}
		e.want(e.admin("POST", "/api/v1/groups", map[string]any{"name": "line", "devices": []string{"d1", "d2", "d3", "d4"}}), http.StatusCreated, "group")
		body := map[string]any{
			"artifact": "app@2.0", "group": "line", "probe": map[string]any{"type": "http", "target": "http://127.0.0.1:8080/health"},
			"strategy": map[string]any{"waves": []map[string]any{{"percent": 50}, {"percent": 100, "approval": "manual"}}, "max_failure_rate": 0.25},
		}
		r := e.req("POST", "/api/v1/rollouts", e.keys[RoleViewer], body)
		e.want(r, http.StatusForbidden, "viewer creates rollout")
		if r.errorMessage() != "missing permission: rollouts.write" {
			t.Errorf("403 body = %s", r.body)
		}
		e.want(e.admin("POST", "/api/v1/rollouts", map[string]any{"artifact": "app@9", "group": "line", "probe": body["probe"]}), http.StatusNotFound, "unknown artifact")
		e.want(e.admin("POST", "/api/v1/rollouts", map[string]any{"artifact": "app@2.0", "group": "line", "probe": map[string]any{"type": "http", "target": "http://example.com/"}}), http.StatusBadRequest, "non-loopback probe")
		r = e.req("POST", "/api/v1/rollouts", e.keys[RoleOperator], body)
		e.want(r, http.StatusCreated, "create rollout")
		want := []string{"acknowledged_failures", "artifact", "created_at", "failures", "group", "id", "probe", "state", "strategy", "updated_at", "waves"}
		if diff := cmp.Diff(want, keysOf(t, r.body)); diff != "" {
			t.Errorf("rollout keys (-want +got):\n%s", diff)
		}
		v := decode[rollout.View](t, r)
		var waves []map[string]json.RawMessage
		raw := decode[map[string]json.RawMessage](t, r)
		_ = json.Unmarshal(raw["waves"], &waves)
		if len(waves) != 2 || len(waves[0]) != 5 || string(waves[0]["counts"]) != `{"pending":2}` || string(waves[1]["approval"]) != `"manual"` {
			t.Errorf("waves = %s", raw["waves"])
		}
		if v.State != "running" || v.Artifact != "app@2.0" || v.Group != "line" {
			t.Errorf("created rollout = %s", r.body)
		}
		e.want(e.admin("POST", "/api/v1/rollouts", body), http.StatusConflict, "second rollout on the same devices")

		r = e.req("GET", "/api/v1/rollouts/"+v.ID+"/devices?limit=1", e.keys[RoleViewer], nil)
		e.want(r, http.StatusOK, "rollout devices")
		list := decode[struct {
			Items []json.RawMessage `json:"items"`
			Total int               `json:"total"`
		}](t, r)
		if list.Total != 4 || len(list.Items) != 1 {
			t.Fatalf("devices list = %s", r.body)
		}
		if diff := cmp.Diff([]string{"detail", "device", "state", "updated_at", "wave"}, keysOf(t, list.Items[0])); diff != "" {
			t.Errorf("device keys (-want +got):\n%s", diff)
		}

		id := "/api/v1/rollouts/" + v.ID
		e.want(e.req("POST", id+"/approve", e.keys[RoleOperator], nil), http.StatusForbidden, "operator approves")
		e.want(e.req("POST", id+"/approve", e.keys[RoleApprover], nil), http.StatusConflict, "approve a running rollout")
		r = e.req("POST", id+"/halt", e.keys[RoleOperator], nil)
		e.want(r, http.StatusOK, "halt")
		if decode[rollout.View](t, r).State != "halted" {
			t.Errorf("halt = %s", r.body)
		}
		e.want(e.req("POST", id+"/resume", e.keys[RoleOperator], nil), http.StatusForbidden, "operator resumes")
		e.want(e.req("POST", id+"/resume", e.keys[RoleApprover], nil), http.StatusOK, "approver resumes")
		e.want(e.admin("POST", id+"/abort", map[string]any{"policy": "later"}), http.StatusBadRequest, "bad abort policy")
		r = e.req("POST", id+"/abort", e.keys[RoleOperator], map[string]any{"policy": "revert"})
		e.want(r, http.StatusOK, "abort")
		if decode[rollout.View](t, r).State != "aborted" {
			t.Errorf("abort = %s", r.body)
		}
		e.want(e.admin("POST", id+"/abort", nil), http.StatusConflict, "abort twice")
		r = e.req("GET", "/api/v1/rollouts?state=aborted", e.keys[RoleViewer], nil)
		e.want(r, http.StatusOK, "list rollouts")
		if !strings.Contains(string(r.body), `"total":1`) {
			t.Errorf("list = %s", r.body)
		}
		e.want(e.admin("GET", "/api/v1/rollouts?state=bogus", nil), http.StatusBadRequest, "bad state filter")
		e.want(e.admin("GET", "/api/v1/rollouts/ro_nope", nil), http.StatusNotFound, "unknown rollout")
		evs, _, err := e.db.ListAudit(context.Background(), store.AuditFilter{Subject: v.ID}, store.Page{})
		if err != nil || len(evs) < 4 {
			t.Fatalf("audit events for rollout = %d, %v", len(evs), err)
		}
		if evs[len(evs)-1].Actor != "apikey:"+e.keyID(RoleOperator) {
			t.Errorf("create audited as %s", evs[len(evs)-1].Actor)
		}
	})
}
