package operatorapi

import (
	"net/http"

	"github.com/meshanics/meshanics/internal/server/httpjson"
)

func (a *API) registerMe(mux *http.ServeMux) {
	a.handleAuthed(mux, "GET /api/v1/me", a.me)
}

type meJSON struct {
	Actor       string       `json:"actor"`
	Kind        string       `json:"kind"` // user | apikey
	Name        string       `json:"name"`
	Role        Role         `json:"role"`
	Permissions []Permission `json:"permissions"`
}

// me tells the caller who the API thinks it is and what it may do (the
// console hides what the role cannot use; meshctl whoami prints it).
func (a *API) me(w http.ResponseWriter, _ *http.Request, p Principal) error {
	httpjson.Write(w, http.StatusOK, meJSON{Actor: p.Actor(), Kind: p.Kind, Name: p.Name, Role: p.Role, Permissions: p.Role.Permissions()})
	return nil
}
