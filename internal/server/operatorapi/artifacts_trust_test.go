package operatorapi

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"mime/multipart"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/meshanics/meshanics/internal/ceremony"
	"github.com/meshanics/meshanics/internal/server/artifacts"
	"github.com/meshanics/meshanics/internal/server/store/storetest"
	"github.com/meshanics/meshanics/internal/server/updaterepo"
)

// newTUFEnv is env with the update repository (not yet initialized) and
// the publishing service wired in, over SQLite.
func newTUFEnv(t *testing.T, maxUpload int64) (*env, *updaterepo.Repository) {
	t.Helper()
	clk := &clock{t: time.Now().UTC().Truncate(time.Second)}
	e := newEnv(t, storetest.SQLiteWith(t, storetest.Options{Now: clk.Now}), clk)
	dir := t.TempDir()
	blobs, err := artifacts.NewBlobs(filepath.Join(dir, "blobs"))
	if err != nil {
		t.Fatal(err)
	}
	repo, err := updaterepo.New(updaterepo.Config{DataDir: dir, DB: e.db, Blobs: blobs, Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	svc, err := artifacts.New(artifacts.Config{DB: e.db, Blobs: blobs, Signer: repo, MaxUpload: maxUpload})
	if err != nil {
		t.Fatal(err)
	}
	e.api, err = New(Config{Store: e.db, Logger: slog.New(slog.DiscardHandler), Now: clk.Now, CAPin: e.ca.Fingerprint(), CAPEM: e.ca.CertPEM(),
		PublicURL: "https://cp.fleet.test:8443", Argon2: &Argon2Params{Memory: 64, Time: 1, Threads: 1}, Artifacts: svc, Trust: repo})
	if err != nil {
		t.Fatal(err)
	}
	e.srv.Close()
	e.srv = httptest.NewServer(e.api.Handler())
	t.Cleanup(e.srv.Close)
	return e, repo
}

// multipartBody builds a publish body: metadata first, then file.
func multipartBody(t *testing.T, meta string, file []byte) (string, []byte) {
	t.Helper()
	var buf bytes.Buffer
	mw := multipart.NewWriter(&buf)
	_ = mw.WriteField("metadata", meta)
	if file != nil {
		fw, _ := mw.CreateFormFile("file", "model.onnx")
		_, _ = fw.Write(file)
	}
	_ = mw.Close()
	return mw.FormDataContentType(), buf.Bytes()
}

func TestTrustCeremonyOverREST(t *testing.T) {
	e, _ := newTUFEnv(t, 1<<20)
	// Not initialized: publishing answers 503 with the hint.
	ct, body := multipartBody(t, `{"kind":"model","name":"det","version":"1","manifest":{"framework":"onnx"}}`, []byte("w"))
	r := e.req(http.MethodPost, "/api/v1/artifacts", e.keys[RoleAdmin], nil, "Content-Type", ct, "X-Raw-Body", string(body))
	e.want(r, http.StatusServiceUnavailable, "publish before the ceremony")
	if !strings.Contains(r.errorMessage(), "meshctl tuf") {
		t.Errorf("503 message %q does not say what to do", r.errorMessage())
	}
	// Operators without trust.manage cannot read the online keys or import.
	e.want(e.req(http.MethodGet, "/api/v1/trust/online-keys", e.keys[RoleOperator], nil), http.StatusForbidden, "operator online-keys")
	r = e.admin(http.MethodGet, "/api/v1/trust/online-keys", nil)
	e.want(r, http.StatusOK, "online-keys")
	online, err := ceremony.ParseOnlineKeys(r.body)
	if err != nil {
		t.Fatal(err)
	}
	cdir := t.TempDir()
	if _, err := ceremony.Init(cdir, ceremony.InitOptions{Online: online, Now: e.clock.Now()}); err != nil {
		t.Fatal(err)
	}
	roots, targets, _ := ceremony.Bundle(cdir)
	req := updaterepo.ImportRequest{Targets: targets}
	for _, b := range roots {
		req.Roots = append(req.Roots, b)
	}
	e.want(e.req(http.MethodPost, "/api/v1/trust/metadata", e.keys[RoleOperator], req), http.StatusForbidden, "operator import")
	e.want(e.admin(http.MethodPost, "/api/v1/trust/metadata", req), http.StatusOK, "import")
	e.want(e.admin(http.MethodPost, "/api/v1/trust/metadata", req), http.StatusConflict, "import again")
	e.want(e.admin(http.MethodPost, "/api/v1/trust/metadata", `{"roots":[{"signed":{}}]}`), http.StatusBadRequest, "import garbage")

	r = e.req(http.MethodGet, "/api/v1/trust", e.keys[RoleViewer], nil)
	e.want(r, http.StatusOK, "trust center")
	info := decode[updaterepo.TrustInfo](t, r)
	if !info.Initialized || len(info.Roles) != 5 {
		t.Fatalf("trust center = %+v, want 5 roles", info)
	}

	// Publish: 201, then 409 on the duplicate, 400 on bad metadata.
	r = e.req(http.MethodPost, "/api/v1/artifacts", e.keys[RoleOperator], nil, "Content-Type", ct, "X-Raw-Body", string(body))
	e.want(r, http.StatusCreated, "publish")
	got := decode[artifacts.Artifact](t, r)
	if got.TargetPath != "artifacts/model/det/1/model.onnx" || got.Length != 1 {
		t.Fatalf("publish = %+v", got)
	}
	e.want(e.req(http.MethodPost, "/api/v1/artifacts", e.keys[RoleOperator], nil, "Content-Type", ct, "X-Raw-Body", string(body)), http.StatusConflict, "duplicate")
	e.want(e.req(http.MethodPost, "/api/v1/artifacts", e.keys[RoleViewer], nil, "Content-Type", ct, "X-Raw-Body", string(body)), http.StatusForbidden, "viewer publish")
	bct, bbody := multipartBody(t, `{"kind":"model","name":"Bad!","version":"1","manifest":{"framework":"onnx"}}`, []byte("w"))
	e.want(e.req(http.MethodPost, "/api/v1/artifacts", e.keys[RoleOperator], nil, "Content-Type", bct, "X-Raw-Body", string(bbody)), http.StatusBadRequest, "bad name")
	big := bytes.Repeat([]byte("x"), 2<<20)
	gct, gbody := multipartBody(t, `{"kind":"model","name":"big","version":"1","manifest":{"framework":"onnx"}}`, big)
	e.want(e.req(http.MethodPost, "/api/v1/artifacts", e.keys[RoleOperator], nil, "Content-Type", gct, "X-Raw-Body", string(gbody)), http.StatusRequestEntityTooLarge, "too large")
	// Container as JSON.
	cont := map[string]any{"kind": "container", "name": "web", "version": "2", "container": map[string]any{"image": "r.example/web@sha256:" + strings.Repeat("b", 64)}}
	e.want(e.req(http.MethodPost, "/api/v1/artifacts", e.keys[RoleOperator], cont), http.StatusCreated, "container")
	e.want(e.req(http.MethodPost, "/api/v1/artifacts", e.keys[RoleOperator], map[string]any{"kind": "container", "name": "web", "version": "3", "container": map[string]any{"image": "nginx:latest"}}), http.StatusBadRequest, "container by tag")

	r = e.req(http.MethodGet, "/api/v1/artifacts?kind=model", e.keys[RoleViewer], nil)
	e.want(r, http.StatusOK, "list")
	list := decode[List[artifacts.Artifact]](t, r)
	if list.Total != 1 || list.Items[0].Name != "det" {
		t.Fatalf("list = %+v", list)
	}
	e.want(e.req(http.MethodGet, "/api/v1/artifacts/det/1", e.keys[RoleViewer], nil), http.StatusOK, "show")
	e.want(e.req(http.MethodGet, "/api/v1/artifacts/det/9", e.keys[RoleViewer], nil), http.StatusNotFound, "show missing")

	// Online key rotation is audited and exported next time.
	r = e.admin(http.MethodPost, "/api/v1/trust/online-keys/rotate", map[string]string{"role": "publisher"})
	e.want(r, http.StatusCreated, "rotate publisher key")
	var rot struct {
		KeyID string `json:"keyid"`
	}
	_ = json.Unmarshal(r.body, &rot)
	r = e.admin(http.MethodGet, "/api/v1/trust/online-keys", nil)
	if k, _ := ceremony.ParseOnlineKeys(r.body); ceremony.KeyID(k.Publisher) != rot.KeyID {
		t.Fatalf("online-keys after rotation names publisher %s, want the new %s", ceremony.KeyID(k.Publisher), rot.KeyID)
	}
}
