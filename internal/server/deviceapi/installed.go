package deviceapi

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"sync"

	devicev1 "github.com/meshanics/meshanics/proto/meshanics/device/v1"
)

// InstalledSink stores what a device reports it runs (*store.DB). Optional:
// without it only Register records the installed list.
type InstalledSink interface {
	// SetInstalled stores installed for device when it differs from the
	// record (a read first: an unchanged list costs no write) and appends
	// the audit event with it. It reports whether anything changed.
	SetInstalled(ctx context.Context, device string, installed json.RawMessage) (bool, error)
}

// installedSeen remembers, per device, a digest of the installed list this
// replica last stored or found stored, so a heartbeat that reports the same
// list touches memory only; a changed list (an apply or a rollback finished)
// is written once. Entries of devices changed elsewhere are dropped (change
// poll, Invalidate), so a stale entry never hides a change. Safe for
// concurrent use.
type installedSeen struct {
	mu     sync.Mutex
	digest map[string][32]byte // by device name
}

func newInstalledSeen() *installedSeen {
	return &installedSeen{digest: make(map[string][32]byte)}
}

// same reports whether d is the digest remembered for device.
func (s *installedSeen) same(device string, d [32]byte) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	got, ok := s.digest[device]
	return ok && got == d
}

func (s *installedSeen) set(device string, d [32]byte) {
	s.mu.Lock()
	s.digest[device] = d
	s.mu.Unlock()
}

func (s *installedSeen) forget(names ...string) {
	s.mu.Lock()
	for _, n := range names {
		delete(s.digest, n)
	}
	s.mu.Unlock()
}

func (s *installedSeen) clear() {
	s.mu.Lock()
	clear(s.digest)
	s.mu.Unlock()
}

// installedDigest hashes a (validated) installed list without building its
// JSON: it runs on every heartbeat.
func installedDigest(in []*devicev1.InstalledArtifact) [32]byte {
	h := sha256.New()
	for _, a := range in {
		for _, f := range []string{a.GetKind(), a.GetName(), a.GetVersion(), a.GetSha256(), a.GetPreviousVersion()} {
			h.Write([]byte(f))
			h.Write([]byte{0})
		}
		h.Write([]byte{1})
	}
	var d [32]byte
	h.Sum(d[:0])
	return d
}

// syncInstalled records a heartbeat's installed list when it differs from
// what this replica knows is stored. A failure does not fail the
// heartbeat (liveness must not depend on it): it is logged and retried on
// the next one. The write is charged to the device's write budget, so a
// device flipping its list cannot turn heartbeats into a write flood.
func (s *Server) syncInstalled(ctx context.Context, device string, in []*devicev1.InstalledArtifact) {
	if s.installedSink == nil {
		return
	}
	d := installedDigest(in)
	if s.installedSeen.same(device, d) {
		return
	}
	if !s.writes.allow(device, s.now()) {
		return // retried on a later heartbeat
	}
	raw, err := installedToJSON(in)
	if err == nil {
		_, err = s.installedSink.SetInstalled(ctx, device, raw)
	}
	if err != nil {
		s.log.Warn("record installed artifacts", "device", device, "err", err)
		return
	}
	s.installedSeen.set(device, d)
}
