// Package server is the composition root of meshanics-server: it builds
// every part of the control plane with explicit arguments in one readable
// order (store, PKI, update repository, enrollment, device API, operator
// API, rollouts) and runs the three listeners of SPEC §1 until its context
// ends. Other server packages add their wiring lines here.
//
// Only cmd/meshanics-server and tests import it.
package server

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"golang.org/x/sync/errgroup"

	"github.com/meshanics/meshanics/internal/server/artifacts"
	"github.com/meshanics/meshanics/internal/server/ca"
	"github.com/meshanics/meshanics/internal/server/deviceapi"
	"github.com/meshanics/meshanics/internal/server/enrollment"
	"github.com/meshanics/meshanics/internal/server/operatorapi"
	"github.com/meshanics/meshanics/internal/server/operatorapi/ratelimit"
	"github.com/meshanics/meshanics/internal/server/rollout"
	"github.com/meshanics/meshanics/internal/server/store"
	"github.com/meshanics/meshanics/internal/server/updaterepo"
)

func (c Config) now() func() time.Time {
	if c.Now != nil {
		return c.Now
	}
	return time.Now
}

// Server is one control-plane replica. Build it with New, run it with Run.
type Server struct {
	cfg Config
	log *slog.Logger
	now func() time.Time

	db       *store.DB
	ca       *ca.Authority
	serving  *servingCert
	registry *prometheus.Registry

	webLn, deviceLn, repoLn net.Listener

	repo     *updaterepo.Repository
	rollouts *rollout.Runner
	repoAuth *repoAuth
	enroll   *enrollment.Service
	devices  *deviceapi.Server
	web      http.Handler
}

