// Package deviceapi serves meshanics.device.v1.DeviceService (SPEC §3) on the
// device listener over mutual TLS. It is the one place where a device's
// identity is established for an RPC (from the verified client certificate
// only, through the CA) and the one place errors become gRPC codes.
//
// Liveness is kept in memory (package presence) and flushed in batches, and
// the device records every RPC needs are cached, so a steady-state heartbeat
// costs neither a database read nor a write. See docs/device-api.md.
//
// Only the server composition root imports this package. A *Server is safe
// for concurrent use.
package deviceapi

import (
	"context"
	"crypto/ecdsa"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"

	"github.com/meshanics/meshanics/internal/server/ca"
	"github.com/meshanics/meshanics/internal/server/presence"
	"github.com/meshanics/meshanics/internal/server/store"
	devicev1 "github.com/meshanics/meshanics/proto/meshanics/device/v1"
)

// Identifier turns the state of a verified TLS connection into a device
// identity. *ca.Authority implements it.
type Identifier interface {
	PeerIdentity(cs *tls.ConnectionState) (ca.Identity, error)
}

// Devices is the part of the store the device API reads and writes
// (*store.DB).
type Devices interface {
	// CertAuth reports what the certificate with serial (lower-case hex)
	// means for device name: current, revoked, or belonging to a
	// decommissioned device life. An unknown serial is CertUnknown, not an
	// error.
	CertAuth(ctx context.Context, name, serial string) (store.CertState, error)
	// RegisterDevice refreshes the device record of name from a Register
	// call and appends the audit event, in one transaction.
	RegisterDevice(ctx context.Context, name string, reg store.Registration) error
	// InstalledSink records a heartbeat's installed list when it changed
	// since Register (an apply or rollback finished).
	InstalledSink
	// SetHeartbeatInterval records the base interval this server hands
	// out (no names = every active device), so that offline detection
	// (3 × the recorded interval) follows a changed -heartbeat-interval.
	SetHeartbeatInterval(ctx context.Context, interval time.Duration, names ...string) error
	presence.Sink
}

// AssignmentSource is the rollout engine's side of a heartbeat: the desired
// state of one device. It is called on every heartbeat, so it must answer
// from memory in the steady state.
type AssignmentSource interface {
	Assignments(ctx context.Context, device string, installed []*devicev1.InstalledArtifact, now time.Time) ([]*devicev1.Assignment, error)
}

// StatusSink receives validated ReportArtifactStatus calls (rollout engine).
// An assignment id the device was not given is errdefs.ErrNotFound.
type StatusSink interface {
	Report(ctx context.Context, device string, r StatusReport) error
}

// LogRequests is the part of the store that holds log requests (*store.DB).
type LogRequests interface {
	// PendingLogRequests returns up to limit log requests not yet fulfilled,
	// of every device (the device API polls it; it is usually empty).
	PendingLogRequests(ctx context.Context, limit int) ([]store.PendingLog, error)
	// CompleteLogRequest stores the gzip bundle of request id, which must
	// belong to device and still be pending (errdefs.ErrNotFound if it is
	// not this device's, errdefs.ErrConflict if it is done already).
	CompleteLogRequest(ctx context.Context, device, id string, gz []byte) error
}

// Renewer issues a fresh certificate for device name over the same key
// (pub), presented with the certificate oldSerial, and records it with its
// audit event in one transaction (the enrollment service). It returns the
// PEM certificate.
type Renewer interface {
	RenewDevice(ctx context.Context, name, oldSerial string, pub *ecdsa.PublicKey) ([]byte, error)
}

// Changes reports devices whose records changed since a time, so replicas
// sharing one PostgreSQL drop stale cache entries quickly (*store.DB).
// Optional.
type Changes interface {
	DevicesChangedSince(ctx context.Context, since time.Time) ([]string, error)
}

// The store provides all three.
var (
	_ Devices     = (*store.DB)(nil)
	_ LogRequests = (*store.DB)(nil)
	_ Changes     = (*store.DB)(nil)
)

