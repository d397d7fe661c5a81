package agent

import (
	"context"
	"errors"
	"time"

	"github.com/meshanics/meshanics/internal/agent/control"
	"github.com/meshanics/meshanics/internal/agent/hardware"
	"github.com/meshanics/meshanics/internal/agent/identity"
	devicev1 "github.com/meshanics/meshanics/proto/meshanics/device/v1"
)

// Timing of the control loop.
const (
	// DefaultInterval is used until the server sets one.
	DefaultInterval = 30 * time.Second
	minInterval     = time.Second
	maxInterval     = time.Hour
	// BackoffMin and BackoffMax bound the wait after failures (SPEC §4.2).
	BackoffMin = time.Second
	BackoffMax = 5 * time.Minute
	rpcTimeout = 30 * time.Second
)

// Jitter spreads heartbeats by ±10 % so a fleet restarted together does not
// beat in step: interval × [0.9, 1.1).
func Jitter(interval time.Duration, r float64) time.Duration {
	return time.Duration(float64(interval) * (0.9 + 0.2*r))
}

// Backoff is the wait after the n-th consecutive failure (n ≥ 1):
// 1 s doubling, ±20 % jitter, always within [BackoffMin, BackoffMax].
func Backoff(n int, r float64) time.Duration {
	d := BackoffMin
	for i := 1; i < n && d < BackoffMax; i++ {
		d *= 2
	}
	// Cap before jitter, so retries at the cap stay spread (4-5 min).
	d = time.Duration(float64(min(d, BackoffMax)) * (0.8 + 0.4*r))
	return min(max(d, BackoffMin), BackoffMax)
}

// loop registers, heartbeats and renews until ctx ends (nil) or the
// decommission signal arrives (ErrDecommissioned). Any other failure only
// backs off: payloads keep running, nothing is wiped.
func (a *Agent) loop(ctx context.Context) error {
	hw := a.d.Hardware()
	interval := DefaultInterval
	registered := false
	failures := 0
	for {
		var err error
		if !registered {
			var iv time.Duration
			if iv, err = a.register(ctx, hw); err == nil {
				registered = true
				interval = clampInterval(iv, interval)
			}
		}
		if err == nil {
			var iv time.Duration
			if iv, err = a.heartbeat(ctx); err == nil {
				interval = clampInterval(iv, interval)
			}
		}
		if err == nil {
			err = a.maybeRenew(ctx)
		}

		var wait time.Duration
		switch {
		case ctx.Err() != nil:
			return nil
		case control.IsDecommissioned(err):
			a.log.Warn("the control plane has decommissioned this device")
			return ErrDecommissioned
		case err != nil:
			failures++
			// Re-register after a failure that may mean the server lost
			// track of us (it is idempotent and tells it everything
			// again), but not after one that only says the server is
			// unreachable or overloaded: then the next attempt is a
			// heartbeat, which writes nothing on the server, so a fleet
			// recovering from an outage or an overload does not turn
			// into a storm of Register transactions.
			if !control.IsTransient(err) {
				registered = false
			}
			wait = Backoff(failures, a.d.Rand())
			a.log.Warn("device API unreachable or refusing; backing off", "err", err, "failures", failures, "retry_in", wait.Round(time.Millisecond))
		default:
			if failures > 0 {
				a.log.Info("device API reachable again", "after_failures", failures)
			}
			failures = 0
			wait = Jitter(interval, a.d.Rand())
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
	}
}

func clampInterval(ms time.Duration, cur time.Duration) time.Duration {
	if ms <= 0 {
		return cur
	}
	return min(max(ms, minInterval), maxInterval)
}

func (a *Agent) register(ctx context.Context, hw hardware.Profile) (time.Duration, error) {
	ctx, cancel := context.WithTimeout(ctx, rpcTimeout)
	defer cancel()
	resp, err := a.currentClient().Register(ctx, &devicev1.RegisterRequest{
		Hardware:     profileProto(hw),
		AgentVersion: a.d.AgentVersion,
		Tags:         a.cfg.Tags,
		Installed:    a.rec.Installed(),
	})
	if err != nil {
		return 0, err
	}
	a.log.Info("registered", "device", resp.GetName(), "fleet", resp.GetFleet(), "heartbeat_interval_ms", resp.GetHeartbeatIntervalMs())
	return time.Duration(resp.GetHeartbeatIntervalMs()) * time.Millisecond, nil
}

func (a *Agent) heartbeat(ctx context.Context) (time.Duration, error) {
	ctx, cancel := context.WithTimeout(ctx, rpcTimeout)
	defer cancel()
	resp, err := a.currentClient().Heartbeat(ctx, &devicev1.HeartbeatRequest{Installed: a.rec.Installed()})
	if err != nil {
		return 0, err
	}
	a.pending.put(resp.GetAssignments())
	for _, lr := range resp.GetLogRequests() {
		a.logs.offer(lr)
	}
	return time.Duration(resp.GetHeartbeatIntervalMs()) * time.Millisecond, nil
}

// maybeRenew renews the certificate once less than a third of its life is
// left (SPEC §2). A failed renewal is retried on the next heartbeat; only
// the decommission signal is returned to the loop.
func (a *Agent) maybeRenew(ctx context.Context) error {
	leaf := a.id.Leaf()
	now := a.d.Now()
	if !identity.NeedsRenewal(leaf, now) {
		return nil
	}
	if now.After(leaf.NotAfter) {
		a.log.Error("device certificate expired; it cannot be renewed: re-enroll the device", "expired", leaf.NotAfter)
		return nil
	}
	err := a.renew(ctx, leaf.Subject.CommonName)
	if err != nil {
		if control.IsDecommissioned(err) {
			return err
		}
		a.log.Warn("certificate renewal failed; will retry", "err", err, "expires", leaf.NotAfter)
		return nil
	}
	a.log.Info("certificate renewed", "expires", a.id.Leaf().NotAfter)
	return nil
}

func (a *Agent) renew(ctx context.Context, name string) error {
	csr, err := identity.CSR(a.id.Key(), name)
	if err != nil {
		return err
	}
	rctx, cancel := context.WithTimeout(ctx, rpcTimeout)
	defer cancel()
	resp, err := a.currentClient().RenewCertificate(rctx, &devicev1.RenewCertificateRequest{CsrPem: string(csr)})
	if err != nil {
		return err
	}
	if err := a.id.Replace([]byte(resp.GetCertificatePem()), a.roots, a.d.Now()); err != nil {
		return err
	}
	// The server now refuses the superseded certificate, and TLS presents
	// a certificate only at the handshake: open a fresh connection.
	client, closeFn, err := a.dial(ctx)
	if err != nil {
		return errors.Join(errors.New("reconnect with the renewed certificate"), err)
	}
	a.setClient(client, closeFn)
	return nil
}

func profileProto(p hardware.Profile) *devicev1.HardwareProfile {
	return &devicev1.HardwareProfile{
		Model: p.Model, Soc: p.SoC, Arch: p.Arch, MemoryBytes: p.MemoryBytes, CpuCores: p.CPUCores,
		Accelerators: p.Accelerators, Os: p.OS, Kernel: p.Kernel,
	}
}
