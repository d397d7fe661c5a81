package deviceapi

import (
	"context"
	"crypto/ecdsa"
	"fmt"
	"time"

	"github.com/meshanics/meshanics/internal/errdefs"
	"github.com/meshanics/meshanics/internal/server/ca"
	"github.com/meshanics/meshanics/internal/server/store"
	"github.com/meshanics/meshanics/internal/states"
	devicev1 "github.com/meshanics/meshanics/proto/meshanics/device/v1"
)

// handlers implements devicev1.DeviceServiceServer. It is a separate type
// so that the RPCs are not part of *Server's API (and Server.Register can
// keep its conventional meaning).
type handlers struct {
	devicev1.UnimplementedDeviceServiceServer
	*Server
}

// Every handler takes the device from callerOf (set by the interceptor from
// the verified certificate). No request message has a field that names a
// device, and none is consulted.

// Register implements DeviceService.Register.
func (s handlers) Register(ctx context.Context, req *devicev1.RegisterRequest) (*devicev1.RegisterResponse, error) {
	dev, err := callerOf(ctx)
	if err != nil {
		return nil, err
	}
	hw, err := hardwareFromProto(req.GetHardware())
	if err != nil {
		return nil, err
	}
	if !printable(req.GetAgentVersion(), maxAgentVersion) {
		return nil, errdefs.Invalid(fmt.Sprintf("agent_version must be printable UTF-8 of at most %d bytes", maxAgentVersion))
	}
	if err := validateTags(req.GetTags()); err != nil {
		return nil, err
	}
	if err := validateInstalled(req.GetInstalled()); err != nil {
		return nil, err
	}
	installed, err := installedToJSON(req.GetInstalled())
	if err != nil {
		return nil, err
	}
	now := s.now()
	err = s.devices.RegisterDevice(ctx, dev.Name, store.Registration{
		Hardware:     hw,
		AgentVersion: req.GetAgentVersion(),
		Tags:         req.GetTags(),
		Installed:    installed,
		Now:          now,
	})
	if err != nil {
		return nil, fmt.Errorf("register %s: %w", dev.Name, err)
	}
	s.installedSeen.set(dev.Name, installedDigest(req.GetInstalled()))
	s.presence.Seen(dev.Name, now)
	return &devicev1.RegisterResponse{
		Name:                dev.Name,
		Fleet:               s.fleet,
		HeartbeatIntervalMs: s.interval.current().Milliseconds(),
	}, nil
}

// Heartbeat implements DeviceService.Heartbeat. In the steady state it
// touches memory only: presence, the auth cache, the polled log requests,
// and the rollout engine's assignment source.
func (s handlers) Heartbeat(ctx context.Context, req *devicev1.HeartbeatRequest) (*devicev1.HeartbeatResponse, error) {
	dev, err := callerOf(ctx)
	if err != nil {
		return nil, err
	}
	if err := validateInstalled(req.GetInstalled()); err != nil {
		return nil, err
	}
	now := s.now()
	s.presence.Seen(dev.Name, now)
	s.metrics.heartbeats.Inc()
	s.syncInstalled(ctx, dev.Name, req.GetInstalled())
	resp := &devicev1.HeartbeatResponse{HeartbeatIntervalMs: s.interval.current().Milliseconds()}
	if s.assignments != nil {
		as, err := s.assignments.Assignments(ctx, dev.Name, req.GetInstalled(), now)
		if err != nil {
			return nil, fmt.Errorf("assignments of %s: %w", dev.Name, err)
		}
		resp.Assignments = as
	}
	for _, lr := range s.pending.forDevice(dev.Name) {
		var since int64
		if !lr.Since.IsZero() {
			since = lr.Since.Unix()
		}
		resp.LogRequests = append(resp.LogRequests, &devicev1.LogRequest{
			RequestId: lr.ID,
			SinceUnix: since,
			MaxLines:  uint32(max(0, min(lr.MaxLines, 1<<31))),
		})
	}
	return resp, nil
}