// New builds every part and binds the three listeners (so their addresses
// are known, e.g. for ":0"). On a data dir that was never initialised it
// initialises it first and writes the one-time admin API key to banner.
// Call Run, or Close if Run is never called.
func New(ctx context.Context, cfg Config, log *slog.Logger, banner io.Writer) (_ *Server, err error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	s := &Server{cfg: cfg, log: log, now: cfg.now()}
	defer func() {
		if err != nil {
			s.Close()
		}
	}()

	// Store.
	s.db, err = store.Open(ctx, store.Options{DataDir: cfg.DataDir, DSN: cfg.Database, Logger: log, Now: s.now})
	if err != nil {
		return nil, err
	}

	// PKI: created (with the first admin) on first start.
	pki := pkiDir(cfg.DataDir)
	var adminKey string
	if ok, err := ca.Exists(pki); err != nil {
		return nil, err
	} else if !ok {
		if adminKey, err = initialize(ctx, cfg, s.db, log); err != nil {
			return nil, fmt.Errorf("first start: %w", err)
		}
	}
	if s.ca, err = ca.Load(pki, s.now); err != nil {
		return nil, err
	}
	if adminKey == "" {
		// A PKI with an empty database (a new database for an existing
		// data dir): nobody could log in, so create the first admin.
		if n, err := s.db.CountUsers(ctx); err != nil {
			return nil, err
		} else if n == 0 {
			if adminKey, err = createFirstAdmin(ctx, s.db, s.ca, cfg); err != nil {
				return nil, err
			}
		}
	}
	if adminKey != "" {
		fmt.Fprintf(banner, "\n"+
			"==================================================================\n"+
			" Meshanics initialised %s.\n"+
			" Admin API key (shown only this once; store it now):\n\n"+
			"   %s\n\n"+
			"==================================================================\n\n", cfg.DataDir, adminKey)
	}
	if s.serving, err = newServingCert(s.ca, cfg.PublicHosts, log); err != nil {
		return nil, err
	}

	// Listeners first: the public addresses devices are told use their
	// actual ports.
	if s.webLn, err = net.Listen("tcp", cfg.WebAddr); err != nil {
		return nil, fmt.Errorf("web listener: %w", err)
	}
	if s.deviceLn, err = net.Listen("tcp", cfg.DeviceAddr); err != nil {
		return nil, fmt.Errorf("device listener: %w", err)
	}
	if s.repoLn, err = net.Listen("tcp", cfg.RepoAddr); err != nil {
		return nil, fmt.Errorf("repo listener: %w", err)
	}
	host := cfg.PublicHosts[0]
	publicURL := "https://" + publicHostPort(host, s.webLn.Addr())
	deviceServer := publicHostPort(host, s.deviceLn.Addr())
	artifactServer := "https://" + publicHostPort(host, s.repoLn.Addr())

	// Metrics: one registry, handed to every part.
	s.registry = prometheus.NewRegistry()
	s.registry.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))

	// Update repository (TUF online roles).
	blobs, err := artifacts.NewBlobs(filepath.Join(cfg.DataDir, "blobs"))
	if err != nil {
		return nil, err
	}
	s.repo, err = updaterepo.New(updaterepo.Config{DataDir: cfg.DataDir, DB: s.db, Blobs: blobs, Now: s.now, Log: log})
	if err != nil {
		return nil, err
	}
	if cfg.Dev {
		if err := s.repo.InitDev(ctx); err != nil {
			return nil, err
		}
	}

	// Artifact publishing (signs into the repository before returning).
	arts, err := artifacts.New(artifacts.Config{DB: s.db, Blobs: blobs, Signer: s.repo, Log: log})
	if err != nil {
		return nil, err
	}

	// Rollout engine: serves assignments on heartbeats, takes reports.
	s.rollouts, err = rollout.New(rollout.Config{DB: s.db, Artifacts: s.db, Log: log, Now: s.now})
	if err != nil {
		return nil, err
	}

	// Enrollment.
	s.enroll, err = enrollment.New(enrollment.Config{
		Store: s.db, CA: s.ca, Trust: s.repo, NotInitialized: updaterepo.ErrNotInitialized,
		Log: log, Now: s.now, Registry: s.registry,
		CertTTL: cfg.DeviceCertTTL, HeartbeatInterval: cfg.HeartbeatInterval,
		DeviceServer: deviceServer, ArtifactServer: artifactServer, PublicURL: publicURL,
	})
	if err != nil {
		return nil, err
	}

	// Device API.
	s.devices, err = deviceapi.New(deviceapi.Config{
		Fleet: s.ca.Fleet(), Identity: s.ca, Devices: s.db, Logs: s.db, Renewer: s.enroll, Changes: s.db,
		Assignments: s.rollouts, Status: s.rollouts,
		Log: log, Registry: s.registry, Now: s.now, HeartbeatInterval: cfg.HeartbeatInterval,
		HeartbeatBudget: cfg.HeartbeatBudget,
		// last_seen reaches the store within half an interval (at most 5 s),
		// so presence in the operator API lags by less than one heartbeat.
		FlushInterval: min(5*time.Second, cfg.HeartbeatInterval/2),
	})
	if err != nil {
		return nil, err
	}

	// Operator API. A decommission reaches this replica's device API and
	// repository at once.
	s.repoAuth = newRepoAuth(s.ca, s.db, s.now, log)
	invalidate := func(device string) {
		s.devices.Invalidate(device)
		s.repoAuth.invalidate(device)
	}
	api, err := operatorapi.New(operatorapi.Config{
		Store: s.db, Logger: log, Now: s.now, Tokens: s.enroll,
		CAPin: s.ca.Fingerprint(), CAPEM: s.ca.CertPEM(), PublicURL: publicURL,
		Invalidate: invalidate, HeartbeatInterval: cfg.HeartbeatInterval,
		Artifacts: arts, Trust: s.repo, Groups: s.rollouts, Rollouts: s.rollouts,
		Presence: s.devices,
	})
	if err != nil {
		return nil, err
	}

	// Web listener routes.
	install, err := installHandler(s.ca.CertPEM())
	if err != nil {
		return nil, err
	}
	enrollLimiter := ratelimit.New(ratelimit.Config{Rate: 100, Burst: 200, Now: s.now})
	mux := http.NewServeMux()
	mux.Handle("/api/", api.Handler())
	mux.Handle("/login", api.Handler())
	mux.Handle("/logout", api.Handler())
	mux.Handle("/api/v1/enroll", s.enroll.Handler(enrollLimiter))
	mux.Handle("/install.sh", install)
	mux.Handle("/downloads/", downloadsHandler(cfg.AgentDir, log))
	mux.HandleFunc("GET /healthz", healthz)
	mux.Handle("GET /readyz", readyz(s.db, log))
	mux.Handle("GET /metrics", metricsHandler(s.registry))
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		notFound(w, "not found; the operator API is under /api/v1/ (meshctl), the installer at /install.sh")
	})
	s.web = mux

	if cfg.publicHostDefaulted {
		log.Warn("no -public-host given: the serving certificate covers only localhost and devices are told to connect to localhost; pass -public-host with the name or IP devices reach this server by")
	}
	log.Info("control plane ready",
		"fleet", s.ca.Fleet(), "ca_pin", s.ca.Fingerprint(), "web", publicURL, "device", deviceServer, "repo", artifactServer,
		"database", s.db.Dialect(), "dev", cfg.Dev)
	return s, nil
}

