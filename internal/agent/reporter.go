package agent

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"time"

	"github.com/meshanics/meshanics/internal/states"
	devicev1 "github.com/meshanics/meshanics/proto/meshanics/device/v1"
)

// Reporter sends assignment progress with ReportArtifactStatus over the
// agent's current connection; the agent hands it to Deps.NewReconciler.
// Safe for concurrent use.
type Reporter struct {
	log *slog.Logger
	now func() time.Time

	mu     sync.Mutex // guards client and started
	client func() devicev1.DeviceServiceClient
	// started remembers when each assignment was first reported, for
	// started_unix_ms; bounded by maxStarted.
	started map[string]time.Time
}

const maxStarted = 1024

// ErrNotConnected is returned by Report before the agent has connected.
var ErrNotConnected = errors.New("report: agent not connected")

func newReporter(log *slog.Logger, now func() time.Time) *Reporter {
	return &Reporter{log: log.With("component", "report"), now: now, started: map[string]time.Time{}}
}

func (r *Reporter) bind(client func() devicev1.DeviceServiceClient) {
	r.mu.Lock()
	r.client = client
	r.mu.Unlock()
}

// Report sends one state of one assignment (state is a SPEC §7 device
// state the agent may report).
func (r *Reporter) Report(ctx context.Context, assignmentID, state, detail string) error {
	if s, ok := states.ParseDevice(state); !ok || !s.Reportable() {
		return errors.New("report: not a reportable state: " + state)
	}
	now := r.now()
	r.mu.Lock()
	clientFn := r.client
	started, ok := r.started[assignmentID]
	if !ok {
		if len(r.started) >= maxStarted {
			clear(r.started)
		}
		started = now
		r.started[assignmentID] = now
	}
	r.mu.Unlock()
	if clientFn == nil {
		return ErrNotConnected
	}
	if len(detail) > 1024 {
		detail = detail[:1024]
	}
	ctx, cancel := context.WithTimeout(ctx, rpcTimeout)
	defer cancel()
	_, err := clientFn().ReportArtifactStatus(ctx, &devicev1.ReportArtifactStatusRequest{
		AssignmentId: assignmentID, State: state, Detail: detail,
		StartedUnixMs: started.UnixMilli(), ReportedUnixMs: now.UnixMilli(),
	})
	if err != nil {
		return err
	}
	r.log.Debug("reported", "assignment", assignmentID, "state", state, "detail", detail)
	return nil
}
