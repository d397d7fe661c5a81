// Package probe runs the health probe a rollout carries (SPEC §4.4) after
// every apply: http (loopback only, 2xx), file (regular, non-empty) and exec
// (allowlisted absolute binary, exit 0), with initial delay, per-attempt
// timeout, attempts and interval. Imported by the agent's reconciler.
package probe

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"slices"
	"syscall"
	"time"

	"github.com/meshanics/meshanics/internal/agent/execx"
	"github.com/meshanics/meshanics/internal/errdefs"
	"github.com/meshanics/meshanics/internal/healthprobe"
)

// Prober runs probes. Safe for concurrent use.
type Prober struct {
	allowExec []string
	client    *http.Client
	// Sleep waits d or until ctx ends; tests replace it to skip delays.
	Sleep func(ctx context.Context, d time.Duration) error
}

// New returns a Prober whose exec probes may run only the absolute binaries
// in allowExec (empty: no exec probe is allowed).
func New(allowExec []string) *Prober {
	return &Prober{allowExec: slices.Clone(allowExec), client: loopbackClient(), Sleep: sleep}
}

// Check validates spec and the device policy without running anything. A
// policy refusal wraps errdefs.ErrPermission; a bad shape wraps ErrInvalid.
func (p *Prober) Check(spec healthprobe.Spec) error {
	if err := spec.Validate(); err != nil {
		return fmt.Errorf("probe: %w: %v", errdefs.ErrInvalid, err)
	}
	if spec.Type == healthprobe.TypeExec && !slices.Contains(p.allowExec, spec.Target) {
		return fmt.Errorf("probe: %w: %s is not on the exec-probe allowlist (-allow-exec-probe)", errdefs.ErrPermission, spec.Target)
	}
	return nil
}

// Run waits the initial delay, then tries up to Attempts times with Interval
// between tries. It returns nil on the first healthy attempt, the policy or
// shape error from Check, or the last attempt's failure.
func (p *Prober) Run(ctx context.Context, spec healthprobe.Spec) error {
	spec = spec.WithDefaults()
	if err := p.Check(spec); err != nil {
		return err
	}
	if err := p.Sleep(ctx, time.Duration(spec.InitialDelaySeconds)*time.Second); err != nil {
		return fmt.Errorf("probe: %w", err)
	}
	var last error
	for i := 0; i < spec.Attempts; i++ {
		if i > 0 {
			if err := p.Sleep(ctx, time.Duration(spec.IntervalSeconds)*time.Second); err != nil {
				return fmt.Errorf("probe: %w (last attempt: %v)", err, last)
			}
		}
		last = p.once(ctx, spec)
		if last == nil {
			return nil
		}
		if errors.Is(last, errdefs.ErrPermission) {
			return fmt.Errorf("probe refused: %w", last) // no attempt can succeed
		}
	}
	return fmt.Errorf("probe failed after %d attempts: %w", spec.Attempts, last)
}

func (p *Prober) once(ctx context.Context, spec healthprobe.Spec) error {
	timeout := time.Duration(spec.TimeoutSeconds) * time.Second
	switch spec.Type {
	case healthprobe.TypeHTTP:
		return p.http(ctx, spec.Target, timeout)
	case healthprobe.TypeFile:
		fi, err := os.Stat(spec.Target)
		switch {
		case err != nil:
			return fmt.Errorf("file probe: %w", err)
		case !fi.Mode().IsRegular():
			return fmt.Errorf("file probe: %s is not a regular file", spec.Target)
		case fi.Size() == 0:
			return fmt.Errorf("file probe: %s is empty", spec.Target)
		}
		return nil
	default:
		_, err := execx.Run(ctx, execx.Cmd{Path: spec.Target, Args: spec.Args, Timeout: timeout, MaxOutput: 4 << 10})
		if err != nil {
			return fmt.Errorf("exec probe: %w", err)
		}
		return nil
	}
}

func (p *Prober) http(ctx context.Context, target string, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, target, nil)
	if err != nil {
		return fmt.Errorf("http probe: %w", err)
	}
	resp, err := p.client.Do(req)
	if err != nil {
		return fmt.Errorf("http probe: %w", err)
	}
	defer resp.Body.Close()
	io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return fmt.Errorf("http probe: status %d", resp.StatusCode)
	}
	return nil
}

// errNotLoopback is a policy refusal (say "localhost" resolves elsewhere):
// the update fails and the previous version is restored (SPEC §4.4).
var errNotLoopback = fmt.Errorf("%w: probe may only connect to loopback addresses", errdefs.ErrPermission)

// loopbackClient never leaves the device: no proxy, no redirects, and a
// dialer that refuses any non-loopback address (also after DNS for
// "localhost").
func loopbackClient() *http.Client {
	d := &net.Dialer{Control: func(_, address string, _ syscall.RawConn) error {
		host, _, err := net.SplitHostPort(address)
		if err != nil {
			return err
		}
		if ip := net.ParseIP(host); ip == nil || !ip.IsLoopback() {
			return errNotLoopback
		}
		return nil
	}}
	tr := &http.Transport{Proxy: nil, DialContext: d.DialContext, DisableKeepAlives: true, MaxResponseHeaderBytes: 64 << 10}
	return &http.Client{Transport: tr, CheckRedirect: func(*http.Request, []*http.Request) error {
		return http.ErrUseLastResponse
	}}
}

func sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
