package bench

import (
	"context"
	"fmt"
	"math/rand/v2"
	"runtime/debug"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	devicev1 "github.com/meshanics/meshanics/proto/meshanics/device/v1"
)

// fleetSpec is one process's share of a simulated fleet.
type fleetSpec struct {
	WebURLs []string `json:"web_urls"` // enrollment is spread over them
	CAPEM   []byte   `json:"ca_pem"`
	// Tokens: device i of the share enrolls with Tokens[i % len(Tokens)].
	// A bulk token's uses are spent one at a time under its row lock, so a
	// large fleet enrolls with several (mintTokens).
	Tokens      []string      `json:"tokens"`
	Prefix      string        `json:"prefix"`
	From        int           `json:"from"`
	Count       int           `json:"count"`
	DeviceAddrs []string      `json:"device_addrs"` // empty: the address enrollment returns
	Duration    time.Duration `json:"duration"`
	// ConnectConc is how many devices connect and register at once
	// (0: 64); the processes of one fleet share 64 between them.
	ConnectConc int `json:"connect_conc"`
	// Settle is heartbeated but not measured: the registration burst of
	// connecting is not the steady state.
	Settle time.Duration `json:"settle"`
}

// fleetReady is reported once every device of a share is enrolled,
// connected and registered.
type fleetReady struct {
	EnrollSeconds  float64 `json:"enroll_s"`
	ConnectSeconds float64 `json:"connect_s"`
	ConnectRetries int64   `json:"connect_retries"`
	IntervalMS     int64   `json:"interval_ms"`
}

// fleetResult is what a share measured in the heartbeat window.
type fleetResult struct {
	Heartbeats int64    `json:"heartbeats"`
	Errors     int64    `json:"errors"`
	FirstError string   `json:"first_error,omitempty"`
	LatencyUS  []uint32 `json:"latency_us"`
	// IntervalMS is the widest interval the server handed out in the
	// window, LastIntervalMS the one it handed out last.
	IntervalMS     int64 `json:"interval_ms"`
	LastIntervalMS int64 `json:"last_interval_ms"`
}

// simFleet is a running share of simulated devices.
type simFleet struct {
	spec     fleetSpec
	devs     []*device
	interval time.Duration
}

func deviceName(prefix string, i int) string { return fmt.Sprintf("%s-%06d", prefix, i) }

// prepareFleet enrolls and connects a share.
func prepareFleet(ctx context.Context, spec fleetSpec) (*simFleet, fleetReady, error) {
	names := make([]string, spec.Count)
	for i := range names {
		names[i] = deviceName(spec.Prefix, spec.From+i)
	}
	e := newEnroller(spec.WebURLs, spec.Tokens, spec.CAPEM)
	devs, first, took, err := e.enrollAll(ctx, names, 32)
	e.close()
	f := &simFleet{spec: spec, devs: devs}
	if err != nil {
		f.close()
		return nil, fleetReady{}, fmt.Errorf("enroll: %w", err)
	}
	ready := fleetReady{EnrollSeconds: took.Seconds()}
	addrs := spec.DeviceAddrs
	if len(addrs) == 0 {
		addrs = []string{first.Config.Server}
	}
	t0 := time.Now()
	conc := spec.ConnectConc
	if conc <= 0 {
		conc = 64
	}
	if f.interval, ready.ConnectRetries, err = connectAll(ctx, devs, addrs, spec.CAPEM, conc); err != nil {
		f.close()
		return nil, fleetReady{}, fmt.Errorf("connect: %w", err)
	}
	ready.ConnectSeconds = time.Since(t0).Seconds()
	ready.IntervalMS = f.interval.Milliseconds()
	// Enrolling and connecting left garbage (keys, CSRs, handshakes) that
	// the steady state does not need: give it back to the machine the
	// servers share before measuring.
	debug.FreeOSMemory()
	return f, ready, nil
}

func (f *simFleet) close() {
	for _, d := range f.devs {
		if d != nil {
			d.close()
		}
	}
}

// heartbeat runs every device like the agent does for spec.Duration: a
// heartbeat every server-set interval × [0.9, 1.1), the first at a random
// point of the first interval (a fleet's phases are spread).
func (f *simFleet) heartbeat(ctx context.Context) fleetResult {
	start := time.Now()
	measureFrom := start.Add(f.spec.Settle)
	end := measureFrom.Add(f.spec.Duration)
	var (
		beats, errs   atomic.Int64
		widest, last  atomic.Int64
		mu            sync.Mutex
		lat           = make([]uint32, 0, 1024)
		firstErr      string
		wg            sync.WaitGroup
		base          = f.interval
		stop, release = context.WithCancel(ctx)
	)
	defer release()
	for _, d := range f.devs {
		wg.Go(func() {
			local := make([]uint32, 0, 8)
			interval := base
			wait := time.Duration(rand.Int64N(int64(interval)))
			for {
				t := time.NewTimer(wait)
				select {
				case <-stop.Done():
					t.Stop()
					return
				case <-t.C:
				}
				if !time.Now().Before(end) {
					break
				}
				cctx, cancel := context.WithTimeout(stop, 20*time.Second)
				t0 := time.Now()
				resp, err := d.client.Heartbeat(cctx, &devicev1.HeartbeatRequest{})
				took := time.Since(t0)
				cancel()
				measured := !t0.Before(measureFrom)
				switch {
				case err != nil && measured:
					if errs.Add(1) == 1 {
						mu.Lock()
						firstErr = fmt.Sprintf("%s: %v", d.name, err)
						mu.Unlock()
					}
				case err == nil:
					if measured {
						beats.Add(1)
						local = append(local, uint32(min(took.Microseconds(), 1<<32-1)))
					}
					if ms := resp.GetHeartbeatIntervalMs(); ms > 0 {
						interval = time.Duration(ms) * time.Millisecond
						if measured {
							last.Store(ms)
							for w := widest.Load(); ms > w && !widest.CompareAndSwap(w, ms); w = widest.Load() {
							}
						}
					}
				}
				wait = time.Duration(float64(interval) * (0.9 + 0.2*rand.Float64()))
			}
			mu.Lock()
			lat = append(lat, local...)
			mu.Unlock()
		})
	}
	wg.Wait()
	return fleetResult{Heartbeats: beats.Load(), Errors: errs.Load(), FirstError: firstErr,
		LatencyUS: lat, IntervalMS: widest.Load(), LastIntervalMS: last.Load()}
}

// percentile of sorted microseconds, in milliseconds.
func percentileMS(sorted []uint32, p float64) float64 {
	if len(sorted) == 0 {
		return 0
	}
	i := int(p * float64(len(sorted)-1))
	return float64(sorted[i]) / 1000
}

func mergeResults(rs []fleetResult) fleetResult {
	var m fleetResult
	for _, r := range rs {
		m.Heartbeats += r.Heartbeats
		m.Errors += r.Errors
		if m.FirstError == "" {
			m.FirstError = r.FirstError
		}
		m.LatencyUS = append(m.LatencyUS, r.LatencyUS...)
		m.IntervalMS = max(m.IntervalMS, r.IntervalMS)
		m.LastIntervalMS = max(m.LastIntervalMS, r.LastIntervalMS)
	}
	slices.Sort(m.LatencyUS)
	return m
}