// Addrs are the bound addresses of the web, device and repo listeners.
func (s *Server) Addrs() (web, device, repo net.Addr) {
	return s.webLn.Addr(), s.deviceLn.Addr(), s.repoLn.Addr()
}

// CA is the fleet CA (for tests).
func (s *Server) CA() *ca.Authority { return s.ca }

// Run serves the three listeners and runs the background work until ctx
// ends, then stops everything gracefully (bounded by the shutdown timeout)
// and closes the store. It returns nil after a clean stop.
func (s *Server) Run(ctx context.Context) error {
	defer s.Close()
	g, gctx := errgroup.WithContext(ctx)

	cert := s.serving.current()
	webSrv := s.httpServer(s.web, s.serving.use(s.ca.WebTLSConfig(cert)))
	// The repository speaks HTTP/1.1 only: Go's HTTP/2 server hands a
	// response body to its connection goroutine 4 KiB at a time, which cost
	// ≈4× the server CPU of HTTP/1.1 for a 1 GiB model (docs/benchmarks.md).
	// Targets are single large GETs; HTTP/2's multiplexing buys nothing.
	repoSrv := s.httpServer(s.repoHandler(), s.serving.use(s.ca.MutualTLSConfig(cert, "http/1.1")))
	repoSrv.TLSNextProto = map[string]func(*http.Server, *tls.Conn, http.Handler){}
	serveHTTP := func(name string, srv *http.Server, ln net.Listener) {
		g.Go(func() error {
			if err := srv.ServeTLS(ln, "", ""); err != nil && !errors.Is(err, http.ErrServerClosed) {
				return fmt.Errorf("%s listener: %w", name, err)
			}
			return nil
		})
		g.Go(func() error {
			<-gctx.Done()
			sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.shutdownTimeout())
			defer cancel()
			if err := srv.Shutdown(sctx); err != nil {
				_ = srv.Close()
			}
			return nil
		})
	}
	serveHTTP("web", webSrv, s.webLn)
	serveHTTP("repo", repoSrv, s.repoLn)
	g.Go(func() error {
		return s.devices.Serve(gctx, s.deviceLn, s.serving.use(s.ca.MutualTLSConfig(cert)))
	})
	g.Go(func() error { return s.serving.run(gctx) })
	g.Go(func() error { return s.repo.Run(gctx) })
	g.Go(func() error { return s.rollouts.Run(gctx) })
	if s.cfg.PprofAddr != "" {
		g.Go(func() error { return servePprof(gctx, s.cfg.PprofAddr) })
	}

	err := g.Wait()
	if ctx.Err() != nil && (err == nil || errors.Is(err, context.Canceled)) {
		s.log.Info("control plane stopped")
		return nil
	}
	return err
}

func (s *Server) shutdownTimeout() time.Duration {
	if s.cfg.ShutdownTimeout > 0 {
		return s.cfg.ShutdownTimeout
	}
	return 15 * time.Second
}

// repoHandler serves the update repository on the mTLS repo listener to
// devices whose certificate is current.
func (s *Server) repoHandler() http.Handler {
	return s.repoAuth.wrap(s.repo.Handler())
}

func (s *Server) httpServer(h http.Handler, tc *tls.Config) *http.Server {
	return &http.Server{
		Handler:           h,
		TLSConfig:         tc,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(s.log.With("component", "http").Handler(), slog.LevelDebug),
	}
}

// Close releases the listeners and the store. Safe to call more than once.
func (s *Server) Close() error {
	var errs []error
	for _, ln := range []net.Listener{s.webLn, s.deviceLn, s.repoLn} {
		if ln != nil {
			if err := ln.Close(); err != nil && !isClosed(err) {
				errs = append(errs, err)
			}
		}
	}
	if s.db != nil {
		errs = append(errs, s.db.Close())
		s.db = nil
	}
	return errors.Join(errs...)
}

func isClosed(err error) bool {
	return errors.Is(err, net.ErrClosed) || strings.Contains(err.Error(), "use of closed network connection")
}
