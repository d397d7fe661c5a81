package operatorapi

import (
	"log/slog"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/meshanics/meshanics/internal/server/enrollment"
	"github.com/meshanics/meshanics/internal/server/store/storetest"
)

// The composition root passes *enrollment.Service as Config.Tokens.
var (
	_ TokenService = (*enrollment.Service)(nil)
	_ installer    = (*enrollment.Service)(nil)
)

// TestTokensThroughEnrollmentService wires the API as the server does: the
// enrollment service mints, and builds the install command.
func TestTokensThroughEnrollmentService(t *testing.T) {
	t.Parallel()
	clk := &clock{t: time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)}
	e := newEnv(t, storetest.SQLiteWith(t, storetest.Options{Now: clk.Now}), clk)
	svc := newEnrollmentService(t, e, clk)
	api, err := New(Config{Store: e.db, Logger: slog.New(slog.DiscardHandler), Now: clk.Now, Tokens: svc})
	if err != nil {
		t.Fatalf("New with enrollment.Service and no CA fields: %v", err)
	}
	srv := httptest.NewServer(api.Handler())
	t.Cleanup(srv.Close)
	e.srv = srv
	tok := decode[tokenCreatedJSON](t, e.admin("POST", "/api/v1/enrollment-tokens", map[string]any{"uses": 2}))
	if tok.CAPin != e.ca.Fingerprint() || tok.InstallCommand != svc.InstallCommand(tok.Token) || !strings.Contains(tok.InstallCommand, "--token "+tok.Token) {
		t.Errorf("token %+v: want the service's pin and install command", tok)
	}
	l := decode[List[tokenJSON]](t, e.admin("GET", "/api/v1/enrollment-tokens", nil))
	if l.Total != 1 || l.Items[0].UsesLeft != 2 {
		t.Errorf("list = %+v", l)
	}
	e.want(e.admin("DELETE", "/api/v1/enrollment-tokens/"+tok.ID, nil), 204, "revoke")
}

// newEnrollmentService is the enrollment service over e's store and CA, as
// the server wires it.
func newEnrollmentService(t *testing.T, e *env, clk *clock) *enrollment.Service {
	t.Helper()
	svc, err := enrollment.New(enrollment.Config{
		Store: e.db, CA: e.ca, Log: slog.New(slog.DiscardHandler), Now: clk.Now,
		DeviceServer: "cp.fleet.test:9443", ArtifactServer: "https://cp.fleet.test:9444", PublicURL: "https://cp.fleet.test:8443",
	})
	if err != nil {
		t.Fatal(err)
	}
	return svc
}
