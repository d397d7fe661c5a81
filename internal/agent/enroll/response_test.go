package enroll

import (
	"crypto/ecdsa"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/meshanics/meshanics/internal/agent/config"
	"github.com/meshanics/meshanics/internal/agent/identity"
	"github.com/meshanics/meshanics/internal/agent/identity/testca"
)

// goodResponse returns a valid response body for a fresh key from ca, the
// enroll config it answers, and the key.
func goodResponse(t testing.TB, ca *testca.CA, name string) ([]byte, *config.Enroll, *ecdsa.PrivateKey) {
	t.Helper()
	key, _ := identity.GenerateKey()
	cert := ca.Device(t, name, &key.PublicKey, time.Now().Add(-time.Minute), time.Hour)
	b, _ := json.Marshal(map[string]any{
		"device": name, "fleet": ca.Fleet, "certificate_pem": string(cert), "ca_pem": string(ca.PEM),
		"trust_anchor": json.RawMessage(`{"signed":{"_type":"root"},"signatures":[]}`),
		"config":       map[string]string{"server": "cp.test:9443", "artifact_server": "https://cp.test:9444"},
	})
	return b, &config.Enroll{Name: name, CAPin: ca.Pin()}, key
}

func TestCheckResponseRefusals(t *testing.T) {
	ca := testca.New(t)
	other := testca.New(t)
	good, c, key := goodResponse(t, ca, "dev1")
	otherKey, _ := identity.GenerateKey()
	edit := func(f func(m map[string]any)) []byte {
		var m map[string]any
		json.Unmarshal(good, &m)
		f(m)
		b, _ := json.Marshal(m)
		return b
	}
	tests := []struct {
		name string
		body []byte
		want string
	}{
		{"another name", edit(func(m map[string]any) { m["device"] = "dev2" }), "enrolled"},
		{"cert for another key", edit(func(m map[string]any) {
			m["certificate_pem"] = string(ca.Device(t, "dev1", &otherKey.PublicKey, time.Now(), time.Hour))
		}), "not for this device's key"},
		{"cert from another CA", edit(func(m map[string]any) {
			m["certificate_pem"] = string(other.Device(t, "dev1", &key.PublicKey, time.Now(), time.Hour))
		}), "issued certificate"},
		{"CA bundle without the pinned CA", edit(func(m map[string]any) { m["ca_pem"] = string(other.PEM) }), "pinned"},
		{"bad server", edit(func(m map[string]any) { m["config"] = map[string]string{"server": "nope"} }), "config.server"},
		{"http artifact server", edit(func(m map[string]any) {
			m["config"] = map[string]string{"server": "h:1", "artifact_server": "http://h:9444"}
		}), "config.artifact_server"},
		{"anchor not TUF", edit(func(m map[string]any) { m["trust_anchor"] = []int{1} }), "trust_anchor"},
		{"garbage cert", edit(func(m map[string]any) { m["certificate_pem"] = "x" }), "certificate_pem"},
	}
	for _, tt := range tests {
		r, err := ParseResponse(tt.body)
		if err != nil {
			t.Fatalf("%s: ParseResponse: %v", tt.name, err)
		}
		if _, err := checkResponse(r, key, c, time.Now()); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("checkResponse(%s) = %v, want an error mentioning %q", tt.name, err, tt.want)
		}
	}
	r, _ := ParseResponse(good)
	if _, err := checkResponse(r, key, c, time.Now()); err != nil {
		t.Errorf("checkResponse(good) = %v", err)
	}
	// No trust anchor yet (server before its TUF ceremony): accepted,
	// nothing to write.
	r, _ = ParseResponse(edit(func(m map[string]any) { m["trust_anchor"] = nil }))
	if cr, err := checkResponse(r, key, c, time.Now()); err != nil || cr.root != nil {
		t.Errorf("checkResponse(null anchor) = %v, root %q", err, cr.root)
	}
}

func FuzzCheckResponse(f *testing.F) {
	ca := testca.New(f)
	good, c, key := goodResponse(f, ca, "dev1")
	f.Add(good)
	seeds, _ := filepath.Glob(filepath.Join("testdata", "responses", "*.json"))
	for _, p := range seeds {
		b, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte(`{"device":"dev1","certificate_pem":"-----BEGIN CERTIFICATE-----\nAA==\n-----END CERTIFICATE-----\n"}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := ParseResponse(b)
		if err != nil {
			return
		}
		cr, err := checkResponse(r, key, c, time.Now())
		if err == nil && (len(cr.certPEM) == 0 || len(cr.caPEM) == 0) {
			t.Errorf("checkResponse accepted a response without credentials: %s", b)
		}
	})
}
