// Package agent is the device agent's composition root and the one owner of
// its lifecycle (SPEC §4): load the identity, keep one mutual-TLS
// connection to the device API, Register, Heartbeat on the server's
// interval with jitter, back off when the server is unreachable, renew the
// certificate, answer log pulls, hand assignments to the reconciler, and on
// the decommission signal wipe and stop for good.
//
// Imported by cmd/meshanics-agent only.
package agent

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"sync"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/meshanics/meshanics/internal/agent/config"
	"github.com/meshanics/meshanics/internal/agent/control"
	"github.com/meshanics/meshanics/internal/agent/hardware"
	"github.com/meshanics/meshanics/internal/agent/identity"
	"github.com/meshanics/meshanics/internal/agent/logring"
	devicev1 "github.com/meshanics/meshanics/proto/meshanics/device/v1"
)

// Exit statuses of SPEC §4.5.
const (
	ExitOK             = 0
	ExitFailure        = 1
	ExitDecommissioned = 77
	ExitConfig         = config.ExitConfig
)

// ErrDecommissioned is returned by Run after the decommission wipe.
var ErrDecommissioned = errors.New("device decommissioned")

// Reconciler converges assignments against what is installed (implemented
// by internal/agent/reconcile). Reconcile is called from one goroutine with
// every heartbeat's assignments; Installed may be called from any.
type Reconciler interface {
	Reconcile(ctx context.Context, desired []*devicev1.Assignment) error
	Installed() []*devicev1.InstalledArtifact
}

// resumer is the optional crash-recovery step of a Reconciler, run once
// before the first Reconcile.
type resumer interface {
	Resume(ctx context.Context) error
}

// Deps are the agent's collaborators; zero values get production defaults.
type Deps struct {
	Log          *slog.Logger
	AgentVersion string
	Now          func() time.Time // certificate decisions and TLS validity
	Rand         func() float64   // jitter source in [0,1)
	Getenv       func(string) string
	Hardware     func() hardware.Profile // default: hardware.Detect("/")
	// NewReconciler builds the reconciler once the identity is loaded (the
	// update client needs the device certificate), reporting through the
	// agent's Reporter. nil: OTA is not configured and every assignment
	// is reported failed ("OTA not configured").
	NewReconciler func(s *Session, rep *Reporter) (Reconciler, error)
	// Ring holds recent log lines for log pulls outside systemd.
	Ring *logring.Ring
	// Journal reads the agent's own journal; nil: journalctl through
	// execx when INVOCATION_ID is set (running under systemd).
	Journal JournalReader
	// Dial opens a connection to the device API; nil: control.Dial with
	// the device's mutual TLS. Tests pass an in-memory client.
	Dial func(ctx context.Context, s *Session) (devicev1.DeviceServiceClient, func() error, error)
	// WipeStepTimeout bounds each decommission step (default 2 s).
	WipeStepTimeout time.Duration
}

// Session is what a dialer or the update client needs: the configuration,
// the live identity and the fleet CA, and the agent's clock.
type Session struct {
	Config   *config.Config
	Identity *identity.Store
	Roots    *x509.CertPool
	Now      func() time.Time
}

// Agent runs one device. Create with New, start with Run.
type Agent struct {
	cfg  *config.Config
	d    Deps
	log  *slog.Logger
	rep  *Reporter
	rec  Reconciler
	logs *logPuller

	id    *identity.Store
	roots *x509.CertPool // the fleet CA bundle; fixed for the process

	mu     sync.Mutex // guards client and closeC
	client devicev1.DeviceServiceClient
	closeC func() error

	pending mailbox
}

// New checks nothing on disk yet; Run loads the identity.
func New(cfg *config.Config, d Deps) *Agent {
	if d.Log == nil {
		d.Log = slog.New(slog.DiscardHandler)
	}
	if d.Now == nil {
		d.Now = time.Now
	}
	if d.Rand == nil {
		d.Rand = rand.Float64
	}
	if d.Getenv == nil {
		d.Getenv = os.Getenv
	}
	if d.Hardware == nil {
		d.Hardware = func() hardware.Profile { return hardware.Detect("/") }
	}
	a := &Agent{cfg: cfg, d: d, log: d.Log.With("component", "agent"), rep: newReporter(d.Log, d.Now)}
	a.rec = &otaUnconfigured{rep: a.rep, log: a.log, reported: map[string]bool{}}
	a.logs = newLogPuller(a)
	a.pending.init()
	return a
}

