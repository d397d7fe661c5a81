package operatorapi

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/meshanics/meshanics/internal/errdefs"
	"github.com/meshanics/meshanics/internal/server/store"
)

// SessionCookie is the name of the login session cookie (SPEC §8).
const SessionCookie = "meshanics_session"

// APIKeyPrefix starts every operator API key.
const APIKeyPrefix = "msk_"

// Principal is the authenticated caller of a request.
type Principal struct {
	// Kind is "user" (session cookie) or "apikey" (bearer key).
	Kind string
	// Name is the user name or the API key id.
	Name string
	Role Role
}

// Actor is the audit actor of the principal: "user:<name>" or
// "apikey:<id>" (SPEC §10).
func (p Principal) Actor() string {
	if p.Kind == "apikey" {
		return store.APIKeyActor(p.Name)
	}
	return store.UserActor(p.Name)
}

// Can reports whether the principal's role grants perm.
func (p Principal) Can(perm Permission) bool { return p.Role.Has(perm) }

// handlerFunc is a route handler behind authentication. A returned error is
// answered through writeError (the one status mapping), so handlers just
// return errors.
type handlerFunc func(w http.ResponseWriter, r *http.Request, p Principal) error

// handle registers pattern (Go 1.22 mux syntax, "POST /api/v1/…") on mux
// behind authentication and the permission perm. Every route of the API goes
// through it, except /login and /logout.
func (a *API) handle(mux *http.ServeMux, pattern string, perm Permission, h handlerFunc) {
	mux.HandleFunc(pattern, func(w http.ResponseWriter, r *http.Request) {
		p, err := a.authenticate(r)
		if err != nil {
			writeError(a.log, w, r, err)
			return
		}
		if !p.Can(perm) {
			writeError(a.log, w, r, errorf(http.StatusForbidden, "missing permission: "+string(perm)))
			return
		}
		if err := h(w, r, p); err != nil {
			writeError(a.log, w, r, err)
		}
	})
}

// handleAuthed registers pattern behind authentication only: any role may
// call it (GET /api/v1/me).
func (a *API) handleAuthed(mux *http.ServeMux, pattern string, h handlerFunc) {
	mux.HandleFunc(pattern, func(w http.ResponseWriter, r *http.Request) {
		p, err := a.authenticate(r)
		if err != nil {
			writeError(a.log, w, r, err)
			return
		}
		if err := h(w, r, p); err != nil {
			writeError(a.log, w, r, err)
		}
	})
}

var (
	errNoCredentials = errorf(http.StatusUnauthorized, "authentication required: send Authorization: Bearer msk_… or log in")
	errBadAPIKey     = errorf(http.StatusUnauthorized, "invalid or revoked API key")
	errBadSession    = errorf(http.StatusUnauthorized, "session expired or invalid; log in again")
	errCrossOrigin   = errorf(http.StatusForbidden, "cross-origin request refused")
)

// maxCredential bounds a presented API key or session id before hashing.
const maxCredential = 512

// authenticate finds the principal of r: an Authorization: Bearer API key
// if present (a bad key is refused, never silently ignored in favour of a
// cookie), else the session cookie.
func (a *API) authenticate(r *http.Request) (Principal, error) {
	if h := r.Header.Get("Authorization"); h != "" {
		scheme, key, ok := strings.Cut(h, " ")
		if !ok || !strings.EqualFold(scheme, "Bearer") || !strings.HasPrefix(key, APIKeyPrefix) || len(key) > maxCredential {
			return Principal{}, errBadAPIKey
		}
		return a.authAPIKey(r.Context(), key)
	}
	c, err := r.Cookie(SessionCookie)
	if err != nil || c.Value == "" {
		return Principal{}, errNoCredentials
	}
	if len(c.Value) > maxCredential {
		return Principal{}, errBadSession
	}
	if !safeMethod(r.Method) && !sameOrigin(r) {
		// The cookie is SameSite=Strict already; refusing a foreign Origin
		// on changes is the second lock against cross-site requests.
		return Principal{}, errCrossOrigin
	}
	return a.authSession(r.Context(), c.Value)
}

func (a *API) authAPIKey(ctx context.Context, key string) (Principal, error) {
	// Only the sha256 of a key is stored and looked up (an indexed read):
	// the secret itself is never compared, so the lookup's timing can at
	// most reveal something about a hash of 256 random bits.
	k, err := a.store.APIKeyByHash(ctx, store.HashSecret(key))
	if errors.Is(err, errdefs.ErrUnauthenticated) || errors.Is(err, errdefs.ErrNotFound) {
		return Principal{}, errBadAPIKey
	}
	if err != nil {
		return Principal{}, fmt.Errorf("look up API key: %w", err)
	}
	role, ok := ParseRole(k.Role)
	if !ok || !k.RevokedAt.IsZero() {
		return Principal{}, errBadAPIKey
	}
	a.touchKey(ctx, k.ID)
	return Principal{Kind: "apikey", Name: k.ID, Role: role}, nil
}

func (a *API) authSession(ctx context.Context, id string) (Principal, error) {
	_, u, err := a.store.SessionByHash(ctx, store.HashSecret(id), a.now())
	if errors.Is(err, errdefs.ErrUnauthenticated) || errors.Is(err, errdefs.ErrNotFound) {
		return Principal{}, errBadSession
	}
	if err != nil {
		return Principal{}, fmt.Errorf("look up session: %w", err)
	}
	role, ok := ParseRole(u.Role)
	if !ok {
		return Principal{}, errBadSession
	}
	return Principal{Kind: "user", Name: u.Name, Role: role}, nil
}

func safeMethod(m string) bool {
	return m == http.MethodGet || m == http.MethodHead || m == http.MethodOptions
}

// sameOrigin accepts a request without an Origin header (non-browser
// clients) or one whose Origin host is the request's host.
func sameOrigin(r *http.Request) bool {
	o := r.Header.Get("Origin")
	if o == "" {
		return true
	}
	u, err := url.Parse(o)
	return err == nil && u.Host == r.Host
}

// touchInterval is how often an API key's last_used_at is written at most.
const touchInterval = time.Minute

// touchKey records key use, at most once per touchInterval per key and
// replica, so that authentication does not write on every request.
func (a *API) touchKey(ctx context.Context, id string) {
	now := a.now()
	a.touchMu.Lock()
	last, ok := a.touched[id]
	if ok && now.Sub(last) < touchInterval {
		a.touchMu.Unlock()
		return
	}
	if len(a.touched) > 10000 {
		clear(a.touched) // bounded; at worst a few extra writes
	}
	a.touched[id] = now
	a.touchMu.Unlock()
	if err := a.store.TouchAPIKey(ctx, id, now); err != nil {
		a.log.Warn("record API key use", "key", id, "err", err)
	}
}