// Config holds every dependency explicitly. Identity, Devices, Logs, Log,
// Fleet and HeartbeatInterval are required.
type Config struct {
	Fleet    string
	Identity Identifier
	Devices  Devices
	Logs     LogRequests
	Renewer  Renewer // nil: RenewCertificate answers UNAVAILABLE
	// Assignments and Status come from the rollout engine; nil means no
	// assignments are served and every status report is NOT_FOUND.
	Assignments AssignmentSource
	Status      StatusSink
	Changes     Changes // nil: cache entries live for CacheTTL (wire it: see docs/device-api.md)

	Log      *slog.Logger
	Registry prometheus.Registerer // nil: metrics are not registered
	Now      func() time.Time      // nil: time.Now

	// HeartbeatInterval is the base interval handed to devices (30 s).
	HeartbeatInterval time.Duration
	// HeartbeatBudget is the heartbeats per second this replica aims to
	// stay under by widening the interval: interval = max(base,
	// online/budget), capped by WidenCap. 0 disables widening.
	HeartbeatBudget float64
	// FlushInterval is how often last_seen reaches the store (5 s).
	FlushInterval time.Duration
	// CacheTTL bounds how long a cached certificate verdict is trusted
	// when no healthy change poll vouches for it (default DefaultCacheTTL).
	// With a healthy change poll entries live up to 30 minutes.
	CacheTTL time.Duration
	// PollInterval is how often pending log requests and device changes
	// are polled (default 2 s).
	PollInterval time.Duration
}

// Defaults.
const (
	DefaultCacheTTL     = 60 * time.Second
	DefaultPollInterval = 2 * time.Second
)

// Server is the device API of one replica.
type Server struct {
	fleet       string
	ident       Identifier
	devices     Devices
	logs        LogRequests
	renewer     Renewer
	assignments AssignmentSource
	statusSink  StatusSink
	changes     Changes
	log         *slog.Logger
	now         func() time.Time
	poll        time.Duration

	presence *presence.Tracker
	cache    *authCache
	pending  *pendingLogs
	interval *intervalPolicy
	writes   *writeLimiter
	metrics  *metrics
	// conns counts the device connections open on the listener Serve
	// was given (the adaptive interval counts them as online).
	conns atomic.Int64

	installedSink InstalledSink
	installedSeen *installedSeen
}

