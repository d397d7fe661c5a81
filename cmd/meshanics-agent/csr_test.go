package main

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/meshanics/meshanics/internal/agent/identity"
)

func parseCSR(t *testing.T, b []byte) *x509.CertificateRequest {
	t.Helper()
	blk, _ := pem.Decode(b)
	if blk == nil || blk.Type != "CERTIFICATE REQUEST" {
		t.Fatalf("output %q is not a PEM CSR", b)
	}
	csr, err := x509.ParseCertificateRequest(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	if err := csr.CheckSignature(); err != nil {
		t.Fatalf("CSR signature: %v", err)
	}
	return csr
}

// TestCSRCreatesKeyOnceAndReusesIt: the first call creates device.key
// (0600) and the CSR is for it; a second call reuses the key.
func TestCSRCreatesKeyOnceAndReusesIt(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "etc")
	var out, errb bytes.Buffer
	if code := run(context.Background(), []string{"csr", "-name", "air-01", "-config-dir", dir}, &out, &errb, noEnv); code != 0 {
		t.Fatalf("run(csr) = %d; stderr %q", code, errb.String())
	}
	csr := parseCSR(t, out.Bytes())
	keyPath := filepath.Join(dir, "device.key")
	st, err := os.Stat(keyPath)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Errorf("device.key mode %v, want 0600", st.Mode().Perm())
	}
	key, err := identity.ReadKeyFile(keyPath)
	if err != nil {
		t.Fatal(err)
	}
	if !key.PublicKey.Equal(csr.PublicKey) || csr.Subject.CommonName != "air-01" {
		t.Errorf("CSR for %q with another key than device.key", csr.Subject.CommonName)
	}
	before, _ := os.ReadFile(keyPath)
	csrFile := filepath.Join(t.TempDir(), "air-01.csr")
	out.Reset()
	if code := run(context.Background(), []string{"csr", "-name", "air-01", "-config-dir", dir, "-out", csrFile}, &out, &errb, noEnv); code != 0 {
		t.Fatalf("second run(csr) = %d; stderr %q", code, errb.String())
	}
	b, err := os.ReadFile(csrFile)
	if err != nil {
		t.Fatal(err)
	}
	if again := parseCSR(t, b); !key.PublicKey.Equal(again.PublicKey) {
		t.Error("second CSR is for another key: the existing device.key was not reused")
	}
	if after, _ := os.ReadFile(keyPath); !bytes.Equal(before, after) {
		t.Error("second run rewrote device.key")
	}
}

func TestCSRConfigErrorsExit78(t *testing.T) {
	for _, tc := range []struct {
		args []string
		flag string
	}{
		{[]string{"csr", "-name", "Bad_Name", "-config-dir", t.TempDir()}, "-name"},
		{[]string{"csr", "-name", "ok", "-config-dir", "relative/dir"}, "-config-dir"},
		{[]string{"csr", "-name", "ok", "-config-dir", t.TempDir(), "-out", "x.csr"}, "-out"},
	} {
		var out, errb bytes.Buffer
		if code := run(context.Background(), tc.args, &out, &errb, noEnv); code != 78 || !strings.Contains(errb.String(), tc.flag) {
			t.Errorf("run(%q) = %d, stderr %q; want 78 naming %s", tc.args, code, errb.String(), tc.flag)
		}
	}
	// A corrupt key is never replaced silently.
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "device.key"), []byte("garbage"), 0o600); err != nil {
		t.Fatal(err)
	}
	var out, errb bytes.Buffer
	if code := run(context.Background(), []string{"csr", "-name", "ok", "-config-dir", dir}, &out, &errb, noEnv); code == 0 {
		t.Errorf("run(csr) over a corrupt device.key = 0, want a failure")
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "device.key")); string(b) != "garbage" {
		t.Error("a corrupt device.key was replaced")
	}
}

func TestCSRHelpExits0(t *testing.T) {
	var out, errb bytes.Buffer
	if code := run(context.Background(), []string{"csr", "-h"}, &out, &errb, noEnv); code != 0 {
		t.Fatalf("run(csr -h) = %d, want 0", code)
	}
	for _, f := range []string{"-name", "-config-dir", "-out"} {
		if !strings.Contains(out.String(), f) {
			t.Errorf("csr -h printed %q, want %s listed", out.String(), f)
		}
	}
}
