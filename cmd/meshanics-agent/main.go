// Command meshanics-agent is the device agent (SPEC §4): `meshanics-agent
// [flags]` runs it, `meshanics-agent enroll …` enrolls the device, and
// `meshanics-agent -version` prints the version. Exit statuses: 0 clean stop,
// 77 decommissioned, 78 configuration error, anything else a failure that
// systemd restarts.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/meshanics/meshanics/internal/agent"
	"github.com/meshanics/meshanics/internal/agent/config"
	"github.com/meshanics/meshanics/internal/agent/enroll"
	"github.com/meshanics/meshanics/internal/agent/hardware"
	"github.com/meshanics/meshanics/internal/agent/logring"
	"github.com/meshanics/meshanics/internal/buildinfo"
)

const binary = "meshanics-agent"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr, os.Getenv)
	stop()
	os.Exit(code)
}

// run is the whole program; it returns the exit status.
func run(ctx context.Context, args []string, stdout, stderr io.Writer, getenv func(string) string) int {
	if len(args) > 0 && args[0] == "enroll" {
		return runEnroll(ctx, args[1:], stdout, stderr)
	}
	if len(args) > 0 && args[0] == "csr" {
		return runCSR(ctx, args[1:], stdout, stderr)
	}
	cfg, err := config.Parse(args, getenv)
	if h := (*config.Help)(nil); errors.As(err, &h) {
		fmt.Fprintf(stdout, "usage: meshanics-agent -server host:port -cert FILE -key FILE -ca FILE [flags]\n       meshanics-agent enroll -url URL -token TOKEN -ca-pin sha256:HEX [flags]\n       meshanics-agent csr [-name NAME] [-config-dir DIR] (air-gapped provisioning)\n       meshanics-agent -version\n\n%s", h.Usage)
		return agent.ExitOK
	}
	if err != nil {
		fmt.Fprintf(stderr, "%s: configuration error: %v\n", binary, err)
		return agent.ExitConfig
	}
	if cfg.ShowVersion {
		fmt.Fprintln(stdout, buildinfo.String(binary))
		return agent.ExitOK
	}
	level := new(slog.LevelVar)
	level.Set(cfg.LogLevel)
	ring := logring.NewRing(logring.DefaultLines)
	log := slog.New(logring.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}), ring, level))

	a := agent.New(cfg, agent.Deps{
		Log:           log,
		AgentVersion:  buildinfo.Version,
		Getenv:        getenv,
		Ring:          ring,
		NewReconciler: newReconciler(cfg, log),
	})
	err = a.Run(ctx)
	code := agent.ExitCode(err)
	switch code {
	case agent.ExitOK:
		log.Info("agent stopped")
	case agent.ExitConfig:
		log.Error("configuration error", "err", err)
	case agent.ExitDecommissioned:
		// logged by the agent
	default:
		log.Error("agent failed", "err", err)
	}
	return code
}

func runEnroll(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	host, _ := os.Hostname()
	c, err := config.ParseEnroll(args, host)
	if h := (*config.Help)(nil); errors.As(err, &h) {
		fmt.Fprintf(stdout, "usage: meshanics-agent enroll -url https://host:8443 -token mst_… -ca-pin sha256:HEX [flags]\n\n%s", h.Usage)
		return agent.ExitOK
	}
	if err != nil {
		fmt.Fprintf(stderr, "%s enroll: configuration error: %v\n", binary, err)
		return agent.ExitConfig
	}
	log := slog.New(slog.NewTextHandler(stderr, nil)).With("component", "enroll")
	res, err := enroll.Run(ctx, c, enroll.Deps{
		Log:          log,
		Hardware:     hardware.Detect("/"),
		AgentVersion: buildinfo.Version,
	})
	if err != nil {
		fmt.Fprintf(stderr, "%s enroll: %v\n", binary, err)
		if config.IsError(err) {
			return agent.ExitConfig
		}
		return agent.ExitFailure
	}
	how := "enrolled"
	if res.ReusedKey {
		how = "re-enrolled with the existing key (same identity)"
	}
	fmt.Fprintf(stdout, "%s %s in fleet %s; credentials in %s\n", res.Device, how, res.Fleet, c.ConfigDir)
	for _, d := range res.TrustDirs {
		fmt.Fprintf(stdout, "runtime trust dir: %s\n", d)
	}
	return agent.ExitOK
}