// New checks cfg and builds the server. Nothing runs until Run or Serve.
func New(cfg Config) (*Server, error) {
	switch {
	case cfg.Fleet == "":
		return nil, errors.New("deviceapi: fleet is required")
	case cfg.Identity == nil:
		return nil, errors.New("deviceapi: identity (CA) is required")
	case cfg.Devices == nil:
		return nil, errors.New("deviceapi: device store is required")
	case cfg.Logs == nil:
		return nil, errors.New("deviceapi: log request store is required")
	case cfg.Log == nil:
		return nil, errors.New("deviceapi: logger is required")
	case cfg.HeartbeatInterval <= 0:
		return nil, errors.New("deviceapi: heartbeat interval must be positive")
	case cfg.HeartbeatBudget < 0:
		return nil, errors.New("deviceapi: heartbeat budget must not be negative")
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.CacheTTL <= 0 {
		cfg.CacheTTL = DefaultCacheTTL
	}
	if cfg.PollInterval <= 0 {
		cfg.PollInterval = DefaultPollInterval
	}
	if cfg.FlushInterval <= 0 {
		cfg.FlushInterval = presence.DefaultFlushInterval
	}
	if cfg.FlushInterval >= cfg.HeartbeatInterval {
		return nil, errors.New("deviceapi: the last_seen flush interval must be shorter than the heartbeat interval")
	}
	log := cfg.Log.With("component", "deviceapi")
	tracker, err := presence.New(presence.Config{Sink: cfg.Devices, Log: cfg.Log, FlushInterval: cfg.FlushInterval})
	if err != nil {
		return nil, err
	}
	s := &Server{
		fleet:         cfg.Fleet,
		ident:         cfg.Identity,
		devices:       cfg.Devices,
		logs:          cfg.Logs,
		renewer:       cfg.Renewer,
		assignments:   cfg.Assignments,
		statusSink:    cfg.Status,
		changes:       cfg.Changes,
		log:           log,
		now:           cfg.Now,
		poll:          cfg.PollInterval,
		presence:      tracker,
		cache:         newAuthCache(cfg.Devices, cfg.CacheTTL, feedGraceFactor*cfg.PollInterval),
		pending:       newPendingLogs(),
		writes:        newWriteLimiter(writeBurst, writeRate),
		installedSink: cfg.Devices,
		installedSeen: newInstalledSeen(),
		interval:      newIntervalPolicy(cfg.HeartbeatInterval, cfg.HeartbeatBudget, WidenCap(cfg.HeartbeatInterval, cfg.FlushInterval)),
	}
	s.metrics = newMetrics(s)
	if cfg.Registry != nil {
		if err := s.metrics.register(cfg.Registry); err != nil {
			return nil, fmt.Errorf("deviceapi: register metrics: %w", err)
		}
	}
	return s, nil
}

// Invalidate drops everything cached about device, so a change the operator
// API just committed (decommission, replacement) applies to the very next
// RPC on this replica. The operator API calls it after its transaction.
func (s *Server) Invalidate(device string) {
	s.cache.invalidate(device)
	s.installedSeen.forget(device)
}

// HeartbeatInterval is the interval currently handed to devices.
func (s *Server) HeartbeatInterval() time.Duration { return s.interval.current() }

// OnlineDevices counts devices that heartbeated this replica within 3× the
// current interval (SPEC §3).
func (s *Server) OnlineDevices() int {
	return s.presence.Online(s.now(), 3*s.interval.current())
}

// Run runs the background work (last_seen flushes, polls of log requests
// and device changes, interval adaptation) until ctx ends, then flushes
// last_seen once more.
func (s *Server) Run(ctx context.Context) error {
	// Devices enrolled under another -heartbeat-interval carry that one in
	// their records; without this, raising the interval would show them
	// offline between heartbeats. A failure is not fatal: enrollments
	// record the current interval anyway.
	// One statement, done even when shutdown comes at once.
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), storeReadTimeout)
	err := s.devices.SetHeartbeatInterval(sctx, s.interval.base)
	cancel()
	if err != nil {
		s.log.Warn("record the heartbeat interval on device records", "err", err)
	}
	g, ctx := errgroup.WithContext(ctx)
	g.Go(func() error { return s.presence.Run(ctx) })
	g.Go(func() error { return s.pollLoop(ctx) })
	return g.Wait()
}

// Serve builds the gRPC server with tlsConf, serves it on lis and runs the
// background work until ctx ends; then it stops gracefully (bounded) and
// flushes last_seen.
func (s *Server) Serve(ctx context.Context, lis net.Listener, tlsConf *tls.Config) error {
	gs, err := s.GRPCServer(tlsConf)
	if err != nil {
		return err
	}
	runCtx, cancelRun := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelRun()
	runDone := make(chan error, 1)
	go func() { runDone <- s.Run(runCtx) }()

	serveDone := make(chan error, 1)
	go func() { serveDone <- gs.Serve(countingListener{Listener: lis, open: &s.conns}) }()
	var serveErr error
	select {
	case <-ctx.Done():
		stopGracefully(gs, 10*time.Second)
		<-serveDone
	case serveErr = <-serveDone:
	}
	cancelRun() // final flush happens after the last RPC is done
	if err := <-runDone; err != nil {
		return errors.Join(serveErr, err)
	}
	if serveErr != nil && !errors.Is(serveErr, grpc.ErrServerStopped) {
		return fmt.Errorf("serve device API: %w", serveErr)
	}
	return nil
}

func stopGracefully(gs *grpc.Server, within time.Duration) {
	done := make(chan struct{})
	go func() { gs.GracefulStop(); close(done) }()
	t := time.NewTimer(within)
	defer t.Stop()
	select {
	case <-done:
	case <-t.C:
		gs.Stop()
		<-done
	}
}

// LastSeen reports the last heartbeat this replica saw from device, ahead of
// the batched flush to the store; the operator API uses it for presence.
func (s *Server) LastSeen(device string) (time.Time, bool) { return s.presence.LastSeen(device) }
