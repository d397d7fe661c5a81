package deviceapi

import (
	"time"

	"github.com/meshanics/meshanics/internal/states"
)

// StatusReport is a validated ReportArtifactStatus call.
type StatusReport struct {
	AssignmentID string
	State        states.Device
	Detail       string
	// StartedAt and ReportedAt are the device's clock (informational,
	// zero when not sent); ReceivedAt is the server's.
	StartedAt  time.Time
	ReportedAt time.Time
	ReceivedAt time.Time
}
