package operatorapi

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/meshanics/meshanics/internal/errdefs"
	"github.com/meshanics/meshanics/internal/server/store"
)

// registerSession adds POST /login and POST /logout. Login is rate-limited
// per client address; both answer 204.
func (a *API) registerSession(mux *http.ServeMux) {
	mux.Handle("POST /login", a.loginLimit.Middleware(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := a.login(w, r); err != nil {
			writeError(a.log, w, r, err)
		}
	})))
	mux.HandleFunc("POST /logout", func(w http.ResponseWriter, r *http.Request) {
		if err := a.logout(w, r); err != nil {
			writeError(a.log, w, r, err)
		}
	})
}

type loginRequest struct {
	Username string `json:"username"`
	Password string `json:"password"`
}

var errBadLogin = errorf(http.StatusUnauthorized, "wrong user name or password")

func (a *API) login(w http.ResponseWriter, r *http.Request) error {
	var req loginRequest
	if err := decodeJSON(w, r, 4<<10, &req); err != nil {
		return err
	}
	if req.Username == "" || req.Password == "" {
		return errdefs.Invalid("username and password are required")
	}
	if len(req.Password) > MaxPasswordLen {
		return errBadLogin
	}
	ctx := r.Context()
	u, err := a.store.User(ctx, req.Username)
	if err != nil && !errors.Is(err, errdefs.ErrNotFound) {
		return fmt.Errorf("look up user: %w", err)
	}
	// An unknown user, or one without a password (login disabled, e.g. the
	// first admin, who has only an API key), costs the same work as a real
	// check, so timing does not tell them apart.
	usable := err == nil && u.PasswordHash != ""
	hash := a.dummyHash
	if usable {
		hash = u.PasswordHash
	}
	var ok bool
	if err := a.withHashSlot(ctx, func() { ok = VerifyPassword(req.Password, hash) }); err != nil {
		return err
	}
	if !usable {
		return errBadLogin
	}
	if !ok {
		a.log.Info("login refused", "user", u.Name, "remote", r.RemoteAddr)
		return errBadLogin
	}
	secret := newSessionSecret()
	now := a.now()
	expires := now.Add(a.sessionTTL)
	err = a.store.Tx(ctx, func(tx *store.Tx) error {
		_, err := tx.CreateSession(ctx, store.HashSecret(secret), u.Name, expires) // appends user.login
		return err
	})
	if err != nil {
		return fmt.Errorf("create session: %w", err)
	}
	a.sweepSessions(ctx, now)
	http.SetCookie(w, &http.Cookie{
		Name:     SessionCookie,
		Value:    secret,
		Path:     "/",
		Expires:  expires,
		MaxAge:   int(a.sessionTTL.Seconds()),
		HttpOnly: true,
		Secure:   true,
		SameSite: http.SameSiteStrictMode,
	})
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func (a *API) logout(w http.ResponseWriter, r *http.Request) error {
	if _, err := decodeOptionalBody(w, r); err != nil {
		return err
	}
	if c, err := r.Cookie(SessionCookie); err == nil && c.Value != "" && len(c.Value) <= maxCredential {
		if !sameOrigin(r) {
			return errCrossOrigin
		}
		ctx := r.Context()
		hash := store.HashSecret(c.Value)
		err := a.store.Tx(ctx, func(tx *store.Tx) error {
			return tx.DeleteSession(ctx, hash) // appends user.logout; unknown = nothing
		})
		if err != nil {
			return fmt.Errorf("end session: %w", err)
		}
	}
	http.SetCookie(w, &http.Cookie{
		Name: SessionCookie, Value: "", Path: "/", MaxAge: -1,
		HttpOnly: true, Secure: true, SameSite: http.SameSiteStrictMode,
	})
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// newSessionSecret returns 32 random bytes, URL-safe base64.
func newSessionSecret() string {
	var b [32]byte
	_, _ = rand.Read(b[:]) // never fails (Go ≥ 1.24)
	return base64.RawURLEncoding.EncodeToString(b[:])
}

// sweepInterval is how often a login also removes expired sessions.
const sweepInterval = time.Hour

// sweepSessions removes expired sessions at most once per sweepInterval
// per replica. Logins are the only way sessions are created, so sweeping
// on login bounds the table without a background loop.
func (a *API) sweepSessions(ctx context.Context, now time.Time) {
	a.sweepMu.Lock()
	due := now.Sub(a.lastSweep) >= sweepInterval
	if due {
		a.lastSweep = now
	}
	a.sweepMu.Unlock()
	if !due {
		return
	}
	if n, err := a.store.DeleteExpiredSessions(ctx, now); err != nil {
		a.log.Warn("remove expired sessions", "err", err)
	} else if n > 0 {
		a.log.Info("removed expired sessions", "count", n)
	}
}
