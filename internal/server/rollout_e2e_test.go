package server

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"mime/multipart"
	"strings"
	"testing"

	devicev1 "github.com/meshanics/meshanics/proto/meshanics/device/v1"
)

// e2eDevice is a scripted device: a real key, a certificate from
// enrollment, and a gRPC client over mTLS.
type e2eDevice struct {
	name      string
	c         devicev1.DeviceServiceClient
	installed map[string]string // artifact name → version
}

func (r *running) api(t *testing.T, method, path string, body any) (int, []byte) {
	t.Helper()
	var s string
	if body != nil {
		b, _ := json.Marshal(body)
		s = string(b)
	}
	return r.do(t, method, path, s, map[string]string{"Authorization": "Bearer " + r.key, "Content-Type": "application/json"})
}

func (r *running) mustAPI(t *testing.T, want int, method, path string, body any, out any) {
	t.Helper()
	code, b := r.api(t, method, path, body)
	if code != want {
		t.Fatalf("%s %s = %d %s, want %d", method, path, code, b, want)
	}
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			t.Fatalf("%s %s: decode %s: %v", method, path, b, err)
		}
	}
}

func enrollDevice(t *testing.T, r *running, name string) *e2eDevice {
	t.Helper()
	return enrollDeviceOn(t, r, r, name, map[string]string{})
}

// enrollDeviceOn enrolls name with a token minted on r and registers it
// with the replica serve, as a device that has installed.
func enrollDeviceOn(t *testing.T, r, serve *running, name string, installed map[string]string) *e2eDevice {
	t.Helper()
	var tok struct {
		Token string `json:"token"`
	}
	r.mustAPI(t, 201, "POST", "/api/v1/enrollment-tokens", map[string]any{}, &tok)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	body, _ := json.Marshal(map[string]any{"token": tok.Token, "name": name, "csr_pem": csr(t, key)})
	code, b := r.do(t, "POST", "/api/v1/enroll", string(body), map[string]string{"Content-Type": "application/json"})
	if code != 201 {
		t.Fatalf("enroll %s = %d %s", name, code, b)
	}
	var er struct {
		CertificatePEM string `json:"certificate_pem"`
	}
	_ = json.Unmarshal(b, &er)
	d := &e2eDevice{name: name, c: deviceClient(t, serve, er.CertificatePEM, key), installed: installed}
	if _, err := d.c.Register(context.Background(), &devicev1.RegisterRequest{AgentVersion: "1.0.0"}); err != nil {
		t.Fatalf("Register %s: %v", name, err)
	}
	return d
}

// heartbeat returns the one assignment the device is served, or nil.
func (d *e2eDevice) heartbeat(t *testing.T) *devicev1.Assignment {
	t.Helper()
	var inst []*devicev1.InstalledArtifact
	for n, v := range d.installed {
		inst = append(inst, &devicev1.InstalledArtifact{Kind: "model", Name: n, Version: v})
	}
	resp, err := d.c.Heartbeat(context.Background(), &devicev1.HeartbeatRequest{Installed: inst})
	if err != nil {
		t.Fatalf("Heartbeat %s: %v", d.name, err)
	}
	if len(resp.GetAssignments()) > 1 {
		t.Fatalf("Heartbeat %s: %d assignments", d.name, len(resp.GetAssignments()))
	}
	if len(resp.GetAssignments()) == 0 {
		return nil
	}
	return resp.GetAssignments()[0]
}

// run applies a served assignment like an agent would, ending in final.
func (d *e2eDevice) run(t *testing.T, a *devicev1.Assignment, final string) {
	t.Helper()
	if a == nil {
		t.Fatalf("%s: no assignment to run", d.name)
	}
	steps := []string{"downloading", "verifying", "applying", final}
	if a.GetAction() == "revert" {
		steps = []string{"reverting", final}
	}
	for _, s := range steps {
		if _, err := d.c.ReportArtifactStatus(context.Background(), &devicev1.ReportArtifactStatusRequest{AssignmentId: a.GetId(), State: s, Detail: s}); err != nil {
			t.Fatalf("ReportArtifactStatus %s %s: %v", d.name, s, err)
		}
	}
	switch {
	case final == "healthy":
		d.installed[a.GetArtifact().GetName()] = a.GetArtifact().GetVersion()
	case final == "reverted":
		d.installed[a.GetArtifact().GetName()] = a.GetRevertTo().GetVersion()
	}
}

