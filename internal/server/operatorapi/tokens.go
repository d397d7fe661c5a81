package operatorapi

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/meshanics/meshanics/internal/errdefs"
	"github.com/meshanics/meshanics/internal/server/enrollment"
	"github.com/meshanics/meshanics/internal/server/httpjson"
	"github.com/meshanics/meshanics/internal/server/store"
)

// TokenService mints, lists and revokes enrollment tokens. Create and
// Revoke append their audit event (actor as given) in the transaction of the
// change. Config.Tokens nil means StoreTokens over Config.Store.
type TokenService interface {
	CreateToken(ctx context.Context, actor string, opts enrollment.TokenOptions) (tok store.EnrollmentToken, secret string, err error)
	ListTokens(ctx context.Context, p store.Page) ([]store.EnrollmentToken, int, error)
	RevokeToken(ctx context.Context, actor, id string) error
}

// installer is implemented by a TokenService that builds the install
// command itself (enrollment.Service), so there is one builder per server.
type installer interface {
	InstallCommand(secret string) string
	CAPin() string
}

// TokenStore is what StoreTokens needs (*store.DB).
type TokenStore interface {
	Tx(ctx context.Context, fn func(tx *store.Tx) error) error
	ListEnrollmentTokens(ctx context.Context, p store.Page) ([]store.EnrollmentToken, int, error)
}

// StoreTokens is the TokenService over the store: the token policy
// (defaults, bounds, tags, secret format) is internal/server/enrollment's,
// persistence and the audit event the store's.
type StoreTokens struct {
	Store TokenStore
	Now   func() time.Time
}

// CreateToken mints a token; the secret is returned once and only its hash
// is stored.
func (s StoreTokens) CreateToken(ctx context.Context, actor string, opts enrollment.TokenOptions) (store.EnrollmentToken, string, error) {
	opts, err := opts.Normalize()
	if err != nil {
		return store.EnrollmentToken{}, "", err
	}
	secret := enrollment.NewTokenSecret()
	var tok store.EnrollmentToken
	err = s.Store.Tx(ctx, func(tx *store.Tx) error {
		var err error
		tok, err = tx.CreateEnrollmentToken(ctx, actor, store.NewEnrollmentToken{
			Hash: store.HashSecret(secret), ExpiresAt: s.Now().Add(opts.TTL), Uses: opts.Uses, Tags: opts.Tags, Replace: opts.Replace,
		})
		return err
	})
	if err != nil {
		return store.EnrollmentToken{}, "", err
	}
	return tok, secret, nil
}

// ListTokens returns one page of tokens, newest first.
func (s StoreTokens) ListTokens(ctx context.Context, p store.Page) ([]store.EnrollmentToken, int, error) {
	return s.Store.ListEnrollmentTokens(ctx, p)
}

// RevokeToken revokes token id at once.
func (s StoreTokens) RevokeToken(ctx context.Context, actor, id string) error {
	return s.Store.Tx(ctx, func(tx *store.Tx) error {
		_, err := tx.RevokeEnrollmentToken(ctx, actor, id)
		return err
	})
}

func (a *API) registerEnrollmentTokens(mux *http.ServeMux) {
	a.handle(mux, "POST /api/v1/enrollment-tokens", EnrollmentWrite, a.createToken)
	a.handle(mux, "GET /api/v1/enrollment-tokens", EnrollmentWrite, a.listTokens)
	a.handle(mux, "DELETE /api/v1/enrollment-tokens/{id}", EnrollmentWrite, a.revokeToken)
}

type tokenCreateRequest struct {
	TTLSeconds int64             `json:"ttl_seconds"`
	Uses       int               `json:"uses"`
	Tags       map[string]string `json:"tags"`
	Replace    bool              `json:"replace"`
}

// tokenCreatedJSON is shown once: the secret is never retrievable again.
type tokenCreatedJSON struct {
	ID             string    `json:"id"`
	Token          string    `json:"token"`
	ExpiresAt      time.Time `json:"expires_at"`
	Uses           int       `json:"uses"`
	CAPin          string    `json:"ca_pin"`
	InstallCommand string    `json:"install_command"`
}

