package agent

import (
	"errors"

	"github.com/meshanics/meshanics/internal/agent/config"
)

// ExitCode maps Run's result to the process exit status (SPEC §4.5).
func ExitCode(err error) int {
	switch {
	case err == nil:
		return ExitOK
	case errors.Is(err, ErrDecommissioned):
		return ExitDecommissioned
	case config.IsError(err):
		return ExitConfig
	default:
		return ExitFailure
	}
}
