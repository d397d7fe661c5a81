package operatorapi

import (
	"crypto/rand"
	"encoding/base32"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/meshanics/meshanics/internal/errdefs"
	"github.com/meshanics/meshanics/internal/server/httpjson"
	"github.com/meshanics/meshanics/internal/server/store"
)

func (a *API) registerAPIKeys(mux *http.ServeMux) {
	a.handle(mux, "GET /api/v1/api-keys", APIKeysManage, a.listAPIKeys)
	a.handle(mux, "POST /api/v1/api-keys", APIKeysManage, a.createAPIKey)
	a.handle(mux, "DELETE /api/v1/api-keys/{id}", APIKeysManage, a.deleteAPIKey)
}

// NewAPIKey returns a fresh operator API key: "msk_" followed by 32 random
// bytes in lower-case base32. The store keeps only store.HashSecret of it.
// meshanics-server init uses it for the first admin key.
func NewAPIKey() string {
	var b [32]byte
	_, _ = rand.Read(b[:]) // never fails (Go ≥ 1.24)
	return APIKeyPrefix + strings.ToLower(base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString(b[:]))
}

type apiKeyJSON struct {
	ID         string     `json:"id"`
	Name       string     `json:"name"`
	Role       string     `json:"role"`
	Owner      string     `json:"owner"`
	CreatedAt  time.Time  `json:"created_at"`
	LastUsedAt *time.Time `json:"last_used_at"`
}

func toAPIKeyJSON(k store.APIKey) apiKeyJSON {
	return apiKeyJSON{ID: k.ID, Name: k.Name, Role: k.Role, Owner: k.Owner, CreatedAt: k.CreatedAt, LastUsedAt: timePtr(k.LastUsedAt)}
}

func timePtr(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	return &t
}

func (a *API) listAPIKeys(w http.ResponseWriter, r *http.Request, _ Principal) error {
	return writePage(w, r, func(p store.Page) ([]apiKeyJSON, int, error) {
		keys, total, err := a.store.ListAPIKeys(r.Context(), "", p)
		if err != nil {
			return nil, 0, fmt.Errorf("list API keys: %w", err)
		}
		return convert(keys, toAPIKeyJSON), total, nil
	})
}

type createAPIKeyRequest struct {
	Name string `json:"name"`
	Role string `json:"role"`
}

type createdAPIKeyJSON struct {
	apiKeyJSON
	Key string `json:"key"`
}

func (a *API) createAPIKey(w http.ResponseWriter, r *http.Request, p Principal) error {
	var req createAPIKeyRequest
	if err := decodeJSON(w, r, 0, &req); err != nil {
		return err
	}
	if n := len(req.Name); n == 0 || n > 64 || strings.ContainsFunc(req.Name, func(c rune) bool { return c < 0x20 || c == 0x7f }) {
		return errdefs.Invalid("name must be 1 to 64 printable characters")
	}
	role, err := validateRole(req.Role)
	if err != nil {
		return err
	}
	secret := NewAPIKey()
	ctx := r.Context()
	var k store.APIKey
	err = a.store.Tx(ctx, func(tx *store.Tx) error {
		var err error
		k, err = tx.CreateAPIKey(ctx, p.Actor(), store.NewAPIKey{ // appends apikey.create
			Hash: store.HashSecret(secret), Name: req.Name, Role: string(role), Owner: p.Actor(),
		})
		return err
	})
	if err != nil {
		return fmt.Errorf("create API key: %w", err)
	}
	httpjson.Write(w, http.StatusCreated, createdAPIKeyJSON{apiKeyJSON: toAPIKeyJSON(k), Key: secret})
	return nil
}

func (a *API) deleteAPIKey(w http.ResponseWriter, r *http.Request, p Principal) error {
	id := r.PathValue("id")
	if len(id) > 64 {
		return errdefs.NotFound("API key not found")
	}
	ctx := r.Context()
	err := a.store.Tx(ctx, func(tx *store.Tx) error {
		_, err := tx.RevokeAPIKey(ctx, p.Actor(), id) // appends apikey.revoke
		return err
	})
	if err != nil {
		return fmt.Errorf("revoke API key: %w", err)
	}
	writeNoContent(w)
	return nil
}
