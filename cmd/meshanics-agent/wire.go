package main

import (
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"time"

	"github.com/meshanics/meshanics/internal/agent"
	applyconfig "github.com/meshanics/meshanics/internal/agent/apply/config"
	"github.com/meshanics/meshanics/internal/agent/apply/container"
	"github.com/meshanics/meshanics/internal/agent/apply/file"
	"github.com/meshanics/meshanics/internal/agent/config"
	"github.com/meshanics/meshanics/internal/agent/probe"
	"github.com/meshanics/meshanics/internal/agent/reconcile"
	"github.com/meshanics/meshanics/internal/agent/tufclient"
)

// newReconciler wires the update path: TUF client over mutual TLS to the
// update repository, the appliers of each payload kind with the device's
// allowlists, the prober. Without -artifact-server/-tuf-root it returns
// nil, and the agent reports every assignment "OTA not configured".
func newReconciler(cfg *config.Config, log *slog.Logger) func(*agent.Session, *agent.Reporter) (agent.Reconciler, error) {
	if !cfg.OTAConfigured() {
		return nil
	}
	return func(s *agent.Session, rep *agent.Reporter) (agent.Reconciler, error) {
		root, err := os.ReadFile(cfg.TUFRoot)
		if err != nil {
			return nil, &config.Error{Flag: "-tuf-root", Msg: err.Error()}
		}
		u, err := url.Parse(cfg.ArtifactServer)
		if err != nil {
			return nil, &config.Error{Flag: "-artifact-server", Msg: err.Error()}
		}
		httpClient := &http.Client{
			Transport: &http.Transport{
				TLSClientConfig: &tls.Config{
					MinVersion:           tls.VersionTLS13,
					RootCAs:              s.Roots,
					ServerName:           u.Hostname(),
					GetClientCertificate: s.Identity.GetClientCertificate,
					Time:                 s.Now,
				},
				Proxy:                 nil,
				TLSHandshakeTimeout:   15 * time.Second,
				ResponseHeaderTimeout: 60 * time.Second,
				IdleConnTimeout:       90 * time.Second,
				MaxIdleConnsPerHost:   2,
				ForceAttemptHTTP2:     true,
			},
		}
		tuf, err := tufclient.New(tufclient.Config{
			DataDir: cfg.DataDir, Root: root, ServerURL: cfg.ArtifactServer,
			HTTP: httpClient, Now: s.Now, Log: log,
		})
		if err != nil {
			return nil, &config.Error{Flag: "-tuf-root", Msg: err.Error()}
		}
		appliers := map[string]reconcile.Applier{
			"model": file.Model{Layout: file.Layout{Root: filepath.Join(cfg.DataDir, "artifacts")}},
			"config": &applyconfig.Placer{Policy: applyconfig.Policy{
				Dest: cfg.Allow.ConfigDest, Units: cfg.Allow.ReloadUnit, Exec: cfg.Allow.ReloadExec,
			}},
		}
		// Without a runtime the kind stays unregistered and the reconciler
		// fails container assignments, saying why.
		if bin, err := container.Select(cfg.ContainerRuntime); err == nil {
			appliers["container"] = &container.Applier{Bin: bin}
		} else if errors.Is(err, container.ErrNoRuntime) {
			log.Info("container artifacts disabled", "reason", err)
		} else {
			return nil, &config.Error{Flag: "-container-runtime", Msg: err.Error()}
		}
		rec, err := reconcile.New(reconcile.Options{
			DataDir:  cfg.DataDir,
			Fetcher:  tuf,
			Reporter: rep,
			Appliers: appliers,
			Prober:   probe.New(cfg.Allow.ExecProbe),
			Log:      log,
			Now:      s.Now,
		})
		if err != nil {
			return nil, fmt.Errorf("update state: %w", err)
		}
		return rec, nil
	}
}
