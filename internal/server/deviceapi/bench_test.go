package deviceapi

import (
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	devicev1 "github.com/meshanics/meshanics/proto/meshanics/device/v1"
)

// BenchmarkHeartbeat1000Devices runs 1,000 simulated devices in this
// process, each with its own key, certificate and mTLS connection, all
// heartbeating as fast as they can against one server (with its last_seen
// flush running at the default interval). It reports the heartbeats per
// second the server sustained and the p99 heartbeat latency. Client and
// server share the machine, so the figure is a lower bound.
//
//	go test -run '^$' -bench Heartbeat1000 -benchtime 20000x ./internal/server/deviceapi
func BenchmarkHeartbeat1000Devices(b *testing.B) {
	const devices = 1000
	e := newEnv(b, envOpts{interval: 30 * time.Second, flush: 5 * time.Second})
	clients := make([]devicev1.DeviceServiceClient, devices)
	for i := range devices {
		clients[i] = e.dial(e.enroll(devName(i)))
	}
	// Connect and register every device before timing (TLS handshakes and
	// the first, cache-filling store read are not the steady state).
	var wg sync.WaitGroup
	errs := make(chan error, devices)
	for _, c := range clients {
		wg.Go(func() {
			if _, err := c.Register(ctxT(b), &devicev1.RegisterRequest{AgentVersion: "bench"}); err != nil {
				errs <- err
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		b.Fatalf("Register: %v", err)
	}

	var next atomic.Int64
	lat := make([][]time.Duration, devices)
	var failed atomic.Int64
	b.ResetTimer()
	start := time.Now()
	for i, c := range clients {
		wg.Go(func() {
			ctx := ctxT(b)
			for next.Add(1) <= int64(b.N) {
				t := time.Now()
				if _, err := c.Heartbeat(ctx, &devicev1.HeartbeatRequest{}); err != nil {
					failed.Add(1)
					continue
				}
				lat[i] = append(lat[i], time.Since(t))
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	b.StopTimer()
	if n := failed.Load(); n > 0 {
		b.Fatalf("%d heartbeats failed", n)
	}
	all := slices.Concat(lat...)
	slices.Sort(all)
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "heartbeats/s")
	if len(all) > 0 {
		b.ReportMetric(float64(all[len(all)*99/100].Microseconds())/1000, "p99-ms")
	}
}
