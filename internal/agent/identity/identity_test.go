package identity

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/meshanics/meshanics/internal/agent/identity/testca"
	"github.com/meshanics/meshanics/internal/atomicfile"
)

func TestKeyRoundTripAndCSR(t *testing.T) {
	k, err := GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	b, err := EncodeKey(k)
	if err != nil {
		t.Fatal(err)
	}
	k2, err := ParseKey(b)
	if err != nil || !k2.Equal(k) {
		t.Fatalf("ParseKey(EncodeKey(k)) = %v, %v; want k", k2, err)
	}
	csrPEM, err := CSR(k, "dev1")
	if err != nil {
		t.Fatal(err)
	}
	blk, _ := pem.Decode(csrPEM)
	csr, err := x509.ParseCertificateRequest(blk.Bytes)
	if err != nil || csr.CheckSignature() != nil || csr.Subject.CommonName != "dev1" {
		t.Fatalf("CSR() not a valid request for dev1: %v", err)
	}
}

func TestParseKeyRejectsOtherKeys(t *testing.T) {
	for _, in := range []string{"", "garbage", "-----BEGIN RSA PRIVATE KEY-----\nAAAA\n-----END RSA PRIVATE KEY-----\n"} {
		if _, err := ParseKey([]byte(in)); err == nil {
			t.Errorf("ParseKey(%q) = nil error", in)
		}
	}
}

func TestNeedsRenewal(t *testing.T) {
	nb := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	c := &x509.Certificate{NotBefore: nb, NotAfter: nb.Add(90 * 24 * time.Hour)}
	tests := []struct {
		at   time.Duration
		want bool
	}{{0, false}, {59 * 24 * time.Hour, false}, {61 * 24 * time.Hour, true}, {100 * 24 * time.Hour, true}}
	for _, tt := range tests {
		if got := NeedsRenewal(c, nb.Add(tt.at)); got != tt.want {
			t.Errorf("NeedsRenewal(at +%v) = %v, want %v", tt.at, got, tt.want)
		}
	}
}

func writeCreds(t *testing.T, ca *testca.CA, ttl time.Duration) (dir string) {
	t.Helper()
	dir = t.TempDir()
	k, _ := GenerateKey()
	kb, _ := EncodeKey(k)
	if err := atomicfile.WriteFile(filepath.Join(dir, "device.key"), kb, 0o600); err != nil {
		t.Fatal(err)
	}
	cb := ca.Device(t, "dev1", &k.PublicKey, time.Now().Add(-time.Minute), ttl)
	if err := atomicfile.WriteFile(filepath.Join(dir, "device.crt"), cb, 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

func TestStoreReplaceSwapsTheCertificateTLSPresents(t *testing.T) {
	ca := testca.New(t)
	dir := writeCreds(t, ca, time.Hour)
	s, err := Load(filepath.Join(dir, "device.crt"), filepath.Join(dir, "device.key"))
	if err != nil {
		t.Fatal(err)
	}
	old := s.Leaf()
	var notified []byte
	s.OnReplace(func(b []byte) { notified = b })
	fresh := ca.Device(t, "dev1", &s.Key().PublicKey, time.Now(), 90*24*time.Hour)
	if err := s.Replace(fresh, ca.Pool(), time.Now()); err != nil {
		t.Fatal(err)
	}
	got, _ := s.GetClientCertificate(&tls.CertificateRequestInfo{})
	if got.Leaf.SerialNumber.Cmp(old.SerialNumber) == 0 {
		t.Error("GetClientCertificate still presents the old certificate after Replace")
	}
	onDisk, _ := os.ReadFile(filepath.Join(dir, "device.crt"))
	if string(onDisk) != string(fresh) || string(notified) != string(fresh) {
		t.Error("Replace did not write the new certificate or notify")
	}
}

func TestStoreReplaceRefusesForeignCertificates(t *testing.T) {
	ca := testca.New(t)
	dir := writeCreds(t, ca, time.Hour)
	s, err := Load(filepath.Join(dir, "device.crt"), filepath.Join(dir, "device.key"))
	if err != nil {
		t.Fatal(err)
	}
	before, _ := os.ReadFile(filepath.Join(dir, "device.crt"))
	other, _ := GenerateKey()
	otherCA := testca.New(t)
	for name, pemBytes := range map[string][]byte{
		"other key": ca.Device(t, "dev1", &other.PublicKey, time.Now(), time.Hour),
		"other CA":  otherCA.Device(t, "dev1", &s.Key().PublicKey, time.Now(), time.Hour),
		"garbage":   []byte("nope"),
	} {
		if err := s.Replace(pemBytes, ca.Pool(), time.Now()); err == nil {
			t.Errorf("Replace(%s) = nil, want error", name)
		}
	}
	after, _ := os.ReadFile(filepath.Join(dir, "device.crt"))
	if string(before) != string(after) {
		t.Error("a refused Replace changed device.crt")
	}
}

func TestLoadMissingIsNoCredentials(t *testing.T) {
	dir := t.TempDir()
	_, err := Load(filepath.Join(dir, "device.crt"), filepath.Join(dir, "device.key"))
	if !errors.Is(err, ErrNoCredentials) {
		t.Errorf("Load(missing) = %v, want ErrNoCredentials", err)
	}
}

func TestWriteFileAtomicMode(t *testing.T) {
	p := filepath.Join(t.TempDir(), "k")
	if err := atomicfile.WriteFile(p, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := atomicfile.WriteFile(p, []byte("y"), 0o600); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(p)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("mode = %v, %v; want 0600", fi.Mode(), err)
	}
	entries, _ := os.ReadDir(filepath.Dir(p))
	if len(entries) != 1 {
		t.Errorf("temp files left behind: %d entries", len(entries))
	}
}
