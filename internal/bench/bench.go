// Package bench is meshanics-bench (issue 7, SPEC §12): a fleet simulator
// and benchmark driver. Every figure comes from the real binaries and the
// real protocols: meshanics-server started as a process, devices enrolled
// through POST /api/v1/enroll with their own keys, one mutual-TLS gRPC
// connection per device, artifacts published and fetched through TUF.
// Imported only by cmd/meshanics-bench.
package bench

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"time"
)

// Main runs meshanics-bench with args and returns the exit code: 0 done,
// 1 the benchmark failed, 2 usage.
func Main(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		usage(stderr)
		return 2
	}
	cmds := map[string]func(context.Context, []string, io.Reader, io.Writer, io.Writer) error{
		"heartbeat":        runHeartbeat,
		"heartbeat-worker": runHeartbeatWorker,
		"rollout":          runRollout,
		"agent":            runAgent,
		"apply":            runApply,
	}
	run, ok := cmds[args[0]]
	if !ok {
		if args[0] == "-h" || args[0] == "help" || args[0] == "-help" {
			usage(stdout)
			return 0
		}
		fmt.Fprintf(stderr, "meshanics-bench: unknown command %q\n", args[0])
		usage(stderr)
		return 2
	}
	err := run(ctx, args[1:], stdin, stdout, stderr)
	var u usageError
	switch {
	case err == nil:
		return 0
	case errors.Is(err, flag.ErrHelp):
		return 0
	case errors.As(err, &u):
		fmt.Fprintf(stderr, "meshanics-bench %s: %v\n", args[0], err)
		return 2
	}
	fmt.Fprintf(stderr, "meshanics-bench %s: %v\n", args[0], err)
	return 1
}

func usage(w io.Writer) {
	fmt.Fprint(w, `usage: meshanics-bench COMMAND [flags]   (docs/benchmarks.md)

  heartbeat  -devices N -interval D -duration D [-database DSN] [-replicas R] [-heartbeat-budget B] [-json]
             N simulated devices heartbeating over mutual-TLS gRPC against a real meshanics-server
  rollout    -devices N [-json]      a rollout across N simulated devices; time to completion
  agent      [-duration 60s] [-json] the release agent's stripped size, idle RSS and idle CPU
  apply      [-size 1GiB] [-json]    fetch + verify + apply through the agent path vs openssl + cp
`)
}

type usageError struct{ error }

func usagef(format string, a ...any) error { return usageError{fmt.Errorf(format, a...)} }

// newFlags is a flag set that reports errors as usage errors.
func newFlags(name string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("meshanics-bench "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	return fs
}

func parse(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return usageError{err}
	}
	if fs.NArg() > 0 {
		return usagef("unexpected argument %q", fs.Arg(0))
	}
	return nil
}

// emit prints v as one JSON line (asJSON) or as indented key: value lines.
func emit(w io.Writer, asJSON bool, v any) error {
	if asJSON {
		return json.NewEncoder(w).Encode(v)
	}
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(w, "%s\n", b)
	return err
}

// workDir is a temporary directory removed by the returned function unless
// keep is set.
func workDir(keep bool, stderr io.Writer) (string, func(), error) {
	dir, err := os.MkdirTemp("", "meshanics-bench-")
	if err != nil {
		return "", nil, err
	}
	return dir, func() {
		if keep {
			fmt.Fprintf(stderr, "kept %s\n", dir)
			return
		}
		os.RemoveAll(dir)
	}, nil
}

func round(f float64, digits int) float64 {
	p := 1.0
	for range digits {
		p *= 10
	}
	return float64(int64(f*p+0.5)) / p
}

func secs(d time.Duration) float64 { return round(d.Seconds(), 3) }