// Run loads the identity and runs until ctx ends (nil: a clean stop), the
// device is decommissioned (ErrDecommissioned, after the wipe), or the
// configuration proves unusable (a *config.Error).
func (a *Agent) Run(ctx context.Context) error {
	if err := a.loadIdentity(); err != nil {
		return err
	}
	if a.d.NewReconciler != nil {
		rec, err := a.d.NewReconciler(a.session(), a.rep)
		if err != nil {
			return err
		}
		a.rec = rec
	}
	client, closeFn, err := a.dial(ctx)
	if err != nil {
		return err
	}
	a.setClient(client, closeFn)
	defer a.closeClient()
	a.rep.bind(a.currentClient)

	a.log.Info("agent starting", "version", a.d.AgentVersion, "server", a.cfg.Server,
		"ota", a.cfg.OTAConfigured(), "certificate_expires", a.id.Leaf().NotAfter)

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { a.reconcileWorker(gctx); return nil })
	g.Go(func() error { a.logs.run(gctx); return nil })
	loopErr := a.loop(gctx)
	cancel()
	_ = g.Wait()
	if errors.Is(loopErr, ErrDecommissioned) {
		a.decommission()
		return ErrDecommissioned
	}
	return loopErr
}

// loadIdentity reads the credentials; any problem with them is a
// configuration error (exit 78): without credentials there is nothing the
// agent could do, and restarting would not help.
func (a *Agent) loadIdentity() error {
	id, err := identity.Load(a.cfg.CertFile, a.cfg.KeyFile)
	if err != nil {
		flag := "-cert"
		if fe := (*identity.FileError)(nil); errors.As(err, &fe) && fe.Which == identity.FileKey {
			flag = "-key"
		}
		if errors.Is(err, identity.ErrNoCredentials) {
			return &config.Error{Flag: flag, Msg: fmt.Sprintf("%v (enroll the device first)", err)}
		}
		return &config.Error{Flag: flag, Msg: err.Error()}
	}
	pool, err := identity.ReadCAPool(a.cfg.CAFile)
	if err != nil {
		return &config.Error{Flag: "-ca", Msg: err.Error()}
	}
	a.id = id
	a.roots = pool
	id.OnReplace(a.refreshTrustDirs)
	return nil
}

func (a *Agent) dial(ctx context.Context) (devicev1.DeviceServiceClient, func() error, error) {
	if a.d.Dial != nil {
		return a.d.Dial(ctx, a.session())
	}
	tlsConf, err := control.TLSConfig(a.cfg.Server, a.roots, a.id, a.d.Now)
	if err != nil {
		return nil, nil, &config.Error{Flag: "-server", Msg: err.Error()}
	}
	conn, err := control.Dial(a.cfg.Server, tlsConf)
	if err != nil {
		return nil, nil, &config.Error{Flag: "-server", Msg: err.Error()}
	}
	return devicev1.NewDeviceServiceClient(conn), conn.Close, nil
}

func (a *Agent) session() *Session {
	return &Session{Config: a.cfg, Identity: a.id, Roots: a.roots, Now: a.d.Now}
}

func (a *Agent) setClient(c devicev1.DeviceServiceClient, closeFn func() error) {
	a.mu.Lock()
	old := a.closeC
	a.client, a.closeC = c, closeFn
	a.mu.Unlock()
	if old != nil {
		_ = old()
	}
}

func (a *Agent) currentClient() devicev1.DeviceServiceClient {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.client
}

func (a *Agent) closeClient() {
	a.mu.Lock()
	c := a.closeC
	a.closeC = nil
	a.mu.Unlock()
	if c != nil {
		_ = c()
	}
}
