package enrollment

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"log/slog"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/meshanics/meshanics/internal/errdefs"
	"github.com/meshanics/meshanics/internal/server/ca"
	"github.com/meshanics/meshanics/internal/server/store"
	"github.com/meshanics/meshanics/internal/server/store/storetest"
)

type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

type fakeTrust struct{ err error }

func (f fakeTrust) TrustAnchor(context.Context) (json.RawMessage, error) {
	if f.err != nil {
		return nil, f.err
	}
	return json.RawMessage(`{"signed":{"_type":"root"},"signatures":[]}`), nil
}

var errNotInit = errors.New("not initialised")

type env struct {
	svc   *Service
	db    *store.DB
	ca    *ca.Authority
	clock *fakeClock
}

// forEachEngine runs fn against SQLite and PostgreSQL with a fresh CA and
// service whose store and TLS share one fake clock.
func forEachEngine(t *testing.T, fn func(t *testing.T, e env)) {
	clock := &fakeClock{t: time.Date(2026, 5, 1, 10, 0, 0, 0, time.UTC)}
	storetest.ForEachEngineWith(t, storetest.Options{Now: clock.Now}, func(t *testing.T, db *store.DB) {
		auth, err := ca.Create(filepath.Join(t.TempDir(), "pki"), "fleet.test", clock.Now)
		if err != nil {
			t.Fatal(err)
		}
		svc, err := New(Config{
			Store: db, CA: auth, Trust: fakeTrust{}, NotInitialized: errNotInit,
			Log: slog.New(slog.DiscardHandler), Now: clock.Now, Registry: prometheus.NewRegistry(),
			DeviceServer: "cp.test:9443", ArtifactServer: "https://cp.test:9444", PublicURL: "https://cp.test:8443",
		})
		if err != nil {
			t.Fatal(err)
		}
		fn(t, env{svc: svc, db: db, ca: auth, clock: clock})
	})
}

func newKey(t testing.TB) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func csrPEM(t testing.TB, k *ecdsa.PrivateKey) string {
	t.Helper()
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "x"}}, k)
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}))
}

func (e env) mint(t *testing.T, o TokenOptions) string {
	t.Helper()
	m, err := e.svc.Mint(context.Background(), "user:admin", o)
	if err != nil {
		t.Fatalf("CreateToken: %v", err)
	}
	return m.Secret
}

func (e env) enroll(token, name string, k *ecdsa.PrivateKey, t *testing.T) (Response, error) {
	t.Helper()
	return e.svc.Enroll(context.Background(), Request{Token: token, Name: name, CSRPEM: csrPEM(t, k), AgentVersion: "1.0.0",
		Hardware: json.RawMessage(`{"arch":"arm64"}`)})
}