// ReportArtifactStatus implements DeviceService.ReportArtifactStatus.
func (s handlers) ReportArtifactStatus(ctx context.Context, req *devicev1.ReportArtifactStatusRequest) (*devicev1.ReportArtifactStatusResponse, error) {
	dev, err := callerOf(ctx)
	if err != nil {
		return nil, err
	}
	r, err := validateReport(req, s.now())
	if err != nil {
		return nil, err
	}
	if s.statusSink == nil {
		return nil, errdefs.NotFound("unknown assignment")
	}
	if err := s.statusSink.Report(ctx, dev.Name, r); err != nil {
		return nil, fmt.Errorf("report of %s on %s: %w", dev.Name, r.AssignmentID, err)
	}
	return &devicev1.ReportArtifactStatusResponse{}, nil
}

func validateReport(req *devicev1.ReportArtifactStatusRequest, now time.Time) (StatusReport, error) {
	if !idRE.MatchString(req.GetAssignmentId()) {
		return StatusReport{}, errdefs.Invalid(fmt.Sprintf("assignment_id must be 1-%d characters of [A-Za-z0-9._:-]", maxIDBytes))
	}
	st, ok := states.ParseDevice(req.GetState())
	if !ok || !st.Reportable() {
		return StatusReport{}, errdefs.Invalid("state must be one of downloading, verifying, applying, healthy, rolled_back, failed, reverting, reverted, revert_failed")
	}
	if len(req.GetDetail()) > MaxDetailBytes || !printableMultiline(req.GetDetail()) {
		return StatusReport{}, errdefs.Invalid(fmt.Sprintf("detail must be UTF-8 text of at most %d bytes", MaxDetailBytes))
	}
	if req.GetStartedUnixMs() < 0 || req.GetReportedUnixMs() < 0 {
		return StatusReport{}, errdefs.Invalid("timestamps must not be negative")
	}
	return StatusReport{
		AssignmentID: req.GetAssignmentId(),
		State:        st,
		Detail:       req.GetDetail(),
		StartedAt:    msTime(req.GetStartedUnixMs()),
		ReportedAt:   msTime(req.GetReportedUnixMs()),
		ReceivedAt:   now,
	}, nil
}

// printableMultiline is printable but allows newlines and tabs (error text).
func printableMultiline(s string) bool {
	for _, r := range s {
		if r == '\n' || r == '\t' {
			continue
		}
		if r < 0x20 || r == 0x7f || r == 0xfffd {
			return false
		}
	}
	return true
}

func msTime(v int64) time.Time {
	if v == 0 {
		return time.Time{}
	}
	return time.UnixMilli(v).UTC()
}

// RenewCertificate implements DeviceService.RenewCertificate: a CSR for the
// key of the presented certificate, and only that key, gets a new
// certificate. An expired certificate never gets here (the TLS handshake
// refuses it): such a device is re-enrolled.
func (s handlers) RenewCertificate(ctx context.Context, req *devicev1.RenewCertificateRequest) (*devicev1.RenewCertificateResponse, error) {
	dev, err := callerOf(ctx)
	if err != nil {
		return nil, err
	}
	pub, err := ca.ParseCSR([]byte(req.GetCsrPem()))
	if err != nil {
		return nil, err
	}
	cur, ok := dev.Cert.PublicKey.(*ecdsa.PublicKey)
	if !ok || !cur.Equal(pub) {
		return nil, &kindMsg{kind: errdefs.ErrPermission, msg: "renewal needs a CSR for the key of the presented certificate"}
	}
	if s.renewer == nil {
		return nil, fmt.Errorf("%w: renewal is not configured", errdefs.ErrUnavailable)
	}
	certPEM, err := s.renewer.RenewDevice(ctx, dev.Name, dev.Serial, pub)
	// The old certificate is no longer current, whatever the outcome.
	s.cache.invalidate(dev.Name)
	if err != nil {
		return nil, fmt.Errorf("renew certificate of %s: %w", dev.Name, err)
	}
	return &devicev1.RenewCertificateResponse{CertificatePem: string(certPEM)}, nil
}