func publishModel(t *testing.T, r *running, version string) {
	t.Helper()
	var buf bytes.Buffer
	mw := multipart.NewWriter(&buf)
	_ = mw.WriteField("metadata", fmt.Sprintf(`{"kind":"model","name":"det","version":%q,"file_name":"m.onnx","manifest":{"framework":"onnx"}}`, version))
	fw, _ := mw.CreateFormFile("file", "m.onnx")
	fmt.Fprintf(fw, "weights of %s", version)
	mw.Close()
	code, b := r.do(t, "POST", "/api/v1/artifacts", buf.String(), map[string]string{"Authorization": "Bearer " + r.key, "Content-Type": mw.FormDataContentType()})
	if code != 201 {
		t.Fatalf("publish det@%s = %d %s", version, code, b)
	}
}

type e2eRollout struct {
	ID                   string `json:"id"`
	State                string `json:"state"`
	Failures             int    `json:"failures"`
	AcknowledgedFailures int    `json:"acknowledged_failures"`
	Waves                []struct {
		Devices int            `json:"devices"`
		Counts  map[string]int `json:"counts"`
	} `json:"waves"`
}

func (r *running) rolloutState(t *testing.T, id, want string) e2eRollout {
	t.Helper()
	var v e2eRollout
	r.mustAPI(t, 200, "GET", "/api/v1/rollouts/"+id, nil, &v)
	if v.State != want {
		t.Fatalf("rollout %s = %s, want %s (%+v)", id, v.State, want, v.Waves)
	}
	return v
}

func (r *running) auditTypes(t *testing.T, subject string) string {
	t.Helper()
	var l struct {
		Items []struct {
			Type  string          `json:"type"`
			Actor string          `json:"actor"`
			Data  json.RawMessage `json:"data"`
		} `json:"items"`
	}
	r.mustAPI(t, 200, "GET", "/api/v1/audit?limit=200&subject="+subject, nil, &l)
	var out []string
	for i := len(l.Items) - 1; i >= 0; i-- {
		out = append(out, l.Items[i].Type)
	}
	return strings.Join(out, " ")
}

