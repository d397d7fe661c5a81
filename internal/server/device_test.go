package server

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/meshanics/meshanics/internal/server/ca"
	devicev1 "github.com/meshanics/meshanics/proto/meshanics/device/v1"
)

func csr(t *testing.T, k *ecdsa.PrivateKey) string {
	t.Helper()
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "x"}}, k)
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}))
}

func deviceClient(t *testing.T, r *running, certPEM string, key *ecdsa.PrivateKey) devicev1.DeviceServiceClient {
	t.Helper()
	blk, _ := pem.Decode([]byte(certPEM))
	if blk == nil {
		t.Fatal("no certificate")
	}
	_, dev, _ := r.srv.Addrs()
	creds := credentials.NewTLS(&tls.Config{RootCAs: r.srv.CA().Pool(), Certificates: []tls.Certificate{{Certificate: [][]byte{blk.Bytes}, PrivateKey: key}}})
	conn, err := grpc.NewClient(dev.String(), grpc.WithTransportCredentials(creds))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return devicev1.NewDeviceServiceClient(conn)
}

// TestEnrollRegisterRenew runs a device through the wired server: enroll
// over HTTP, Register over mTLS gRPC, RenewCertificate (the composition
// root hands the device API the enrollment service as its renewer), and
// Register again with the renewed certificate.
func TestEnrollRegisterRenew(t *testing.T) {
	r := start(t, testConfig(t, t.TempDir()))
	auth := map[string]string{"Authorization": "Bearer " + r.key, "Content-Type": "application/json"}
	code, b := r.do(t, "POST", "/api/v1/enrollment-tokens", `{}`, auth)
	if code != 201 {
		t.Fatalf("create token = %d %s", code, b)
	}
	var tok struct {
		Token string `json:"token"`
	}
	_ = json.Unmarshal(b, &tok)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	body, _ := json.Marshal(map[string]any{"token": tok.Token, "name": "edge-07", "csr_pem": csr(t, key)})
	code, b = r.do(t, "POST", "/api/v1/enroll", string(body), map[string]string{"Content-Type": "application/json"})
	if code != 201 {
		t.Fatalf("enroll = %d %s", code, b)
	}
	var er struct {
		CertificatePEM string `json:"certificate_pem"`
	}
	_ = json.Unmarshal(b, &er)

	ctx := context.Background()
	c := deviceClient(t, r, er.CertificatePEM, key)
	reg, err := c.Register(ctx, &devicev1.RegisterRequest{AgentVersion: "1.0.0"})
	if err != nil {
		t.Fatalf("Register: %v", err)
	}
	if reg.GetName() != "edge-07" {
		t.Errorf("Register name = %q, want edge-07 (from the certificate)", reg.GetName())
	}
	// Renewal with another key is refused; with the same key it works.
	other, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if _, err := c.RenewCertificate(ctx, &devicev1.RenewCertificateRequest{CsrPem: csr(t, other)}); err == nil {
		t.Error("RenewCertificate with another key succeeded")
	}
	ren, err := c.RenewCertificate(ctx, &devicev1.RenewCertificateRequest{CsrPem: csr(t, key)})
	if err != nil {
		t.Fatalf("RenewCertificate: %v", err)
	}
	blk, _ := pem.Decode([]byte(ren.GetCertificatePem()))
	nc, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	if id, err := r.srv.CA().Identity(nc); err != nil || id.Name != "edge-07" || !key.PublicKey.Equal(nc.PublicKey) {
		t.Fatalf("renewed certificate identity = %+v, %v", id, err)
	}
	if ca.SerialHex(nc) == "" {
		t.Fatal("no serial")
	}
	c2 := deviceClient(t, r, ren.GetCertificatePem(), key)
	if _, err := c2.Register(ctx, &devicev1.RegisterRequest{AgentVersion: "1.0.1"}); err != nil {
		t.Errorf("Register with the renewed certificate: %v", err)
	}
}
