// Package deploy embeds the files shipped to devices: the enrollment
// installer (install.sh) and the hardened systemd unit. The server serves the
// installer at /install.sh with the fleet CA and the unit filled in, so a
// device needs nothing but the pinned install command. Imported by the
// server composition root and tests.
package deploy

import (
	"bytes"
	_ "embed"
	"errors"
	"regexp"
)

//go:embed install.sh
var installScript []byte

//go:embed systemd/meshanics-agent.service
var agentUnit []byte

const (
	caPlaceholder   = "@@MESHANICS_CA_PEM@@"
	unitPlaceholder = "@@MESHANICS_AGENT_UNIT@@"
)

// pemRE admits exactly one PEM certificate: nothing that could end the
// single-quoted shell string it is placed into.
var pemRE = regexp.MustCompile(`^-----BEGIN CERTIFICATE-----\n[A-Za-z0-9+/=\n]+-----END CERTIFICATE-----\n?$`)

// RawInstallScript is deploy/install.sh as shipped, with placeholders.
func RawInstallScript() []byte { return bytes.Clone(installScript) }

// AgentUnit is deploy/systemd/meshanics-agent.service.
func AgentUnit() []byte { return bytes.Clone(agentUnit) }

// InstallScript returns the installer with the fleet CA (PEM) and the unit
// filled in.
func InstallScript(caPEM []byte) ([]byte, error) {
	if !pemRE.Match(caPEM) {
		return nil, errors.New("install script: the CA must be one PEM certificate")
	}
	if bytes.Contains(agentUnit, []byte("MESHANICS_AGENT_UNIT_EOF")) {
		return nil, errors.New("install script: unit contains the heredoc terminator")
	}
	out := bytes.Replace(installScript, []byte(caPlaceholder), bytes.TrimRight(caPEM, "\n"), 1)
	out = bytes.Replace(out, []byte(unitPlaceholder), bytes.TrimRight(agentUnit, "\n"), 1)
	return out, nil
}
