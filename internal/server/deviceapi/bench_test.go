package deviceapi

import (
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	devicev1 "github.com/meshanics/meshanics/proto/meshanics/device/v1"

	"github.com/meshanics/meshanics/internal/server/store/storetest"
)

// BenchmarkHeartbeat1000Devices runs 1,000 simulated devices in this
// process, each with its own key, certificate and mTLS connection, against
// one server backed by a real SQLite store (its last_seen flush running at
// the default 5 s). Client and server share the machine, so the figures
// are lower bounds.
//
//   - flat-out: every device heartbeats back to back; reports the
//     heartbeats per second the server sustained.
//
//   - paced-3300: the devices together send 3,300 heartbeats/s (SPEC §12:
//     100,000 devices every 30 s); reports the p99 latency at that rate.
//
//     go test -run '^$' -bench Heartbeat1000 -benchtime 20000x ./internal/server/deviceapi
func BenchmarkHeartbeat1000Devices(b *testing.B) {
	const devices = 1000
	db := storetest.SQLite(b)
	e := newEnv(b, envOpts{store: db, changes: db, interval: 30 * time.Second, flush: 5 * time.Second})
	clients := make([]devicev1.DeviceServiceClient, devices)
	for i := range devices {
		clients[i] = e.dial(enrollIn(b, db, e.ca, devName(i)))
	}
	// Connect and register every device before timing (TLS handshakes and
	// the first, cache-filling store read are not the steady state).
	var wg sync.WaitGroup
	var failed atomic.Int64
	for _, c := range clients {
		wg.Go(func() {
			if _, err := c.Register(ctxT(b), &devicev1.RegisterRequest{AgentVersion: "bench"}); err != nil {
				failed.Add(1)
			}
		})
	}
	wg.Wait()
	if n := failed.Load(); n > 0 {
		b.Fatalf("%d registrations failed", n)
	}
	b.Run("flat-out", func(b *testing.B) { benchHeartbeats(b, clients, 0) })
	b.Run("paced-3300", func(b *testing.B) { benchHeartbeats(b, clients, 3300) })
}

// benchHeartbeats sends b.N heartbeats spread over clients, each client at
// rate/len(clients) per second (rate 0: as fast as possible).
func benchHeartbeats(b *testing.B, clients []devicev1.DeviceServiceClient, rate float64) {
	var (
		next   atomic.Int64
		failed atomic.Int64
		wg     sync.WaitGroup
	)
	lat := make([][]time.Duration, len(clients))
	var period time.Duration
	if rate > 0 {
		period = time.Duration(float64(len(clients)) / rate * float64(time.Second))
	}
	b.ResetTimer()
	start := time.Now()
	for i, c := range clients {
		wg.Go(func() {
			ctx := ctxT(b)
			// Spread the devices' phases over one period, like jitter does.
			due := start.Add(time.Duration(i) * period / time.Duration(len(clients)))
			for next.Add(1) <= int64(b.N) {
				if period > 0 {
					time.Sleep(time.Until(due))
					due = due.Add(period)
				}
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
		b.ReportMetric(float64(all[len(all)/2].Microseconds())/1000, "p50-ms")
	}
}
