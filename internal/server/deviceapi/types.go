package deviceapi

import (
	"encoding/json"
	"time"

	"github.com/meshanics/meshanics/internal/states"
)

// CertState is what a presented certificate means for its device name.
type CertState int

const (
	// CertUnknown: no device life of this name holds the serial.
	CertUnknown CertState = iota
	// CertCurrent: the serial is the current certificate of the active
	// device of this name.
	CertCurrent
	// CertRevoked: the serial belonged to this name but was superseded
	// (renewed, re-enrolled, replaced). Not a decommission.
	CertRevoked
	// CertDecommissioned: the serial belonged to a device life that was
	// decommissioned. Every RPC gets the decommission signal.
	CertDecommissioned
)

func (c CertState) String() string {
	switch c {
	case CertCurrent:
		return "current"
	case CertRevoked:
		return "revoked"
	case CertDecommissioned:
		return "decommissioned"
	}
	return "unknown"
}

// CertAuth is the store's verdict on one (name, serial).
type CertAuth struct {
	State CertState
}

// Registration is what Register refreshes on the device record. JSON fields
// are validated and bounded here before they reach the store.
type Registration struct {
	// Hardware is the SPEC §4.2 JSON object {"model","soc","arch",…}.
	Hardware json.RawMessage
	// AgentVersion is the agent's version string.
	AgentVersion string
	// Tags are the tags the agent declares (-tag); nil = none.
	Tags map[string]string
	// Installed is a JSON array of {"kind","name","version","sha256","previous_version"}.
	Installed json.RawMessage
	// Now is when the server handled the call (also last_seen).
	Now time.Time
}

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

// PendingLog is a log request not yet fulfilled (SPEC §4.5).
type PendingLog struct {
	ID       string
	Device   string
	Since    time.Time // zero = no lower bound
	MaxLines int
}
