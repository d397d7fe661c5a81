package operatorapi

import (
	"context"
	"net/http"

	"github.com/meshanics/meshanics/internal/errdefs"
	"github.com/meshanics/meshanics/internal/server/httpjson"
	"github.com/meshanics/meshanics/internal/server/rollout"
	"github.com/meshanics/meshanics/internal/server/store"
)

// GroupService manages static device groups (*rollout.Runner).
type GroupService interface {
	CreateGroup(ctx context.Context, actor, name string, devices []string) (rollout.GroupView, []string, error)
	ChangeGroup(ctx context.Context, actor, name string, add bool, devices []string) (rollout.GroupView, []string, error)
	ReplaceGroup(ctx context.Context, actor, name string, devices []string) (rollout.GroupView, []string, error)
	DeleteGroup(ctx context.Context, actor, name string) error
	Group(ctx context.Context, name string) (rollout.GroupView, error)
	Groups(ctx context.Context, p store.Page) ([]rollout.GroupView, int, error)
}

// maxGroupBody bounds group bodies: up to 100,000 device names.
const maxGroupBody = 8 << 20

var errNoGroups = errorf(http.StatusServiceUnavailable, "groups are not configured on this server")

func (a *API) registerGroups(mux *http.ServeMux) {
	a.handle(mux, "POST /api/v1/groups", GroupsWrite, a.createGroup)
	a.handle(mux, "GET /api/v1/groups", GroupsRead, a.listGroups)
	a.handle(mux, "GET /api/v1/groups/{name}", GroupsRead, a.getGroup)
	a.handle(mux, "POST /api/v1/groups/{name}/members", GroupsWrite, a.changeGroup)
	a.handle(mux, "PUT /api/v1/groups/{name}/members", GroupsWrite, a.replaceGroup)
	a.handle(mux, "DELETE /api/v1/groups/{name}", GroupsWrite, a.deleteGroup)
}

// groupResult is the body of a create or membership change: the group and
// the names that did not resolve (never silently dropped).
type groupResult struct {
	Group      rollout.GroupView `json:"group"`
	Unresolved []string          `json:"unresolved"`
	NotMembers []string          `json:"not_members,omitempty"`
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

func (a *API) createGroup(w http.ResponseWriter, r *http.Request, p Principal) error {
	if a.groups == nil {
		return errNoGroups
	}
	var req struct {
		Name    string   `json:"name"`
		Devices []string `json:"devices"`
	}
	if err := decodeJSON(w, r, maxGroupBody, &req); err != nil {
		return err
	}
	g, unresolved, err := a.groups.CreateGroup(r.Context(), p.Actor(), req.Name, req.Devices)
	if err != nil {
		return err
	}
	httpjson.Write(w, http.StatusCreated, groupResult{Group: g, Unresolved: nonNil(unresolved)})
	return nil
}

func (a *API) listGroups(w http.ResponseWriter, r *http.Request, _ Principal) error {
	if a.groups == nil {
		return errNoGroups
	}
	return writePage(w, r, func(p store.Page) ([]rollout.GroupView, int, error) {
		return a.groups.Groups(r.Context(), p)
	})
}

func (a *API) getGroup(w http.ResponseWriter, r *http.Request, _ Principal) error {
	if a.groups == nil {
		return errNoGroups
	}
	g, err := a.groups.Group(r.Context(), r.PathValue("name"))
	if err != nil {
		return err
	}
	g.Devices = nonNil(g.Devices)
	httpjson.Write(w, http.StatusOK, g)
	return nil
}

// changeGroup takes {"add":[…],"remove":[…]}; both may be given.
func (a *API) changeGroup(w http.ResponseWriter, r *http.Request, p Principal) error {
	if a.groups == nil {
		return errNoGroups
	}
	var req struct {
		Add    []string `json:"add"`
		Remove []string `json:"remove"`
	}
	if err := decodeJSON(w, r, maxGroupBody, &req); err != nil {
		return err
	}
	if len(req.Add) == 0 && len(req.Remove) == 0 {
		return errdefs.Invalid(`give device names in "add" and/or "remove"`)
	}
	name := r.PathValue("name")
	res := groupResult{Unresolved: []string{}}
	var err error
	if len(req.Remove) > 0 {
		var nm []string
		if res.Group, nm, err = a.groups.ChangeGroup(r.Context(), p.Actor(), name, false, req.Remove); err != nil {
			return err
		}
		res.NotMembers = nonNil(nm)
	}
	if len(req.Add) > 0 {
		var un []string
		if res.Group, un, err = a.groups.ChangeGroup(r.Context(), p.Actor(), name, true, req.Add); err != nil {
			return err
		}
		res.Unresolved = nonNil(un)
	}
	httpjson.Write(w, http.StatusOK, res)
	return nil
}

// replaceGroup takes {"devices":[…]}: the new membership.
func (a *API) replaceGroup(w http.ResponseWriter, r *http.Request, p Principal) error {
	if a.groups == nil {
		return errNoGroups
	}
	var req struct {
		Devices []string `json:"devices"`
	}
	if err := decodeJSON(w, r, maxGroupBody, &req); err != nil {
		return err
	}
	g, unresolved, err := a.groups.ReplaceGroup(r.Context(), p.Actor(), r.PathValue("name"), req.Devices)
	if err != nil {
		return err
	}
	httpjson.Write(w, http.StatusOK, groupResult{Group: g, Unresolved: nonNil(unresolved)})
	return nil
}

func (a *API) deleteGroup(w http.ResponseWriter, r *http.Request, p Principal) error {
	if a.groups == nil {
		return errNoGroups
	}
	if err := a.groups.DeleteGroup(r.Context(), p.Actor(), r.PathValue("name")); err != nil {
		return err
	}
	writeNoContent(w)
	return nil
}