// TestRolloutEndToEnd drives two rollouts through the wired server with
// scripted devices that hold real certificates from enrollment and speak
// mTLS gRPC: canary, manual approval, halt, resume, completion, then abort
// with revert, checking REST state and audit events at each step.
func TestRolloutEndToEnd(t *testing.T) {
	cfg := testConfig(t, t.TempDir())
	cfg.Dev = true                         // the server signs with its own ceremony keys
	cfg.HeartbeatInterval = 60_000_000_000 // 60 s: nobody goes offline during the test
	r := start(t, cfg)
	var devs []*e2eDevice
	var names []string
	for i := 1; i <= 5; i++ {
		d := enrollDevice(t, r, fmt.Sprintf("cam-%d", i))
		devs = append(devs, d)
		names = append(names, d.name)
	}
	publishModel(t, r, "2.0")
	publishModel(t, r, "3.0")
	var g struct {
		Unresolved []string `json:"unresolved"`
	}
	r.mustAPI(t, 201, "POST", "/api/v1/groups", map[string]any{"name": "line", "devices": append(names, "ghost")}, &g)
	if len(g.Unresolved) != 1 || g.Unresolved[0] != "ghost" {
		t.Fatalf("group unresolved = %v", g.Unresolved)
	}

	// Rollout A: 20 % canary, then a manual gate; one failure tolerated.
	var a e2eRollout
	r.mustAPI(t, 201, "POST", "/api/v1/rollouts", map[string]any{"artifact": "det@2.0", "group": "line",
		"probe":    map[string]any{"type": "file", "target": "/var/lib/det/ready"},
		"strategy": map[string]any{"waves": []map[string]any{{"percent": 20}, {"percent": 100, "approval": "manual"}}, "max_failure_rate": 0.2}}, &a)
	served := map[string]*devicev1.Assignment{}
	for _, d := range devs {
		if as := d.heartbeat(t); as != nil {
			served[d.name] = as
			if as.GetArtifact().GetVersion() != "2.0" || as.GetArtifact().GetSha256() == "" || as.GetArtifact().GetLength() == 0 ||
				!strings.HasPrefix(as.GetArtifact().GetTargetPath(), "artifacts/model/det/2.0/") || as.GetProbe().GetTarget() != "/var/lib/det/ready" {
				t.Fatalf("canary assignment = %v", as)
			}
		}
	}
	if len(served) != 1 {
		t.Fatalf("canary served %d devices, want 1", len(served))
	}
	var rest []*e2eDevice
	for _, d := range devs {
		if as, ok := served[d.name]; ok {
			d.run(t, as, "healthy")
		} else {
			rest = append(rest, d)
		}
	}
	r.rolloutState(t, a.ID, "waiting_for_approval")
	if rest[0].heartbeat(t) != nil {
		t.Fatal("wave 1 served before approval")
	}
	r.mustAPI(t, 200, "POST", "/api/v1/rollouts/"+a.ID+"/approve", nil, nil)
	rest[0].run(t, rest[0].heartbeat(t), "failed")
	r.rolloutState(t, a.ID, "running") // 1 failure ≤ 0.2 × 5
	rest[1].run(t, rest[1].heartbeat(t), "rolled_back")
	v := r.rolloutState(t, a.ID, "halted")
	if v.Failures != 2 {
		t.Errorf("failures = %d, want 2", v.Failures)
	}
	if rest[2].heartbeat(t) != nil {
		t.Fatal("new assignment served while halted")
	}
	r.mustAPI(t, 200, "POST", "/api/v1/rollouts/"+a.ID+"/resume", nil, nil)
	for _, d := range rest[2:] {
		d.run(t, d.heartbeat(t), "healthy")
	}
	v = r.rolloutState(t, a.ID, "completed")
	if v.AcknowledgedFailures != 2 {
		t.Errorf("acknowledged = %d, want 2", v.AcknowledgedFailures)
	}
	got := r.auditTypes(t, a.ID)
	want := "rollout.created rollout.waiting_for_approval rollout.approved rollout.wave_started rollout.halted rollout.resumed rollout.completed"
	if got != want {
		t.Errorf("audit of rollout A =\n%s\nwant\n%s", got, want)
	}

	// Rollout B: 3.0 to everyone, then abort with revert.
	var b e2eRollout
	r.mustAPI(t, 201, "POST", "/api/v1/rollouts", map[string]any{"artifact": "det@3.0", "group": "line",
		"probe": map[string]any{"type": "file", "target": "/var/lib/det/ready"}}, &b)
	// Two devices that ran 2.0 apply 3.0; so does one that never had det
	// (its 2.0 failed): it has nothing to revert to.
	var healthy []*e2eDevice
	fresh := rest[0]
	for _, d := range devs {
		if d.installed["det"] == "2.0" && len(healthy) < 2 {
			healthy = append(healthy, d)
		}
	}
	for _, d := range append(healthy, fresh) {
		d.run(t, d.heartbeat(t), "healthy")
	}
	r.mustAPI(t, 200, "POST", "/api/v1/rollouts/"+b.ID+"/abort", map[string]any{"policy": "revert"}, nil)
	r.rolloutState(t, b.ID, "aborted")
	for _, d := range healthy {
		as := d.heartbeat(t)
		if as.GetAction() != "revert" || as.GetRevertTo().GetVersion() != "2.0" || as.GetRevertTo().GetSha256() == "" {
			t.Fatalf("%s after abort: %v, want a revert to 2.0", d.name, as)
		}
		d.run(t, as, "reverted")
	}
	var dl struct {
		Items []struct {
			Device, State string
		} `json:"items"`
	}
	r.mustAPI(t, 200, "GET", "/api/v1/rollouts/"+b.ID+"/devices", nil, &dl)
	reverted := 0
	for _, it := range dl.Items {
		if it.State == "reverted" {
			reverted++
		}
	}
	if reverted != 2 || healthy[0].installed["det"] != "2.0" {
		t.Errorf("after revert: %d reverted (%+v), %s runs %s", reverted, dl.Items, healthy[0].name, healthy[0].installed["det"])
	}
	if as := fresh.heartbeat(t); as != nil {
		t.Errorf("%s (no previous version) served %v after abort", fresh.name, as)
	}
	for _, it := range dl.Items {
		if it.Device == fresh.name && it.State != "revert_failed" {
			t.Errorf("%s after abort = %s, want revert_failed", it.Device, it.State)
		}
	}
	if got := r.auditTypes(t, b.ID); !strings.HasSuffix(got, "rollout.aborted rollout.revert_queued") {
		t.Errorf("audit of rollout B = %s", got)
	}
}
