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
	// Driven: the caller drives the devices itself (the rollout
	// benchmark); they do not heartbeat on their own from registration.
	Driven bool `json:"driven"`
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

// simFleet is a running share of simulated devices. Each device
// heartbeats from the moment it has registered, like an agent: a device
// that connected early in a long connect phase must not sit idle until
// the measurement starts (its connection would see keepalive pings instead
// of heartbeats, and the replica would not count it online). Only the
// heartbeats of the measured window count.
type simFleet struct {
	spec     fleetSpec
	devs     []*device
	interval time.Duration

	loops   sync.WaitGroup
	stop    context.Context // ends every device loop
	release context.CancelFunc
	window  atomic.Pointer[window] // nil until heartbeat starts the run

	beats, errs  atomic.Int64
	widest, last atomic.Int64
	mu           sync.Mutex
	lat          []uint32 // guarded by mu
	firstErr     string   // guarded by mu
}

// window is the measured part of a run: heartbeats started in
// [measureFrom, end) count; a device loop stops at end.
type window struct{ measureFrom, end time.Time }

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
	f.stop, f.release = context.WithCancel(ctx)
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
	registered := f.run
	if spec.Driven {
		registered = nil
	}
	conc := spec.ConnectConc
	if conc <= 0 {
		conc = 64
	}
	if f.interval, ready.ConnectRetries, err = connectAll(ctx, devs, addrs, spec.CAPEM, conc, registered); err != nil {
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
	f.release()
	f.loops.Wait()
	for _, d := range f.devs {
		if d != nil {
			d.close()
		}
	}
}

// heartbeat measures the share for spec.Duration after spec.Settle: every
// device keeps heartbeating like the agent does (a heartbeat every
// server-set interval × [0.9, 1.1), the first at a random point of the
// first interval after it registered), and the loops stop at the end.
func (f *simFleet) heartbeat(ctx context.Context) fleetResult {
	measureFrom := time.Now().Add(f.spec.Settle)
	f.window.Store(&window{measureFrom: measureFrom, end: measureFrom.Add(f.spec.Duration)})
	done := make(chan struct{})
	go func() { f.loops.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		f.release()
		<-done
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	return fleetResult{Heartbeats: f.beats.Load(), Errors: f.errs.Load(), FirstError: f.firstErr,
		LatencyUS: f.lat, IntervalMS: f.widest.Load(), LastIntervalMS: f.last.Load()}
}

// run starts d's heartbeat loop; interval is the one Register returned.
func (f *simFleet) run(d *device, interval time.Duration) {
	f.loops.Go(func() {
		local := make([]uint32, 0, 8)
		defer func() {
			f.mu.Lock()
			f.lat = append(f.lat, local...)
			f.mu.Unlock()
		}()
		wait := time.Duration(rand.Int64N(int64(interval)))
		for {
			t := time.NewTimer(wait)
			select {
			case <-f.stop.Done():
				t.Stop()
				return
			case <-t.C:
			}
			w := f.window.Load()
			if w != nil && !time.Now().Before(w.end) {
				return
			}
			cctx, cancel := context.WithTimeout(f.stop, 20*time.Second)
			t0 := time.Now()
			resp, err := d.client.Heartbeat(cctx, &devicev1.HeartbeatRequest{})
			took := time.Since(t0)
			cancel()
			measured := w != nil && !t0.Before(w.measureFrom)
			switch {
			case err != nil && measured:
				if f.errs.Add(1) == 1 {
					f.mu.Lock()
					f.firstErr = fmt.Sprintf("%s: %v", d.name, err)
					f.mu.Unlock()
				}
			case err == nil:
				if measured {
					f.beats.Add(1)
					local = append(local, uint32(min(took.Microseconds(), 1<<32-1)))
				}
				if ms := resp.GetHeartbeatIntervalMs(); ms > 0 {
					interval = time.Duration(ms) * time.Millisecond
					if measured {
						f.last.Store(ms)
						for w := f.widest.Load(); ms > w && !f.widest.CompareAndSwap(w, ms); w = f.widest.Load() {
						}
					}
				}
			}
			wait = time.Duration(float64(interval) * (0.9 + 0.2*rand.Float64()))
		}
	})
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
