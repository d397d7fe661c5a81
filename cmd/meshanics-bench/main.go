// Command meshanics-bench is the fleet simulator and benchmark driver of
// issue 7: it starts (or targets) a real meshanics-server, enrolls simulated
// devices through the real enrollment endpoint, keeps real mutual-TLS gRPC
// connections, and measures heartbeats, rollouts, the agent's footprint and
// the apply throughput. See docs/benchmarks.md.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/meshanics/meshanics/internal/bench"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := bench.Main(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
