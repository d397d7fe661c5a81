package enrollment

import (
	"context"
	"errors"
	"testing"

	"github.com/meshanics/meshanics/internal/errdefs"
	"github.com/meshanics/meshanics/internal/server/ca"
	"github.com/meshanics/meshanics/internal/server/store"
)

func TestProvisionIssuesIdentityWithoutToken(t *testing.T) {
	forEachEngine(t, func(t *testing.T, e env) {
		ctx := context.Background()
		k := newKey(t)
		r, err := e.svc.Provision(ctx, "user:admin", ProvisionRequest{Name: "air-01", CSRPEM: csrPEM(t, k), Tags: map[string]string{"site": "vault"}})
		if err != nil {
			t.Fatalf("Provision: %v", err)
		}
		c := certOf(t, r)
		if id, err := e.ca.Identity(c); err != nil || id.Name != "air-01" || !k.PublicKey.Equal(c.PublicKey) {
			t.Errorf("certificate identity = %+v, %v; want air-01 over the CSR's key", id, err)
		}
		if r.CAPEM != string(e.ca.CertPEM()) || r.Config.Server != "cp.test:9443" || len(r.TrustAnchor) == 0 {
			t.Errorf("Provision response = %+v", r)
		}
		d, err := e.db.DeviceByName(ctx, "air-01")
		if err != nil {
			t.Fatal(err)
		}
		if d.Tags["site"] != "vault" || d.CertSerial != ca.SerialHex(c) {
			t.Errorf("device record = %+v", d)
		}
		evs, _, err := e.db.ListAudit(ctx, store.AuditFilter{Type: "device.enroll"}, store.Page{Limit: 10})
		if err != nil {
			t.Fatal(err)
		}
		if len(evs) != 1 || evs[0].Actor != "user:admin" || evs[0].Subject != "air-01" {
			t.Errorf("audit = %+v, want one device.enroll by user:admin", evs)
		}
	})
}

func TestProvisionSameNameRules(t *testing.T) {
	forEachEngine(t, func(t *testing.T, e env) {
		ctx := context.Background()
		k := newKey(t)
		if _, err := e.svc.Provision(ctx, "user:admin", ProvisionRequest{Name: "air-01", CSRPEM: csrPEM(t, k)}); err != nil {
			t.Fatal(err)
		}
		first, _ := e.db.DeviceByName(ctx, "air-01")
		// Same key again: a fresh certificate for the same record.
		if _, err := e.svc.Provision(ctx, "user:admin", ProvisionRequest{Name: "air-01", CSRPEM: csrPEM(t, k)}); err != nil {
			t.Fatalf("Provision(same key) = %v", err)
		}
		if d, _ := e.db.DeviceByName(ctx, "air-01"); d.ID != first.ID {
			t.Errorf("same-key provisioning made a new record %s, want %s", d.ID, first.ID)
		}
		other := newKey(t)
		if _, err := e.svc.Provision(ctx, "user:admin", ProvisionRequest{Name: "air-01", CSRPEM: csrPEM(t, other)}); !errors.Is(err, errdefs.ErrConflict) {
			t.Fatalf("Provision(other key) = %v, want ErrConflict", err)
		}
		if _, err := e.svc.Provision(ctx, "user:admin", ProvisionRequest{Name: "air-01", CSRPEM: csrPEM(t, other), Replace: true}); err != nil {
			t.Fatalf("Provision(other key, replace) = %v", err)
		}
		if d, _ := e.db.DeviceByName(ctx, "air-01"); d.ID != first.ID || d.CertSerial == first.CertSerial {
			t.Errorf("replace: record %s serial %s, want record %s with a new serial", d.ID, d.CertSerial, first.ID)
		}
	})
}

func TestProvisionRejectsBadInput(t *testing.T) {
	forEachEngine(t, func(t *testing.T, e env) {
		ctx := context.Background()
		good := csrPEM(t, newKey(t))
		for _, tc := range []struct {
			name string
			req  ProvisionRequest
		}{
			{"bad name", ProvisionRequest{Name: "Bad_Name", CSRPEM: good}},
			{"no csr", ProvisionRequest{Name: "air-01"}},
			{"garbage csr", ProvisionRequest{Name: "air-01", CSRPEM: "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n"}},
			{"bad tag", ProvisionRequest{Name: "air-01", CSRPEM: good, Tags: map[string]string{"bad key": "v"}}},
		} {
			if _, err := e.svc.Provision(ctx, "user:admin", tc.req); !errors.Is(err, errdefs.ErrInvalid) {
				t.Errorf("Provision(%s) = %v, want ErrInvalid", tc.name, err)
			}
		}
		if _, err := e.db.DeviceByName(ctx, "air-01"); !errors.Is(err, errdefs.ErrNotFound) {
			t.Errorf("bad input created a device: %v", err)
		}
	})
}
