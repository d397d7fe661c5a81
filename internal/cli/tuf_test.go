package cli

import (
	"crypto/tls"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/meshanics/meshanics/internal/server/artifacts"
	"github.com/meshanics/meshanics/internal/server/ca"
	"github.com/meshanics/meshanics/internal/server/operatorapi"
	"github.com/meshanics/meshanics/internal/server/store/storetest"
	"github.com/meshanics/meshanics/internal/server/updaterepo"
)

// newTUFServer is newServer with the update repository and publishing.
func newTUFServer(t *testing.T) *server {
	t.Helper()
	s := newServer(t) // for keys and CA file; its listener is replaced below
	auth, err := ca.Create(t.TempDir(), "fleet.test", time.Now)
	if err != nil {
		t.Fatal(err)
	}
	db := storetest.SQLite(t)
	dir := t.TempDir()
	blobs, err := artifacts.NewBlobs(filepath.Join(dir, "blobs"))
	if err != nil {
		t.Fatal(err)
	}
	repo, err := updaterepo.New(updaterepo.Config{DataDir: dir, DB: db, Blobs: blobs})
	if err != nil {
		t.Fatal(err)
	}
	svc, err := artifacts.New(artifacts.Config{DB: db, Blobs: blobs, Signer: repo})
	if err != nil {
		t.Fatal(err)
	}
	api, err := operatorapi.New(operatorapi.Config{
		Store: db, Logger: slog.New(slog.DiscardHandler), CAPin: auth.Fingerprint(), CAPEM: auth.CertPEM(), PublicURL: "https://127.0.0.1:8443",
		Argon2: &operatorapi.Argon2Params{Memory: 64, Time: 1, Threads: 1}, Artifacts: svc, Trust: repo,
	})
	if err != nil {
		t.Fatal(err)
	}
	url, caFile := serveTLS(t, auth, api.Handler())
	s.url, s.caFile, s.db = url, caFile, db
	s.client = &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: auth.Pool()}}}
	s.admin, s.viewer = s.key("admin"), s.key("viewer")
	return s
}

func (s *server) ok(key string, args ...string) string {
	s.t.Helper()
	r := s.as(key, args...)
	if r.code != 0 {
		s.t.Fatalf("meshctl %v = exit %d, stderr %s", args, r.code, r.stderr)
	}
	if strings.Contains(r.stdout+r.stderr, "PRIVATE KEY") {
		s.t.Fatalf("meshctl %v printed key material", args)
	}
	return r.stdout
}

func TestCeremonyImportPublishEndToEnd(t *testing.T) {
	s := newTUFServer(t)
	work := t.TempDir()
	keys, out, online := filepath.Join(work, "keys"), filepath.Join(work, "export"), filepath.Join(work, "online.json")

	if got := s.ok(s.viewer, "trust", "show"); !strings.Contains(got, "not initialized") {
		t.Fatalf("trust show before the ceremony = %q", got)
	}
	s.ok(s.admin, "trust", "online-keys", "-out", online)
	// The ceremony runs without any server flags.
	r := runCLI(t, nil, "", "tuf", "init", "-keys", keys, "-online-keys", online, "-root-keys", "3", "-root-threshold", "2")
	if r.code != 0 || !strings.Contains(r.stdout, "threshold 2 of 3") {
		t.Fatalf("tuf init = %d %q %q", r.code, r.stdout, r.stderr)
	}
	if r := runCLI(t, nil, "", "tuf", "export", "-keys", keys, "-out", out); r.code != 0 {
		t.Fatalf("tuf export = %d %s", r.code, r.stderr)
	}
	ents, _ := os.ReadDir(out)
	for _, e := range ents {
		if strings.HasSuffix(e.Name(), ".key") {
			t.Fatalf("export contains key file %s", e.Name())
		}
	}
	if got := s.ok(s.admin, "tuf", "import", out); !strings.Contains(got, "root v1 and targets v1") {
		t.Fatalf("tuf import = %q", got)
	}
	if r := s.as(s.viewer, "tuf", "import", out); r.code != 1 {
		t.Fatalf("viewer tuf import = exit %d, want 1 (forbidden)", r.code)
	}

	manifest := filepath.Join(work, "manifest.json")
	model := filepath.Join(work, "det.onnx")
	os.WriteFile(manifest, []byte(`{"framework":"onnx","metrics":{"map":0.61}}`), 0o644)
	os.WriteFile(model, []byte(strings.Repeat("w", 5000)), 0o644)
	got := s.ok(s.admin, "artifacts", "publish", "-kind", "model", "-name", "det", "-version", "1.0", "-file", model, "-manifest", manifest)
	if !strings.Contains(got, "artifacts/model/det/1.0/det.onnx") || !strings.Contains(got, "5000 bytes") {
		t.Fatalf("artifacts publish = %q", got)
	}
	if r := s.as(s.admin, "artifacts", "publish", "-kind", "model", "-name", "det", "-version", "1.0", "-file", model, "-manifest", manifest); r.code != 1 || !strings.Contains(r.stderr, "already exists") {
		t.Fatalf("duplicate publish = %d %q, want exit 1 naming the conflict", r.code, r.stderr)
	}
	if r := s.as(s.admin, "artifacts", "publish", "-kind", "container", "-name", "web", "-version", "1", "-image", "nginx:latest"); r.code != 2 {
		t.Fatalf("publish container by tag = exit %d, want 2 (usage)", r.code)
	}
	s.ok(s.admin, "artifacts", "publish", "-kind", "container", "-name", "web", "-version", "1", "-image", "r.example/web@sha256:"+strings.Repeat("c", 64))
	if got := s.ok(s.viewer, "artifacts", "list"); !strings.Contains(got, "det@1.0") || !strings.Contains(got, "web@1") {
		t.Fatalf("artifacts list = %q", got)
	}
	if got := s.ok(s.viewer, "artifacts", "show", "det@1.0"); !strings.Contains(got, `"framework":"onnx"`) {
		t.Fatalf("artifacts show = %q", got)
	}
	if got := s.ok(s.viewer, "-o", "json", "artifacts", "show", "det", "1.0"); string(s.getAs(s.viewer, "/api/v1/artifacts/det/1.0")) != got {
		t.Fatalf("-o json artifacts show is not the REST body")
	}

	// Rotate root offline, import, and the trust center shows v2.
	if r := runCLI(t, nil, "", "tuf", "rotate-root", "-keys", keys, "-root-keys", "2", "-root-threshold", "1"); r.code != 0 {
		t.Fatalf("tuf rotate-root = %d %s", r.code, r.stderr)
	}
	s.ok(s.admin, "tuf", "import", keys)
	if got := s.ok(s.viewer, "trust", "show"); !strings.Contains(got, "root") || !strings.Contains(got, "publisher") {
		t.Fatalf("trust show = %q", got)
	}
	if got := s.ok(s.viewer, "-o", "json", "trust", "show"); !strings.Contains(got, `"role":"root","online":false,"version":2`) {
		t.Fatalf("trust show json = %q, want root version 2", got)
	}
}

func (s *server) getAs(key, path string) []byte {
	old := s.admin
	s.admin = key
	defer func() { s.admin = old }()
	return s.get(path)
}
