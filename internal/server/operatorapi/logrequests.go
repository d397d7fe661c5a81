package operatorapi

import (
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/meshanics/meshanics/internal/errdefs"
	"github.com/meshanics/meshanics/internal/server/httpjson"
	"github.com/meshanics/meshanics/internal/server/store"
)

func (a *API) registerLogRequests(mux *http.ServeMux) {
	a.handle(mux, "GET /api/v1/log-requests/{id}", DevicesRead, a.showLogRequest)
	a.handle(mux, "GET /api/v1/log-requests/{id}/bundle", DevicesRead, a.logBundle)
}

// Log request bounds.
const (
	DefaultLogLines = 1000
	MaxLogLines     = 100000
	// maxLogSince is how far back a request may reach.
	maxLogSince = 30 * 24 * time.Hour
)

type logRequestCreate struct {
	Since    *time.Time `json:"since"`
	MaxLines int        `json:"max_lines"`
}

type logRequestJSON struct {
	ID          string     `json:"id"`
	Device      string     `json:"device"`
	State       string     `json:"state"`
	Detail      string     `json:"detail"`
	Since       time.Time  `json:"since"`
	MaxLines    int        `json:"max_lines"`
	Size        int64      `json:"size"`
	RequestedBy string     `json:"requested_by"`
	CreatedAt   time.Time  `json:"created_at"`
	CompletedAt *time.Time `json:"completed_at"`
}

func toLogRequestJSON(l store.LogRequest) logRequestJSON {
	return logRequestJSON{
		ID: l.ID, Device: l.Device, State: l.State, Detail: l.Detail, Since: l.Since,
		MaxLines: l.MaxLines, Size: l.Size, RequestedBy: l.RequestedBy,
		CreatedAt: l.CreatedAt, CompletedAt: timePtr(l.CompletedAt),
	}
}

// createLogRequest queues a log pull that the device's next heartbeat
// carries (202 {"id"}).
func (a *API) createLogRequest(w http.ResponseWriter, r *http.Request, p Principal) error {
	name, err := deviceName(r)
	if err != nil {
		return err
	}
	var req logRequestCreate
	if err := decodeOptionalJSON(w, r, 4<<10, &req); err != nil {
		return err
	}
	now := a.now()
	since := now.Add(-time.Hour)
	if req.Since != nil {
		since = *req.Since
	}
	if since.After(now) || now.Sub(since) > maxLogSince {
		return errdefs.Invalid("since must be in the past and at most 30 days ago")
	}
	lines := req.MaxLines
	switch {
	case lines == 0:
		lines = DefaultLogLines
	case lines < 0 || lines > MaxLogLines:
		return errdefs.Invalid("max_lines must be between 1 and " + strconv.Itoa(MaxLogLines))
	}
	ctx := r.Context()
	var lr store.LogRequest
	err = a.store.Tx(ctx, func(tx *store.Tx) error {
		var err error
		lr, err = tx.CreateLogRequest(ctx, p.Actor(), name, since, lines) // appends device.log_request
		return err
	})
	if err != nil {
		return fmt.Errorf("create log request: %w", err)
	}
	httpjson.Write(w, http.StatusAccepted, struct {
		ID string `json:"id"`
	}{lr.ID})
	return nil
}

func (a *API) showLogRequest(w http.ResponseWriter, r *http.Request, _ Principal) error {
	id := r.PathValue("id")
	if len(id) > 64 {
		return errdefs.NotFound("log request not found")
	}
	lr, err := a.store.LogRequest(r.Context(), id)
	if err != nil {
		return fmt.Errorf("show log request: %w", err)
	}
	httpjson.Write(w, http.StatusOK, toLogRequestJSON(lr))
	return nil
}

// logBundle answers the gzip bytes the device uploaded; 409 until then.
func (a *API) logBundle(w http.ResponseWriter, r *http.Request, _ Principal) error {
	id := r.PathValue("id")
	if len(id) > 64 {
		return errdefs.NotFound("log request not found")
	}
	b, err := a.store.LogBundle(r.Context(), id)
	if err != nil {
		return fmt.Errorf("log bundle: %w", err)
	}
	w.Header().Set("Content-Type", "application/gzip")
	w.Header().Set("Content-Disposition", `attachment; filename="`+id+`.log.gz"`)
	w.Header().Set("Content-Length", strconv.Itoa(len(b)))
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(b)
	return nil
}
