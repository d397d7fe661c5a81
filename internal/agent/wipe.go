package agent

import (
	"context"
	"os"
	"path/filepath"

	"github.com/meshanics/meshanics/internal/agent/decommission"
	"github.com/meshanics/meshanics/internal/agent/enroll"
)

// keepInDataDir are the data-dir entries decommission leaves: the running
// payloads (SPEC §4.5: "Running payloads are left as they are").
var keepInDataDir = map[string]bool{"artifacts": true}

// wipeSteps lists what decommission removes: the key first (it is what
// makes the device able to act), then certificate, CA, trust anchor, the
// runtime trust dirs enrollment recorded, and the data dir's metadata and
// update state.
func (a *Agent) wipeSteps() []decommission.Step {
	c := a.cfg
	steps := []decommission.Step{
		{What: "device key", Path: c.KeyFile, Scrub: true},
		{What: "device certificate", Path: c.CertFile},
		{What: "CA bundle", Path: c.CAFile},
	}
	if c.TUFRoot != "" {
		steps = append(steps, decommission.Step{What: "trust anchor", Path: c.TUFRoot})
	} else {
		// Enrollment may have written one even without OTA configured.
		steps = append(steps, decommission.Step{What: "trust anchor", Path: filepath.Join(c.ConfigDir(), enroll.RootFile)})
	}
	rec, err := enroll.ReadTrustRecord(c.ConfigDir())
	if err != nil {
		a.log.Error("read the trust-dir record; runtime trust dirs may remain", "err", err)
	}
	for _, d := range rec.Dirs {
		steps = append(steps, decommission.Step{What: "runtime trust dir", Path: d})
	}
	steps = append(steps, decommission.Step{What: "trust-dir record", Path: filepath.Join(c.ConfigDir(), enroll.TrustRecordFile)})
	entries, err := os.ReadDir(c.DataDir)
	if err != nil && !os.IsNotExist(err) {
		a.log.Error("list the data dir; update state may remain", "err", err)
	}
	for _, e := range entries {
		if !keepInDataDir[e.Name()] {
			steps = append(steps, decommission.Step{What: "update state and metadata", Path: filepath.Join(c.DataDir, e.Name())})
		}
	}
	return steps
}

// decommission wipes and logs; it always returns promptly.
func (a *Agent) decommission() {
	log := a.log.With("phase", "decommission")
	res := decommission.Wipe(context.Background(), log, a.wipeSteps(), a.d.WipeStepTimeout)
	if len(res.Failed) > 0 {
		log.Error("decommissioned with leftovers; remove them by hand", "leftovers", res.Failed)
		return
	}
	log.Warn("decommissioned: identity wiped; the agent stops for good (exit 77)", "removed", len(res.Removed))
}

// refreshTrustDirs copies a renewed certificate into the runtime trust dirs.
func (a *Agent) refreshTrustDirs(certPEM []byte) {
	if err := enroll.RefreshTrustDirs(a.cfg.ConfigDir(), certPEM); err != nil {
		a.log.Warn("refresh runtime trust dirs", "err", err)
	}
}