type tokenJSON struct {
	ID         string            `json:"id"`
	State      string            `json:"state"` // active | expired | spent | revoked
	CreatedBy  string            `json:"created_by"`
	CreatedAt  time.Time         `json:"created_at"`
	ExpiresAt  time.Time         `json:"expires_at"`
	Uses       int               `json:"uses"`
	UsesLeft   int               `json:"uses_left"`
	Tags       map[string]string `json:"tags"`
	Replace    bool              `json:"replace"`
	RevokedAt  *time.Time        `json:"revoked_at"`
	LastUsedAt *time.Time        `json:"last_used_at"`
}

func toTokenJSON(t store.EnrollmentToken, now time.Time) tokenJSON {
	tags := t.Tags
	if tags == nil {
		tags = map[string]string{}
	}
	return tokenJSON{
		ID: t.ID, State: t.State(now), CreatedBy: t.CreatedBy, CreatedAt: t.CreatedAt, ExpiresAt: t.ExpiresAt,
		Uses: t.Uses, UsesLeft: t.UsesLeft, Tags: tags, Replace: t.Replace,
		RevokedAt: timePtr(t.RevokedAt), LastUsedAt: timePtr(t.LastUsedAt),
	}
}

func (a *API) createToken(w http.ResponseWriter, r *http.Request, p Principal) error {
	var req tokenCreateRequest
	if err := decodeJSON(w, r, 0, &req); err != nil {
		return err
	}
	if req.TTLSeconds < 0 || req.TTLSeconds > int64(enrollment.MaxTokenTTL/time.Second) {
		return errdefs.Invalid("ttl_seconds must be between 60 and 2592000 (30 days)")
	}
	opts := enrollment.TokenOptions{
		TTL:     time.Duration(req.TTLSeconds) * time.Second,
		Uses:    req.Uses,
		Tags:    req.Tags,
		Replace: req.Replace,
	}
	tok, secret, err := a.tokens.CreateToken(r.Context(), p.Actor(), opts)
	if err != nil {
		return fmt.Errorf("create enrollment token: %w", err)
	}
	out := tokenCreatedJSON{ID: tok.ID, Token: secret, ExpiresAt: tok.ExpiresAt, Uses: tok.Uses}
	if in, ok := a.tokens.(installer); ok {
		out.CAPin, out.InstallCommand = in.CAPin(), in.InstallCommand(secret)
	} else {
		out.CAPin, out.InstallCommand = a.caPin, InstallCommand(a.publicURL, a.caPEM, secret, a.caPin)
	}
	httpjson.Write(w, http.StatusCreated, out)
	return nil
}

// InstallCommand is the one-line device install of SPEC §2: curl checks the
// server against the CA PEM given inline (no unpinned download), and the
// installer gets the URL, the token and the CA pin.
func InstallCommand(publicURL string, caPEM []byte, token, pin string) string {
	base := strings.TrimRight(publicURL, "/")
	return fmt.Sprintf("curl -fsSL --cacert <(printf '%%s' '%s') %s/install.sh | sudo sh -s -- --url %s --token %s --ca-pin %s",
		strings.TrimSpace(string(caPEM)), base, base, token, pin)
}

func (a *API) listTokens(w http.ResponseWriter, r *http.Request, _ Principal) error {
	return writePage(w, r, func(p store.Page) ([]tokenJSON, int, error) {
		toks, total, err := a.tokens.ListTokens(r.Context(), p)
		if err != nil {
			return nil, 0, fmt.Errorf("list enrollment tokens: %w", err)
		}
		now := a.now()
		return convert(toks, func(t store.EnrollmentToken) tokenJSON { return toTokenJSON(t, now) }), total, nil
	})
}

func (a *API) revokeToken(w http.ResponseWriter, r *http.Request, p Principal) error {
	id := r.PathValue("id")
	if len(id) > 64 {
		return errdefs.NotFound("enrollment token not found")
	}
	if err := a.tokens.RevokeToken(r.Context(), p.Actor(), id); err != nil {
		return fmt.Errorf("revoke enrollment token: %w", err)
	}
	writeNoContent(w)
	return nil
}
