package operatorapi

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"testing"
	"time"

	"github.com/meshanics/meshanics/internal/server/enrollment"
	"github.com/meshanics/meshanics/internal/server/store/storetest"
)

var _ provisioner = (*enrollment.Service)(nil)

func provisionCSR(t *testing.T) string {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "air-01"}}, k)
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}))
}

// TestProvisionOffline wires the API as the server does (Tokens is the
// enrollment service) and provisions an air-gapped device from a CSR.
func TestProvisionOffline(t *testing.T) {
	t.Parallel()
	clk := &clock{t: time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)}
	e := newEnv(t, storetest.SQLiteWith(t, storetest.Options{Now: clk.Now}), clk)
	svc := newEnrollmentService(t, e, clk)
	api, err := New(Config{Store: e.db, Logger: slog.New(slog.DiscardHandler), Now: clk.Now, Tokens: svc,
		Invalidate: func(name string) { e.mu.Lock(); e.invalidated = append(e.invalidated, name); e.mu.Unlock() }})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(api.Handler())
	t.Cleanup(srv.Close)
	e.srv = srv

	body := map[string]any{"name": "air-01", "csr_pem": provisionCSR(t), "tags": map[string]string{"site": "vault"}}
	r := e.req("POST", "/api/v1/devices/provision", e.keys[RoleViewer], body)
	if r.status != http.StatusForbidden || r.errorMessage() != "missing permission: enrollment.write" {
		t.Errorf("viewer provision = %d %s, want 403 naming enrollment.write", r.status, r.body)
	}
	e.want(e.req("POST", "/api/v1/devices/provision", "", body), 401, "unauthenticated provision")

	got := decode[enrollment.Response](t, e.admin("POST", "/api/v1/devices/provision", body))
	blk, _ := pem.Decode([]byte(got.CertificatePEM))
	if blk == nil {
		t.Fatalf("provision response %+v has no certificate", got)
	}
	cert, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	if id, err := e.ca.Identity(cert); err != nil || id.Name != "air-01" || got.Config.Server != "cp.fleet.test:9443" || got.CAPEM != string(e.ca.CertPEM()) {
		t.Errorf("provision = identity %+v (%v), response %+v", id, err, got)
	}
	d := decode[deviceJSON](t, e.admin("GET", "/api/v1/devices/air-01", nil))
	if d.Tags["site"] != "vault" || d.Status != "offline" {
		t.Errorf("device after provisioning = %+v, want tag site=vault, offline until it connects", d)
	}
	// Another key under the same active name is a conflict, and nothing
	// changes; a CSR that does not parse is a 400.
	other := map[string]any{"name": "air-01", "csr_pem": provisionCSR(t)}
	e.want(e.admin("POST", "/api/v1/devices/provision", other), 409, "provision air-01 with another key")
	e.want(e.admin("POST", "/api/v1/devices/provision", map[string]any{"name": "air-02", "csr_pem": "nope"}), 400, "bad CSR")
	e.want(e.admin("POST", "/api/v1/devices/provision", map[string]any{"name": "air-02", "csr_pem": provisionCSR(t), "token": "x"}), 400, "unknown field")
	e.want(e.admin("GET", "/api/v1/devices/air-02", nil), 404, "air-02 after refused provisioning")
	// With replace the new key takes over, and the device API is told to
	// drop the old certificate at once.
	other["replace"] = true
	e.want(e.admin("POST", "/api/v1/devices/provision", other), 201, "provision air-01 with replace")
	e.mu.Lock()
	defer e.mu.Unlock()
	if !slices.Contains(e.invalidated, "air-01") {
		t.Errorf("invalidated = %v, want air-01", e.invalidated)
	}
}

// TestProvisionUnavailableWithoutService: the StoreTokens fallback cannot
// sign certificates, so the route answers 503 rather than pretending.
func TestProvisionUnavailableWithoutService(t *testing.T) {
	t.Parallel()
	clk := &clock{t: time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)}
	e := newEnv(t, storetest.SQLiteWith(t, storetest.Options{Now: clk.Now}), clk)
	e.want(e.admin("POST", "/api/v1/devices/provision", map[string]any{"name": "air-01", "csr_pem": provisionCSR(t)}), 503, "provision without enrollment service")
}
