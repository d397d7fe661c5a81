package operatorapi

import (
	"context"
	"errors"
	"io"
	"mime"
	"net/http"

	"github.com/theupdateframework/go-tuf/v2/metadata"

	"github.com/meshanics/meshanics/internal/ceremony"
	"github.com/meshanics/meshanics/internal/server/httpjson"
	"github.com/meshanics/meshanics/internal/server/updaterepo"
)

// TrustService is the update repository's operator side
// (*updaterepo.Repository).
type TrustService interface {
	Trust(ctx context.Context) (updaterepo.TrustInfo, error)
	OnlineKeys(ctx context.Context) (ceremony.OnlineKeys, error)
	Import(ctx context.Context, req updaterepo.ImportRequest, actor string) (updaterepo.ImportResult, error)
	RotateOnlineKey(ctx context.Context, role, actor string) (*metadata.Key, error)
}

func (a *API) registerTrust(mux *http.ServeMux) {
	a.handle(mux, "GET /api/v1/trust", ArtifactsRead, a.getTrust)
	a.handle(mux, "GET /api/v1/trust/online-keys", TrustManage, a.getOnlineKeys)
	a.handle(mux, "POST /api/v1/trust/metadata", TrustManage, a.importTrust)
	a.handle(mux, "POST /api/v1/trust/online-keys/rotate", TrustManage, a.rotateOnlineKey)
}

var errNoTrust = errorf(http.StatusServiceUnavailable, "the update repository is not configured on this server")

// trustError shows the not-initialized hint verbatim (it names what to do).
func trustError(err error) error {
	if errors.Is(err, updaterepo.ErrNotInitialized) {
		return errorf(http.StatusServiceUnavailable, err.Error())
	}
	return err
}

func (a *API) getTrust(w http.ResponseWriter, r *http.Request, _ Principal) error {
	if a.trust == nil {
		return errNoTrust
	}
	info, err := a.trust.Trust(r.Context())
	if err != nil {
		return err
	}
	httpjson.Write(w, http.StatusOK, info)
	return nil
}

func (a *API) getOnlineKeys(w http.ResponseWriter, r *http.Request, _ Principal) error {
	if a.trust == nil {
		return errNoTrust
	}
	keys, err := a.trust.OnlineKeys(r.Context())
	if err != nil {
		return err
	}
	httpjson.Write(w, http.StatusOK, keys)
	return nil
}

// importTrust takes {"roots":[…],"targets":{…}} signed by the offline
// ceremony; the server validates it and never needs the offline keys.
func (a *API) importTrust(w http.ResponseWriter, r *http.Request, p Principal) error {
	if a.trust == nil {
		return errNoTrust
	}
	if ct := r.Header.Get("Content-Type"); ct != "" {
		if mt, _, err := mime.ParseMediaType(ct); err != nil || mt != "application/json" {
			return errorf(http.StatusUnsupportedMediaType, "request body must be application/json")
		}
	}
	raw, err := io.ReadAll(http.MaxBytesReader(w, r.Body, updaterepo.MaxImportBytes))
	if err != nil {
		return err
	}
	req, err := updaterepo.ParseImport(raw)
	if err != nil {
		return err
	}
	res, err := a.trust.Import(r.Context(), req, p.Actor())
	if err != nil {
		return trustError(err)
	}
	httpjson.Write(w, http.StatusOK, res)
	return nil
}

func (a *API) rotateOnlineKey(w http.ResponseWriter, r *http.Request, p Principal) error {
	if a.trust == nil {
		return errNoTrust
	}
	var body struct {
		Role string `json:"role"`
	}
	if err := decodeJSON(w, r, 0, &body); err != nil {
		return err
	}
	k, err := a.trust.RotateOnlineKey(r.Context(), body.Role, p.Actor())
	if err != nil {
		return err
	}
	httpjson.Write(w, http.StatusCreated, map[string]any{"role": body.Role, "keyid": ceremony.KeyID(k), "key": k})
	return nil
}
