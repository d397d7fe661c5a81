package ca

import (
	"errors"
	"path/filepath"
	"testing"
	"time"

	"github.com/meshanics/meshanics/internal/errdefs"
	"github.com/meshanics/meshanics/internal/names"
)

// FuzzParseCSR: any bytes either yield a P-256 key whose certificate
// round-trips to the requested identity, or an ErrInvalid; never a panic.
func FuzzParseCSR(f *testing.F) {
	f.Add(newCSR(f, p256(f), "seed"))
	f.Add([]byte("-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n"))
	a, err := Create(filepath.Join(f.TempDir(), "pki"), "fleet.example", time.Now)
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		pub, err := ParseCSR(in)
		if err != nil {
			if !errors.Is(err, errdefs.ErrInvalid) {
				t.Fatalf("ParseCSR error %v is not ErrInvalid", err)
			}
			return
		}
		iss, err := a.IssueDevice("fuzz", pub, DefaultDeviceTTL)
		if err != nil {
			t.Fatalf("IssueDevice after a good CSR: %v", err)
		}
		if id, err := a.Identity(iss.Cert); err != nil || id.Name != "fuzz" {
			t.Fatalf("Identity = %+v, %v", id, err)
		}
	})
}

// FuzzDeviceName: a name is issued iff names.ValidateDevice accepts it, and
// the identity read back from the certificate is exactly that name.
func FuzzDeviceName(f *testing.F) {
	for _, s := range []string{"edge-01", "a", "A", "-a", "a-", "a.b", "", "spiffe://x/device/y", "a/../b"} {
		f.Add(s)
	}
	a, err := Create(filepath.Join(f.TempDir(), "pki"), "fleet.example", time.Now)
	if err != nil {
		f.Fatal(err)
	}
	pub := &p256(f).PublicKey
	f.Fuzz(func(t *testing.T, name string) {
		iss, err := a.IssueDevice(name, pub, DefaultDeviceTTL)
		if verr := names.ValidateDevice(name); (verr == nil) != (err == nil) {
			t.Fatalf("IssueDevice(%q) = %v but ValidateDevice = %v", name, err, verr)
		}
		if err != nil {
			return
		}
		id, err := a.Identity(iss.Cert)
		if err != nil || id.Name != name {
			t.Fatalf("Identity = %+v, %v; want %q", id, err, name)
		}
	})
}
