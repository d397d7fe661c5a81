// Command meshanics-server is the Meshanics control plane (SPEC §1).
//
//	meshanics-server init -data-dir DIR [-dev] [-public-host H]… [-database DSN]
//	meshanics-server [-dev] -data-dir DIR [-web-addr :8443] [-device-addr :9443] [-repo-addr :9444] …
//
// init prints the first admin API key as the only line on stdout; every log
// line goes to stderr.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/meshanics/meshanics/internal/buildinfo"
	"github.com/meshanics/meshanics/internal/server"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// run returns the exit code: 0 success, 1 failure, 2 usage.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	mode := "serve"
	if len(args) > 0 && args[0] == "init" {
		mode, args = "init", args[1:]
	}
	if mode == "serve" {
		for _, a := range args {
			if a == "-version" || a == "--version" {
				fmt.Fprintln(stdout, buildinfo.String("meshanics-server"))
				return 0
			}
		}
	}
	cfg, err := server.ParseFlags(mode, args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintf(stderr, "meshanics-server: %v\n", err)
		return 2
	}
	log := newLogger(stderr, cfg.LogLevel)
	if mode == "init" {
		key, err := server.Initialize(ctx, cfg, log)
		if err != nil {
			fmt.Fprintf(stderr, "meshanics-server init: %v\n", err)
			return 1
		}
		fmt.Fprintln(stdout, key)
		return 0
	}
	srv, err := server.New(ctx, cfg, log, stderr)
	if err != nil {
		fmt.Fprintf(stderr, "meshanics-server: %v\n", err)
		return 1
	}
	if err := srv.Run(ctx); err != nil {
		fmt.Fprintf(stderr, "meshanics-server: %v\n", err)
		return 1
	}
	return 0
}

func newLogger(w io.Writer, level string) *slog.Logger {
	var l slog.Level
	_ = l.UnmarshalText([]byte(level)) // validated by ParseFlags
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: l}))
}