func certOf(t *testing.T, r Response) *x509.Certificate {
	t.Helper()
	b, _ := pem.Decode([]byte(r.CertificatePEM))
	if b == nil {
		t.Fatal("no certificate in response")
	}
	c, err := x509.ParseCertificate(b.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestEnrollIssuesIdentityAndResponse(t *testing.T) {
	forEachEngine(t, func(t *testing.T, e env) {
		k := newKey(t)
		r, err := e.enroll(e.mint(t, TokenOptions{Tags: map[string]string{"site": "lab"}}), "edge-01", k, t)
		if err != nil {
			t.Fatalf("Enroll: %v", err)
		}
		if r.Device != "edge-01" || r.Fleet != "fleet.test" || r.CAPEM != string(e.ca.CertPEM()) ||
			r.Config.Server != "cp.test:9443" || r.Config.ArtifactServer != "https://cp.test:9444" {
			t.Errorf("Enroll response = %+v", r)
		}
		if !json.Valid(r.TrustAnchor) || !strings.Contains(string(r.TrustAnchor), "root") {
			t.Errorf("trust_anchor = %s, want the root", r.TrustAnchor)
		}
		c := certOf(t, r)
		if id, err := e.ca.Identity(c); err != nil || id.Name != "edge-01" || !k.PublicKey.Equal(c.PublicKey) {
			t.Errorf("certificate identity = %+v, %v", id, err)
		}
		d, err := e.db.DeviceByName(context.Background(), "edge-01")
		if err != nil {
			t.Fatal(err)
		}
		if d.Tags["site"] != "lab" || d.AgentVersion != "1.0.0" || d.CertSerial != ca.SerialHex(c) {
			t.Errorf("device record = %+v", d)
		}
	})
}

func TestTokenExpiry(t *testing.T) {
	forEachEngine(t, func(t *testing.T, e env) {
		tok := e.mint(t, TokenOptions{TTL: time.Hour})
		e.clock.Advance(time.Hour)
		if _, err := e.enroll(tok, "edge-01", newKey(t), t); !errors.Is(err, errdefs.ErrUnauthenticated) {
			t.Fatalf("Enroll(expired token) = %v, want ErrUnauthenticated", err)
		}
		if _, err := e.db.DeviceByName(context.Background(), "edge-01"); !errors.Is(err, errdefs.ErrNotFound) {
			t.Errorf("device created by an expired token: %v", err)
		}
	})
}

func TestTokenBudgetAndReplay(t *testing.T) {
	forEachEngine(t, func(t *testing.T, e env) {
		tok := e.mint(t, TokenOptions{Uses: 2})
		for _, n := range []string{"a1", "a2"} {
			if _, err := e.enroll(tok, n, newKey(t), t); err != nil {
				t.Fatalf("Enroll(%s) within budget: %v", n, err)
			}
		}
		if _, err := e.enroll(tok, "a3", newKey(t), t); !errors.Is(err, errdefs.ErrUnauthenticated) {
			t.Errorf("Enroll beyond budget = %v, want ErrUnauthenticated", err)
		}
		one := e.mint(t, TokenOptions{})
		k := newKey(t)
		if _, err := e.enroll(one, "b1", k, t); err != nil {
			t.Fatal(err)
		}
		// Replaying the same request (same name, same key) is refused: the
		// single use is gone.
		if _, err := e.enroll(one, "b1", k, t); !errors.Is(err, errdefs.ErrUnauthenticated) {
			t.Errorf("replayed Enroll = %v, want ErrUnauthenticated", err)
		}
	})
}

func TestRevokedTokenRefused(t *testing.T) {
	forEachEngine(t, func(t *testing.T, e env) {
		m, err := e.svc.Mint(context.Background(), "user:admin", TokenOptions{Uses: 5})
		if err != nil {
			t.Fatal(err)
		}
		if err := e.svc.RevokeToken(context.Background(), "user:admin", m.Token.ID); err != nil {
			t.Fatal(err)
		}
		if _, err := e.enroll(m.Secret, "edge-01", newKey(t), t); !errors.Is(err, errdefs.ErrUnauthenticated) {
			t.Errorf("Enroll(revoked) = %v, want ErrUnauthenticated", err)
		}
	})
}

func TestUnknownAndMalformedTokens(t *testing.T) {
	forEachEngine(t, func(t *testing.T, e env) {
		for _, tok := range []string{NewTokenSecret(), "mst_short", "nope"} {
			if _, err := e.enroll(tok, "edge-01", newKey(t), t); !errors.Is(err, errdefs.ErrUnauthenticated) {
				t.Errorf("Enroll(token %q) = %v, want ErrUnauthenticated", tok, err)
			}
		}
	})
}

func TestBadCSRDoesNotSpendToken(t *testing.T) {
	forEachEngine(t, func(t *testing.T, e env) {
		tok := e.mint(t, TokenOptions{})
		_, err := e.svc.Enroll(context.Background(), Request{Token: tok, Name: "edge-01", CSRPEM: "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n"})
		if !errors.Is(err, errdefs.ErrInvalid) {
			t.Fatalf("Enroll(bad CSR) = %v, want ErrInvalid", err)
		}
		if _, err := e.svc.Enroll(context.Background(), Request{Token: tok, Name: "Bad_Name", CSRPEM: csrPEM(t, newKey(t))}); !errors.Is(err, errdefs.ErrInvalid) {
			t.Fatalf("Enroll(bad name) = %v, want ErrInvalid", err)
		}
		if _, err := e.enroll(tok, "edge-01", newKey(t), t); err != nil {
			t.Errorf("token unusable after a refused bad request: %v", err)
		}
	})
}

func TestSameNameSameKeyKeepsRecord(t *testing.T) {
	forEachEngine(t, func(t *testing.T, e env) {
		k := newKey(t)
		r1, err := e.enroll(e.mint(t, TokenOptions{}), "edge-01", k, t)
		if err != nil {
			t.Fatal(err)
		}
		d1, _ := e.db.DeviceByName(context.Background(), "edge-01")
		e.clock.Advance(time.Minute)
		r2, err := e.enroll(e.mint(t, TokenOptions{}), "edge-01", k, t)
		if err != nil {
			t.Fatalf("re-enroll with the same key: %v", err)
		}
		d2, _ := e.db.DeviceByName(context.Background(), "edge-01")
		if d1.ID != d2.ID || d2.Life != 1 {
			t.Errorf("device record changed: %s/%d → %s/%d", d1.ID, d1.Life, d2.ID, d2.Life)
		}
		if certOf(t, r1).SerialNumber.Cmp(certOf(t, r2).SerialNumber) == 0 || d2.CertSerial != ca.SerialHex(certOf(t, r2)) {
			t.Error("re-enrollment did not issue a fresh certificate")
		}
	})
}

func TestSameNameOtherKeyConflictsAndSpendsUse(t *testing.T) {
	forEachEngine(t, func(t *testing.T, e env) {
		if _, err := e.enroll(e.mint(t, TokenOptions{}), "edge-01", newKey(t), t); err != nil {
			t.Fatal(err)
		}
		before, _ := e.db.DeviceByName(context.Background(), "edge-01")
		tok := e.mint(t, TokenOptions{})
		if _, err := e.enroll(tok, "edge-01", newKey(t), t); !errors.Is(err, errdefs.ErrConflict) {
			t.Fatalf("Enroll(taken name, other key) = %v, want ErrConflict", err)
		}
		after, _ := e.db.DeviceByName(context.Background(), "edge-01")
		if after.CertSerial != before.CertSerial || after.CertKeySHA256 != before.CertKeySHA256 {
			t.Error("refused enrollment changed the device")
		}
		// The use was spent when the token checks passed.
		if _, err := e.enroll(tok, "edge-02", newKey(t), t); !errors.Is(err, errdefs.ErrUnauthenticated) {
			t.Errorf("token reusable after a 409: %v", err)
		}
	})
}

func TestReplaceTokenTakesOverName(t *testing.T) {
	forEachEngine(t, func(t *testing.T, e env) {
		r1, err := e.enroll(e.mint(t, TokenOptions{}), "edge-01", newKey(t), t)
		if err != nil {
			t.Fatal(err)
		}
		d1, _ := e.db.DeviceByName(context.Background(), "edge-01")
		k2 := newKey(t)
		r2, err := e.enroll(e.mint(t, TokenOptions{Replace: true}), "edge-01", k2, t)
		if err != nil {
			t.Fatalf("Enroll with replace: %v", err)
		}
		d2, _ := e.db.DeviceByName(context.Background(), "edge-01")
		if d2.ID != d1.ID {
			t.Errorf("replacement created a new record (%s → %s), want history kept", d1.ID, d2.ID)
		}
		if !k2.PublicKey.Equal(certOf(t, r2).PublicKey) || d2.CertSerial == ca.SerialHex(certOf(t, r1)) {
			t.Error("replacement did not switch to the new key")
		}
	})
}

func TestDecommissionedNameStartsNewLife(t *testing.T) {
	forEachEngine(t, func(t *testing.T, e env) {
		ctx := context.Background()
		if _, err := e.enroll(e.mint(t, TokenOptions{}), "edge-01", newKey(t), t); err != nil {
			t.Fatal(err)
		}
		d1, _ := e.db.DeviceByName(ctx, "edge-01")
		if err := e.db.Tx(ctx, func(tx *store.Tx) error {
			_, err := tx.DecommissionDevice(ctx, "user:admin", "edge-01")
			return err
		}); err != nil {
			t.Fatal(err)
		}
		if _, err := e.enroll(e.mint(t, TokenOptions{}), "edge-01", newKey(t), t); err != nil {
			t.Fatalf("Enroll(decommissioned name): %v", err)
		}
		d2, _ := e.db.DeviceByName(ctx, "edge-01")
		if d2.ID == d1.ID || d2.Life != 2 || d2.Status != store.DeviceActive {
			t.Errorf("new life = %+v, want new id, life 2, active", d2)
		}
	})
}

func TestTokenTagsWin(t *testing.T) {
	forEachEngine(t, func(t *testing.T, e env) {
		tok := e.mint(t, TokenOptions{Tags: map[string]string{"site": "plant-1"}})
		_, err := e.svc.Enroll(context.Background(), Request{Token: tok, Name: "edge-01", CSRPEM: csrPEM(t, newKey(t)),
			Tags: map[string]string{"site": "mine", "role": "camera"}})
		if err != nil {
			t.Fatal(err)
		}
		d, _ := e.db.DeviceByName(context.Background(), "edge-01")
		if d.Tags["site"] != "plant-1" || d.Tags["role"] != "camera" {
			t.Errorf("tags = %v, want site=plant-1 (token) and role=camera (device)", d.Tags)
		}
	})
}

func TestTrustAnchorNullBeforeCeremony(t *testing.T) {
	forEachEngine(t, func(t *testing.T, e env) {
		e.svc.trust = fakeTrust{err: errNotInit}
		r, err := e.enroll(e.mint(t, TokenOptions{}), "edge-01", newKey(t), t)
		if err != nil || string(r.TrustAnchor) != "null" {
			t.Fatalf("Enroll before ceremony = %s, %v; want trust_anchor null", r.TrustAnchor, err)
		}
		// A broken repository refuses without spending the use.
		e.svc.trust = fakeTrust{err: errors.New("disk on fire")}
		tok := e.mint(t, TokenOptions{})
		if _, err := e.enroll(tok, "edge-02", newKey(t), t); !errors.Is(err, errdefs.ErrUnavailable) {
			t.Fatalf("Enroll with broken trust = %v, want ErrUnavailable", err)
		}
		e.svc.trust = fakeTrust{}
		if _, err := e.enroll(tok, "edge-02", newKey(t), t); err != nil {
			t.Errorf("token spent by an unavailable enrollment: %v", err)
		}
	})
}

func TestTokenOptionsBounds(t *testing.T) {
	forEachEngine(t, func(t *testing.T, e env) {
		for _, o := range []TokenOptions{
			{TTL: 31 * 24 * time.Hour}, {TTL: time.Second}, {Uses: -1}, {Uses: MaxUses + 1},
			{Tags: map[string]string{"bad key": "x"}},
		} {
			if _, _, err := e.svc.CreateToken(context.Background(), "user:admin", o); !errors.Is(err, errdefs.ErrInvalid) {
				t.Errorf("CreateToken(%+v) = %v, want ErrInvalid", o, err)
			}
		}
		m, err := e.svc.Mint(context.Background(), "user:admin", TokenOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if got := m.Token.ExpiresAt.Sub(e.clock.Now()); got != DefaultTokenTTL || m.Token.Uses != 1 {
			t.Errorf("defaults: expiry in %v, uses %d; want 1h, 1", got, m.Token.Uses)
		}
		if !strings.HasPrefix(m.Secret, "mst_") || !wellFormedToken(m.Secret) {
			t.Errorf("secret %q is not mst_ + base32", m.Secret)
		}
		if !strings.Contains(m.InstallCommand, "--ca-pin "+e.ca.Fingerprint()) || !strings.Contains(m.InstallCommand, "https://cp.test:8443/install.sh") ||
			!strings.Contains(m.InstallCommand, "--token "+m.Secret) || !strings.Contains(m.InstallCommand, "BEGIN CERTIFICATE") {
			t.Errorf("install command = %s", m.InstallCommand)
		}
		// Only the hash is stored: the listing carries no secret.
		items, _, err := e.svc.ListTokens(context.Background(), store.Page{})
		if err != nil || len(items) != 1 {
			t.Fatalf("ListTokens = %v, %v", items, err)
		}
		if b, _ := json.Marshal(items); strings.Contains(string(b), m.Secret) || strings.Contains(string(b), store.HashSecret(m.Secret)) {
			t.Error("token listing exposes the secret or its hash")
		}
	})
}

func TestRenewDevice(t *testing.T) {
	forEachEngine(t, func(t *testing.T, e env) {
		ctx := context.Background()
		k := newKey(t)
		r, err := e.enroll(e.mint(t, TokenOptions{}), "edge-01", k, t)
		if err != nil {
			t.Fatal(err)
		}
		old := ca.SerialHex(certOf(t, r))
		if _, err := e.svc.RenewDevice(ctx, "edge-01", old, &newKey(t).PublicKey); !errors.Is(err, errdefs.ErrPermission) {
			t.Errorf("RenewDevice(other key) = %v, want ErrPermission", err)
		}
		pemBytes, err := e.svc.RenewDevice(ctx, "edge-01", old, &k.PublicKey)
		if err != nil {
			t.Fatalf("RenewDevice: %v", err)
		}
		nc := certOf(t, Response{CertificatePEM: string(pemBytes)})
		d, _ := e.db.DeviceByName(ctx, "edge-01")
		if d.CertSerial != ca.SerialHex(nc) || !k.PublicKey.Equal(nc.PublicKey) {
			t.Errorf("renewed cert not current: record %s, cert %s", d.CertSerial, ca.SerialHex(nc))
		}
		if err := e.db.Tx(ctx, func(tx *store.Tx) error {
			_, err := tx.DecommissionDevice(ctx, "user:admin", "edge-01")
			return err
		}); err != nil {
			t.Fatal(err)
		}
		if _, err := e.svc.RenewDevice(ctx, "edge-01", ca.SerialHex(nc), &k.PublicKey); !errors.Is(err, errdefs.ErrDecommissioned) {
			t.Errorf("RenewDevice(decommissioned) = %v, want ErrDecommissioned", err)
		}
	})
}

func TestConcurrentEnrollmentsSpendExactlyBudget(t *testing.T) {
	forEachEngine(t, func(t *testing.T, e env) {
		tok := e.mint(t, TokenOptions{Uses: 3})
		var wg sync.WaitGroup
		errs := make(chan error, 8)
		for i := range 8 {
			k := newKey(t)
			csr := csrPEM(t, k)
			wg.Add(1)
			go func() {
				defer wg.Done()
				_, err := e.svc.Enroll(context.Background(), Request{Token: tok, Name: "c" + string(rune('a'+i)), CSRPEM: csr})
				errs <- err
			}()
		}
		wg.Wait()
		close(errs)
		ok := 0
		for err := range errs {
			switch {
			case err == nil:
				ok++
			case !errors.Is(err, errdefs.ErrUnauthenticated):
				t.Errorf("concurrent Enroll: %v", err)
			}
		}
		if ok != 3 {
			t.Errorf("%d enrollments succeeded with a budget of 3", ok)
		}
	})
}
