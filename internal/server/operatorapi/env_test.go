package operatorapi

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/meshanics/meshanics/internal/server/ca"
	"github.com/meshanics/meshanics/internal/server/operatorapi/ratelimit"
	"github.com/meshanics/meshanics/internal/server/store"
	"github.com/meshanics/meshanics/internal/server/store/storetest"
)

// clock is a settable test clock.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// fakePresence is an in-memory presence tracker.
type fakePresence struct {
	mu   sync.Mutex
	seen map[string]time.Time
}

func (p *fakePresence) LastSeen(name string) (time.Time, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	t, ok := p.seen[name]
	return t, ok
}

func (p *fakePresence) Seen(name string, t time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.seen[name] = t
}

// env is a real API over a real store, served by httptest.
type env struct {
	t        testing.TB
	db       *store.DB
	api      *API
	srv      *httptest.Server
	clock    *clock
	presence *fakePresence
	ca       *ca.Authority
	keys     map[Role]string // an API key per role

	mu          sync.Mutex
	invalidated []string
}

// forEachEngine runs fn against SQLite and PostgreSQL, each with its own
// clock; the calling test runs in parallel with the others.
func forEachEngine(t *testing.T, fn func(t *testing.T, e *env)) {
	t.Helper()
	t.Parallel()
	start := time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)
	t.Run("sqlite", func(t *testing.T) {
		clk := &clock{t: start}
		fn(t, newEnv(t, storetest.SQLiteWith(t, storetest.Options{Now: clk.Now}), clk))
	})
	t.Run("postgres", func(t *testing.T) {
		clk := &clock{t: start}
		fn(t, newEnv(t, storetest.PostgresWith(t, storetest.Options{Now: clk.Now}), clk))
	})
}

func newEnv(t testing.TB, db *store.DB, clk *clock) *env {
	t.Helper()
	auth, err := ca.Create(t.TempDir(), "fleet.test", clk.Now)
	if err != nil {
		t.Fatalf("ca.Create: %v", err)
	}
	e := &env{t: t, db: db, clock: clk, presence: &fakePresence{seen: map[string]time.Time{}}, ca: auth, keys: map[Role]string{}}
	e.api, err = New(Config{
		Store:             db,
		Logger:            slog.New(slog.DiscardHandler),
		Now:               clk.Now,
		CAPin:             auth.Fingerprint(),
		CAPEM:             auth.CertPEM(),
		PublicURL:         "https://cp.fleet.test:8443",
		Presence:          e.presence,
		Invalidate:        func(name string) { e.mu.Lock(); e.invalidated = append(e.invalidated, name); e.mu.Unlock() },
		HeartbeatInterval: 30 * time.Second,
		Argon2:            &Argon2Params{Memory: 64, Time: 1, Threads: 1},
		LoginLimiter:      ratelimit.New(ratelimit.Config{Rate: 0.001, Burst: 5, Now: clk.Now}),
	})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	e.srv = httptest.NewServer(e.api.Handler())
	t.Cleanup(e.srv.Close)
	for _, r := range Roles {
		e.keys[r] = e.newKey(r)
	}
	return e
}

// newKey stores an API key with role r, as meshanics-server init does.
func (e *env) newKey(r Role) string {
	e.t.Helper()
	secret := NewAPIKey()
	err := e.db.Tx(context.Background(), func(tx *store.Tx) error {
		_, err := tx.CreateAPIKey(context.Background(), store.ActorSystem, store.NewAPIKey{
			Hash: store.HashSecret(secret), Name: "test-" + string(r), Role: string(r), Owner: store.ActorSystem,
		})
		return err
	})
	if err != nil {
		e.t.Fatalf("create API key: %v", err)
	}
	return secret
}

// resp is a finished HTTP exchange.
type resp struct {
	status int
	header http.Header
	body   []byte
}

func (r resp) errorMessage() string {
	var b struct {
		Error string `json:"error"`
	}
	_ = json.Unmarshal(r.body, &b)
	return b.Error
}

// req sends method path with body (string: raw; nil: none; else JSON)
// authenticated with key ("" = no Authorization header).
func (e *env) req(method, path, key string, body any, hdr ...string) resp {
	e.t.Helper()
	var rd io.Reader
	for i := 0; i+1 < len(hdr); i += 2 {
		if hdr[i] == "X-Raw-Body" {
			body = []byte(hdr[i+1])
		}
	}
	switch b := body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(b)
	case []byte:
		rd = bytes.NewReader(b)
	default:
		raw, err := json.Marshal(b)
		if err != nil {
			e.t.Fatal(err)
		}
		rd = bytes.NewReader(raw)
	}
	r, err := http.NewRequest(method, e.srv.URL+path, rd)
	if err != nil {
		e.t.Fatal(err)
	}
	if key != "" {
		r.Header.Set("Authorization", "Bearer "+key)
	}
	if body != nil {
		r.Header.Set("Content-Type", "application/json")
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		if hdr[i] != "X-Raw-Body" {
			r.Header.Set(hdr[i], hdr[i+1])
		}
	}
	res, err := e.srv.Client().Do(r)
	if err != nil {
		e.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		e.t.Fatal(err)
	}
	return resp{status: res.StatusCode, header: res.Header, body: b}
}

// admin sends a request with the admin key.
func (e *env) admin(method, path string, body any) resp {
	e.t.Helper()
	return e.req(method, path, e.keys[RoleAdmin], body)
}

// want fails the test unless r has status.
func (e *env) want(r resp, status int, what string) {
	e.t.Helper()
	if r.status != status {
		e.t.Fatalf("%s: status %d, want %d (body %s)", what, r.status, status, r.body)
	}
}

func decode[T any](t *testing.T, r resp) T {
	t.Helper()
	var v T
	if err := json.Unmarshal(r.body, &v); err != nil {
		t.Fatalf("decode %s: %v", r.body, err)
	}
	return v
}

// auditHead is the current audit chain head (to prove nothing changed).
func (e *env) auditHead() int64 {
	e.t.Helper()
	seq, _, err := e.db.AuditHead(context.Background())
	if err != nil {
		e.t.Fatal(err)
	}
	return seq
}

// enroll records an active device as enrollment would.
func (e *env) enroll(name string, tags map[string]string) {
	e.t.Helper()
	ctx := context.Background()
	err := e.db.Tx(ctx, func(tx *store.Tx) error {
		_, _, err := tx.EnrollDevice(ctx, store.Enrollment{
			Name: name, Fleet: "fleet.test",
			Cert:              store.IssuedCert{Serial: "ab" + name, KeySHA256: strings.Repeat("a", 64), NotAfter: e.clock.Now().Add(90 * 24 * time.Hour)},
			Hardware:          json.RawMessage(`{"arch":"arm64","cpu_cores":4}`),
			AgentVersion:      "1.2.3",
			Tags:              tags,
			HeartbeatInterval: 30 * time.Second,
		})
		return err
	})
	if err != nil {
		e.t.Fatalf("enroll %s: %v", name, err)
	}
}

// reqRaw sends body as is with content type ctype.
func (e *env) reqRaw(method, path, key, body, ctype string) resp {
	e.t.Helper()
	return e.req(method, path, key, nil, "Content-Type", ctype, "X-Raw-Body", body)
}

// keyID returns the id of the test key of role r.
func (e *env) keyID(r Role) string {
	e.t.Helper()
	k, err := e.db.APIKeyByHash(context.Background(), store.HashSecret(e.keys[r]))
	if err != nil {
		e.t.Fatal(err)
	}
	return k.ID
}
