package rollout

import (
	"context"

	"github.com/meshanics/meshanics/internal/server/deviceapi"
)

// The Runner is the device API's assignment source and status sink.
var (
	_ deviceapi.AssignmentSource = (*Runner)(nil)
	_ deviceapi.StatusSink       = (*Runner)(nil)
)

// Report implements deviceapi.StatusSink (see ReportStatus).
func (r *Runner) Report(ctx context.Context, device string, rep deviceapi.StatusReport) error {
	return r.ReportStatus(ctx, device, Status{AssignmentID: rep.AssignmentID, State: rep.State, Detail: rep.Detail})
}
