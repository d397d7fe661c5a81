package server

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"github.com/meshanics/meshanics/internal/server/ca"
	devicev1 "github.com/meshanics/meshanics/proto/meshanics/device/v1"
)

// TestReplicasShareOnePostgres runs two replicas on one PostgreSQL with the
// same pki/: a token minted on one enrolls a device on the other, and the
// device is served by both.
func TestReplicasShareOnePostgres(t *testing.T) {
	pg := freshPostgres(t)
	cfgA := testConfig(t, t.TempDir())
	cfgA.Database = pg
	key, err := Initialize(context.Background(), cfgA, quietLog())
	if err != nil {
		t.Fatal(err)
	}
	cfgB := testConfig(t, t.TempDir())
	cfgB.Database = pg
	copyPKI(t, cfgA.DataDir, cfgB.DataDir)
	a, b := start(t, cfgA), start(t, cfgB)
	if b.key != "" {
		t.Error("the second replica created another admin")
	}
	if a.srv.CA().Fingerprint() != b.srv.CA().Fingerprint() {
		t.Fatal("replicas have different CAs")
	}
	auth := map[string]string{"Authorization": "Bearer " + key, "Content-Type": "application/json"}
	code, body := a.do(t, "POST", "/api/v1/enrollment-tokens", `{}`, auth)
	if code != 201 {
		t.Fatalf("create token on A = %d %s", code, body)
	}
	var tok struct {
		Token string `json:"token"`
	}
	_ = json.Unmarshal(body, &tok)
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	req, _ := json.Marshal(map[string]any{"token": tok.Token, "name": "edge-r", "csr_pem": csr(t, k)})
	code, body = b.do(t, "POST", "/api/v1/enroll", string(req), map[string]string{"Content-Type": "application/json"})
	if code != 201 {
		t.Fatalf("enroll on B = %d %s", code, body)
	}
	var er struct {
		CertificatePEM string `json:"certificate_pem"`
	}
	_ = json.Unmarshal(body, &er)
	for name, r := range map[string]*running{"A": a, "B": b} {
		c := deviceClient(t, r, er.CertificatePEM, k)
		if _, err := c.Register(context.Background(), &devicev1.RegisterRequest{AgentVersion: "1"}); err != nil {
			t.Errorf("Register on replica %s: %v", name, err)
		}
	}
	if code, body := a.do(t, "GET", "/api/v1/devices/edge-r", "", auth); code != 200 {
		t.Errorf("device on A = %d %s", code, body)
	}
	// The token's single use is gone for both replicas.
	code, _ = a.do(t, "POST", "/api/v1/enroll", string(req), map[string]string{"Content-Type": "application/json"})
	if code != 401 {
		t.Errorf("replayed token on A = %d, want 401", code)
	}
}

// copyPKI gives the replica with data dir to the CA of the one with data
// dir from (replicas share one pki/).
func copyPKI(t *testing.T, from, to string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Join(to, "pki"), 0o700); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{ca.CACertFile, ca.CAKeyFile} {
		b, err := os.ReadFile(filepath.Join(from, "pki", f))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(to, "pki", f), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
}
