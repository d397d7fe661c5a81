package operatorapi

import (
	"context"
	"net/http"

	"github.com/meshanics/meshanics/internal/errdefs"
	"github.com/meshanics/meshanics/internal/server/httpjson"
	"github.com/meshanics/meshanics/internal/server/rollout"
	"github.com/meshanics/meshanics/internal/server/store"
	"github.com/meshanics/meshanics/internal/states"
)

// RolloutService is the rollout engine (*rollout.Runner).
type RolloutService interface {
	Create(ctx context.Context, actor string, req rollout.CreateRequest) (rollout.View, error)
	Get(ctx context.Context, id string) (rollout.View, error)
	List(ctx context.Context, state string, p store.Page) ([]rollout.View, int, error)
	Devices(ctx context.Context, id string, p store.Page) ([]rollout.DeviceView, int, error)
	Approve(ctx context.Context, actor, id string) (rollout.View, error)
	Halt(ctx context.Context, actor, id string) (rollout.View, error)
	Resume(ctx context.Context, actor, id string) (rollout.View, error)
	Abort(ctx context.Context, actor, id, policy string) (rollout.View, error)
}

var errNoRollouts = errorf(http.StatusServiceUnavailable, "rollouts are not configured on this server")

func (a *API) registerRollouts(mux *http.ServeMux) {
	a.handle(mux, "POST /api/v1/rollouts", RolloutsWrite, a.createRollout)
	a.handle(mux, "GET /api/v1/rollouts", RolloutsRead, a.listRollouts)
	a.handle(mux, "GET /api/v1/rollouts/{id}", RolloutsRead, a.getRollout)
	a.handle(mux, "GET /api/v1/rollouts/{id}/devices", RolloutsRead, a.rolloutDevices)
	a.handle(mux, "POST /api/v1/rollouts/{id}/approve", RolloutsApprove, a.rolloutCommand(RolloutService.Approve))
	a.handle(mux, "POST /api/v1/rollouts/{id}/resume", RolloutsApprove, a.rolloutCommand(RolloutService.Resume))
	a.handle(mux, "POST /api/v1/rollouts/{id}/halt", RolloutsWrite, a.rolloutCommand(RolloutService.Halt))
	a.handle(mux, "POST /api/v1/rollouts/{id}/abort", RolloutsWrite, a.abortRollout)
}

func (a *API) createRollout(w http.ResponseWriter, r *http.Request, p Principal) error {
	if a.rollouts == nil {
		return errNoRollouts
	}
	var req rollout.CreateRequest
	if err := decodeJSON(w, r, 0, &req); err != nil {
		return err
	}
	v, err := a.rollouts.Create(r.Context(), p.Actor(), req)
	if err != nil {
		return err
	}
	httpjson.Write(w, http.StatusCreated, v)
	return nil
}

func (a *API) listRollouts(w http.ResponseWriter, r *http.Request, _ Principal) error {
	if a.rollouts == nil {
		return errNoRollouts
	}
	return writePage(w, r, func(p store.Page) ([]rollout.View, int, error) {
		state := r.URL.Query().Get("state")
		switch states.Rollout(state) {
		case "", states.Running, states.WaitingForApproval, states.Halted, states.Completed, states.Aborted:
		default:
			return nil, 0, errdefs.Invalid("state must be running, waiting_for_approval, halted, completed or aborted")
		}
		return a.rollouts.List(r.Context(), state, p)
	})
}

func (a *API) getRollout(w http.ResponseWriter, r *http.Request, _ Principal) error {
	if a.rollouts == nil {
		return errNoRollouts
	}
	v, err := a.rollouts.Get(r.Context(), r.PathValue("id"))
	if err != nil {
		return err
	}
	httpjson.Write(w, http.StatusOK, v)
	return nil
}

func (a *API) rolloutDevices(w http.ResponseWriter, r *http.Request, _ Principal) error {
	if a.rollouts == nil {
		return errNoRollouts
	}
	return writePage(w, r, func(p store.Page) ([]rollout.DeviceView, int, error) {
		return a.rollouts.Devices(r.Context(), r.PathValue("id"), p)
	})
}

// rolloutCommand serves approve, halt and resume (no body needed).
func (a *API) rolloutCommand(cmd func(RolloutService, context.Context, string, string) (rollout.View, error)) handlerFunc {
	return func(w http.ResponseWriter, r *http.Request, p Principal) error {
		if a.rollouts == nil {
			return errNoRollouts
		}
		if _, err := decodeOptionalBody(w, r); err != nil {
			return err
		}
		v, err := cmd(a.rollouts, r.Context(), p.Actor(), r.PathValue("id"))
		if err != nil {
			return err
		}
		httpjson.Write(w, http.StatusOK, v)
		return nil
	}
}

// abortRollout takes an optional {"policy":"keep|revert"} (default keep).
func (a *API) abortRollout(w http.ResponseWriter, r *http.Request, p Principal) error {
	if a.rollouts == nil {
		return errNoRollouts
	}
	var req struct {
		Policy string `json:"policy"`
	}
	if err := decodeOptionalJSON(w, r, 0, &req); err != nil {
		return err
	}
	v, err := a.rollouts.Abort(r.Context(), p.Actor(), r.PathValue("id"), req.Policy)
	if err != nil {
		return err
	}
	httpjson.Write(w, http.StatusOK, v)
	return nil
}
