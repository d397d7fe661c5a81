package operatorapi

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/meshanics/meshanics/internal/errdefs"
	"github.com/meshanics/meshanics/internal/names"
	"github.com/meshanics/meshanics/internal/server/httpjson"
	"github.com/meshanics/meshanics/internal/server/store"
	"github.com/meshanics/meshanics/internal/states"
)

func (a *API) registerDevices(mux *http.ServeMux) {
	a.handle(mux, "GET /api/v1/devices", DevicesRead, a.listDevices)
	a.handle(mux, "GET /api/v1/devices/{name}", DevicesRead, a.showDevice)
	a.handle(mux, "POST /api/v1/devices/{name}/decommission", DevicesWrite, a.decommissionDevice)
	a.handle(mux, "POST /api/v1/devices/{name}/log-requests", DevicesWrite, a.createLogRequest)
}

// deviceJSON is the REST shape of a device.
type deviceJSON struct {
	Name                 string            `json:"name"`
	Status               string            `json:"status"` // online | offline | decommissioned
	Fleet                string            `json:"fleet"`
	AgentVersion         string            `json:"agent_version"`
	Tags                 map[string]string `json:"tags"`
	LastSeen             *time.Time        `json:"last_seen"`
	Hardware             json.RawMessage   `json:"hardware"`
	Installed            json.RawMessage   `json:"installed"`
	HeartbeatInterval    float64           `json:"heartbeat_interval_seconds"`
	EnrolledAt           time.Time         `json:"enrolled_at"`
	CertificateExpiresAt time.Time         `json:"certificate_expires_at"`
	DecommissionedAt     *time.Time        `json:"decommissioned_at"`
}

// toDeviceJSON renders d with its presence: the in-memory last heartbeat
// of this replica when newer than the stored (batch-flushed) one.
func (a *API) toDeviceJSON(d store.Device, now time.Time) deviceJSON {
	if a.presence != nil {
		if t, ok := a.presence.LastSeen(d.Name); ok && t.After(d.LastSeen) {
			d.LastSeen = t
		}
	}
	if d.HeartbeatInterval <= 0 {
		d.HeartbeatInterval = a.hbInterval
	}
	tags := d.Tags
	if tags == nil {
		tags = map[string]string{}
	}
	return deviceJSON{
		Name:                 d.Name,
		Status:               d.Presence(now),
		Fleet:                d.Fleet,
		AgentVersion:         d.AgentVersion,
		Tags:                 tags,
		LastSeen:             timePtr(d.LastSeen),
		Hardware:             rawOr(d.Hardware, "{}"),
		Installed:            rawOr(d.Installed, "[]"),
		HeartbeatInterval:    d.HeartbeatInterval.Seconds(),
		EnrolledAt:           d.CreatedAt,
		CertificateExpiresAt: d.CertNotAfter,
		DecommissionedAt:     timePtr(d.DecommissionedAt),
	}
}

func rawOr(b json.RawMessage, def string) json.RawMessage {
	if len(b) == 0 || !json.Valid(b) {
		return json.RawMessage(def)
	}
	return b
}

// maxTagFilters bounds the tag filters of one list request.
const maxTagFilters = 16

func (a *API) listDevices(w http.ResponseWriter, r *http.Request, _ Principal) error {
	p, err := parsePage(r)
	if err != nil {
		return err
	}
	q := r.URL.Query()
	f := store.DeviceFilter{Now: a.now()}
	switch s := q.Get("status"); s {
	case "", states.Online, states.Offline, states.Decommissioned:
		f.Status = s
	default:
		return errdefs.Invalid("status must be online, offline or decommissioned")
	}
	if tags := q["tag"]; len(tags) > 0 {
		if len(tags) > maxTagFilters {
			return errdefs.Invalid(fmt.Sprintf("at most %d tag filters", maxTagFilters))
		}
		f.Tags = make(map[string]string, len(tags))
		for _, t := range tags {
			k, v, ok := strings.Cut(t, "=")
			if !ok || k == "" || len(t) > 256 {
				return errdefs.Invalid("tag filter must be key=value")
			}
			f.Tags[k] = v
		}
	}
	devs, total, err := a.store.ListDevices(r.Context(), f, store.Page{Limit: p.Limit, Offset: p.Offset})
	if err != nil {
		return fmt.Errorf("list devices: %w", err)
	}
	items := make([]deviceJSON, 0, len(devs))
	for _, d := range devs {
		dj := a.toDeviceJSON(d, f.Now)
		// The store filters by the flushed last_seen; this replica's
		// in-memory heartbeats are fresher by a few seconds. Never show an
		// item that contradicts the filter asked for.
		if f.Status != "" && dj.Status != f.Status {
			total-- // nor count it
			continue
		}
		items = append(items, dj)
	}
	httpjson.Write(w, http.StatusOK, newList(items, total, p))
	return nil
}

// deviceName reads and validates the {name} path value; a malformed name
// cannot exist, so it is a 404.
func deviceName(r *http.Request) (string, error) {
	name := r.PathValue("name")
	if names.ValidateDevice(name) != nil {
		return "", errdefs.NotFound("device not found")
	}
	return name, nil
}

func (a *API) showDevice(w http.ResponseWriter, r *http.Request, _ Principal) error {
	name, err := deviceName(r)
	if err != nil {
		return err
	}
	d, err := a.store.DeviceByName(r.Context(), name)
	if err != nil {
		return fmt.Errorf("show device: %w", err)
	}
	httpjson.Write(w, http.StatusOK, a.toDeviceJSON(d, a.now()))
	return nil
}

// decommissionDevice revokes the device's identity and tells this
// replica's device API at once; other replicas learn it from their change
// poll.
func (a *API) decommissionDevice(w http.ResponseWriter, r *http.Request, p Principal) error {
	name, err := deviceName(r)
	if err != nil {
		return err
	}
	if _, err := decodeOptionalBody(w, r); err != nil {
		return err
	}
	ctx := r.Context()
	var d store.Device
	err = a.store.Tx(ctx, func(tx *store.Tx) error {
		var err error
		d, err = tx.DecommissionDevice(ctx, p.Actor(), name) // appends device.decommission
		return err
	})
	if err != nil {
		return fmt.Errorf("decommission device: %w", err)
	}
	if a.invalidate != nil {
		a.invalidate(name)
	}
	httpjson.Write(w, http.StatusOK, a.toDeviceJSON(d, a.now()))
	return nil
}
