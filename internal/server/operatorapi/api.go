// Package operatorapi is the operator REST API of SPEC §8 (/api/v1/…, plus
// POST /login and /logout) on the web listener: authentication (API keys,
// session cookies), role permissions, the one error → HTTP status mapping,
// body limits, pagination, and the routes. Route groups live one per file and
// are registered in routes.go; the server composition root mounts Handler.
// Only internal/server imports this package.
package operatorapi

import (
	"errors"
	"log/slog"
	"net/http"
	"runtime"
	"strings"
	"sync"
	"time"

	"github.com/meshanics/meshanics/internal/server/operatorapi/ratelimit"
)

// Config is everything the API needs. Required: Store, Logger, and either
// Tokens = *enrollment.Service (which builds install commands) or CAPin,
// CAPEM and PublicURL. Engineers adding route groups add their dependency here.
type Config struct {
	Store  Store
	Logger *slog.Logger
	// Now is the clock for session expiry, presence and rate limiting
	// (default time.Now).
	Now func() time.Time

	// Tokens mints, lists and revokes enrollment tokens (nil = StoreTokens
	// over Store, with the policy of internal/server/enrollment).
	Tokens TokenService
	// CAPin is the fleet CA fingerprint "sha256:<hex>" and CAPEM its
	// certificate (internal/server/ca); both go into the install command.
	CAPin string
	CAPEM []byte
	// PublicURL is https://<host>:<port> of the web listener as devices
	// reach it (for the install command).
	PublicURL string

	// Presence reports in-memory last-seen times (internal/server/presence);
	// nil = stored last_seen only.
	Presence Presence
	// Invalidate is told about a device whose identity changed (decommission)
	// after the change commits, so the device API on this replica refuses it
	// at once (deviceapi.Server.Invalidate). nil = nothing to tell.
	Invalidate func(device string)
	// HeartbeatInterval is the server's heartbeat interval; a device is
	// offline after 3 intervals without a heartbeat (default 30 s).
	HeartbeatInterval time.Duration

	// Artifacts publishes and lists artifacts (internal/server/artifacts);
	// nil answers 503 on the artifact routes.
	Artifacts ArtifactService
	// Trust is the update repository (internal/server/updaterepo); nil
	// answers 503 on the trust routes.
	Trust TrustService
	// Groups and Rollouts are the rollout engine (*rollout.Runner); nil
	// answers 503 on their routes.
	Groups   GroupService
	Rollouts RolloutService

	// SessionTTL is how long a login session lasts (default 12 h).
	SessionTTL time.Duration
	// Argon2 is the cost of new password hashes (default DefaultArgon2).
	Argon2 *Argon2Params
	// LoginLimiter limits POST /login per client address (default: burst
	// 10, then one attempt every 5 s).
	LoginLimiter *ratelimit.Limiter
}

// API serves the operator REST API. Safe for concurrent use.
type API struct {
	store     Store
	log       *slog.Logger
	now       func() time.Time
	tokens    TokenService
	caPin     string
	caPEM     []byte
	publicURL string

	presence   Presence
	invalidate func(string)
	hbInterval time.Duration

	artifacts ArtifactService
	trust     TrustService
	groups    GroupService
	rollouts  RolloutService

	sessionTTL time.Duration
	argon2     Argon2Params
	loginLimit *ratelimit.Limiter
	dummyHash  string // verified against when a login names no user, so timing does not tell
	// hashSlots bounds concurrent argon2id computations (64 MiB each by
	// default), so a burst of logins from many addresses cannot exhaust
	// memory.
	hashSlots chan struct{}

	touchMu sync.Mutex
	touched map[string]time.Time // API key id → last recorded use

	sweepMu   sync.Mutex
	lastSweep time.Time // last removal of expired sessions

	handler http.Handler
}

// New builds the API from cfg.
func New(cfg Config) (*API, error) {
	switch {
	case cfg.Store == nil:
		return nil, errors.New("operatorapi: store is required")
	case cfg.Logger == nil:
		return nil, errors.New("operatorapi: logger is required")
	}
	if _, ok := cfg.Tokens.(installer); !ok && (cfg.CAPin == "" || len(cfg.CAPEM) == 0 || cfg.PublicURL == "") {
		return nil, errors.New("operatorapi: CA pin, CA PEM and public URL are required (or a token service that builds install commands)")
	}
	a := &API{
		store:      cfg.Store,
		log:        cfg.Logger.With("component", "operatorapi"),
		now:        cfg.Now,
		tokens:     cfg.Tokens,
		caPin:      cfg.CAPin,
		caPEM:      cfg.CAPEM,
		publicURL:  cfg.PublicURL,
		presence:   cfg.Presence,
		invalidate: cfg.Invalidate,
		hbInterval: cfg.HeartbeatInterval,
		artifacts:  cfg.Artifacts,
		trust:      cfg.Trust,
		groups:     cfg.Groups,
		rollouts:   cfg.Rollouts,
		sessionTTL: cfg.SessionTTL,
		argon2:     DefaultArgon2,
		loginLimit: cfg.LoginLimiter,
		touched:    make(map[string]time.Time),
		hashSlots:  make(chan struct{}, max(2, runtime.GOMAXPROCS(0))),
	}
	if a.now == nil {
		a.now = time.Now
	}
	if a.tokens == nil {
		a.tokens = StoreTokens{Store: cfg.Store, Now: a.now}
	}
	if a.hbInterval <= 0 {
		a.hbInterval = 30 * time.Second
	}
	if a.sessionTTL <= 0 {
		a.sessionTTL = 12 * time.Hour
	}
	if cfg.Argon2 != nil {
		a.argon2 = *cfg.Argon2
	}
	if a.loginLimit == nil {
		a.loginLimit = ratelimit.New(ratelimit.Config{Now: a.now})
	}
	a.dummyHash = HashPassword("meshanics-dummy-password", a.argon2)

	mux := http.NewServeMux()
	a.routes(mux)
	mux.HandleFunc("/api/v1/", func(w http.ResponseWriter, r *http.Request) {
		if allow := allowedMethods(mux, r); len(allow) > 0 {
			w.Header().Set("Allow", strings.Join(allow, ", "))
			writeError(a.log, w, r, errorf(http.StatusMethodNotAllowed, r.Method+" is not allowed on "+r.URL.Path+"; use "+strings.Join(allow, " or ")))
			return
		}
		writeError(a.log, w, r, errorf(http.StatusNotFound, "no such API route: "+r.Method+" "+r.URL.Path))
	})
	a.handler = securityHeaders(mux)
	return a, nil
}

// Handler serves /api/v1/…, /login and /logout.
func (a *API) Handler() http.Handler { return a.handler }

func securityHeaders(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Cache-Control", "no-store")
		h.Set("Referrer-Policy", "no-referrer")
		next.ServeHTTP(w, r)
	})
}

// allowedMethods lists the methods some route other than the catch-all
// serves for r's path (for a JSON 405 instead of the mux's plain text).
func allowedMethods(mux *http.ServeMux, r *http.Request) []string {
	var allow []string
	for _, m := range []string{http.MethodGet, http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete} {
		if m == r.Method {
			continue
		}
		r2 := r.Clone(r.Context())
		r2.Method = m
		if _, pattern := mux.Handler(r2); pattern != "/api/v1/" && pattern != "" {
			allow = append(allow, m)
		}
	}
	return allow
}
