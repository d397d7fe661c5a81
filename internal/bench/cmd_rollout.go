package bench

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	devicev1 "github.com/meshanics/meshanics/proto/meshanics/device/v1"
)

// rolloutResult is what the rollout benchmark prints.
type rolloutResult struct {
	Devices int `json:"devices"`
	Waves   int `json:"waves"`
	// CompletionS is from POST /api/v1/rollouts to the rollout's state
	// "completed".
	CompletionS float64 `json:"completion_s"`
	Reports     int64   `json:"reports"`
	ReportP50MS float64 `json:"report_p50_ms"`
	ReportP99MS float64 `json:"report_p99_ms"`
	// ServerCPUMSPerReport is the server's CPU time over the rollout
	// divided by the reports (heartbeats in the same time included: the
	// engine's cost as the fleet sees it).
	ServerCPUMSPerReport float64 `json:"server_cpu_ms_per_report"`
	Heartbeats           int64   `json:"heartbeats"`
	Errors               int64   `json:"errors"`
}

func runRollout(ctx context.Context, args []string, _ io.Reader, stdout, stderr io.Writer) error {
	fs := newFlags("rollout", stderr)
	devices := fs.Int("devices", 1000, "simulated devices in the rollout's group")
	interval := fs.Duration("interval", 5*time.Second, "the server's heartbeat interval")
	maxDelay := fs.Duration("max-delay", 2*time.Second, "each device reports healthy after a random delay up to this")
	database := fs.String("database", "", "PostgreSQL DSN; empty = SQLite")
	timeout := fs.Duration("timeout", 10*time.Minute, "give up after this long")
	asJSON := fs.Bool("json", false, "print one JSON line")
	keep := fs.Bool("keep", false, "keep the work directory")
	binDir := fs.String("bin-dir", "", "`directory` with meshanics-server (default: go build from this module)")
	if err := parse(fs, args); err != nil {
		return err
	}
	if *devices < 1 || *devices > 18000 || *interval < time.Second || *maxDelay < 0 {
		return usagef("-devices must be 1…18000, -interval at least 1s, -max-delay not negative")
	}
	dir, cleanup, err := workDir(*keep, stderr)
	if err != nil {
		return err
	}
	defer cleanup()
	logf := func(format string, a ...any) { fmt.Fprintf(stderr, "# "+format+"\n", a...) }
	bins, err := binaries(ctx, *binDir, filepath.Join(dir, "bin"), "meshanics-server")
	if err != nil {
		return err
	}
	cp, err := startControlPlane(ctx, serverOpts{bin: filepath.Join(bins, "meshanics-server"), dir: dir, database: *database,
		args: []string{"-heartbeat-interval", interval.String(), "-log-level", "warn"}})
	if err != nil {
		return err
	}
	defer cp.stop()
	op := newOperator(cp.servers[0].webURL, cp.apiKey, cp.caPEM)
	model := filepath.Join(dir, "model.bin")
	if err := writeModel(model, 4096); err != nil {
		return err
	}
	art, err := op.publishModel(ctx, "bench-rollout", "1", model)
	if err != nil {
		return err
	}
	token, err := op.token(ctx, *devices)
	if err != nil {
		return err
	}
	fleet, ready, err := prepareFleet(ctx, fleetSpec{WebURLs: []string{op.url}, CAPEM: cp.caPEM, Tokens: []string{token}, Prefix: "ro", Count: *devices, Driven: true})
	if err != nil {
		return err
	}
	defer fleet.close()
	logf("enrolled %d devices in %.1f s, connected in %.1f s", *devices, ready.EnrollSeconds, ready.ConnectSeconds)
	names := make([]string, len(fleet.devs))
	for i, d := range fleet.devs {
		names[i] = d.name
	}
	if err := createGroup(ctx, op, "bench", names); err != nil {
		return err
	}

	sim := &rolloutSim{maxDelay: *maxDelay, seen: map[string]bool{}}
	simCtx, stopSim := context.WithCancel(ctx)
	var wg sync.WaitGroup
	for _, d := range fleet.devs {
		wg.Go(func() { sim.device(simCtx, d, fleet.interval) })
	}
	defer func() { stopSim(); wg.Wait() }()

	pid := cp.pids[0]
	before, err := sampleProc(pid)
	if err != nil {
		return err
	}
	waves := []map[string]any{{"percent": 1}, {"percent": 10}, {"percent": 50}, {"percent": 100}}
	var created struct {
		ID string `json:"id"`
	}
	t0 := time.Now()
	if err := op.call(ctx, http.MethodPost, "/api/v1/rollouts", map[string]any{
		"artifact": art.Name + "@" + art.Version, "group": "bench",
		// Simulated devices report without probing; the probe is carried.
		"probe":    map[string]any{"type": "file", "target": "/var/lib/app/ready"},
		"strategy": map[string]any{"waves": waves, "max_failure_rate": 0.05},
	}, &created); err != nil {
		return err
	}
	deadline := time.Now().Add(*timeout)
	for {
		var ro struct {
			State string `json:"state"`
		}
		if err := op.call(ctx, http.MethodGet, "/api/v1/rollouts/"+created.ID, nil, &ro); err != nil {
			return err
		}
		if ro.State == "completed" {
			break
		}
		if ro.State != "running" || time.Now().After(deadline) {
			return fmt.Errorf("rollout %s is %s after %v", created.ID, ro.State, time.Since(t0).Round(time.Second))
		}
		if err := sleepCtx(ctx, 200*time.Millisecond); err != nil {
			return err
		}
	}
	took := time.Since(t0)
	after, err := sampleProc(pid)
	if err != nil {
		return err
	}
	// Completed means the server took every last report; wait for their
	// answers to arrive before stopping the devices.
	sim.applies.Wait()
	stopSim()
	wg.Wait()
	lat := sim.latencies()
	reports := int64(len(lat))
	out := rolloutResult{Devices: *devices, Waves: len(waves), CompletionS: secs(took), Reports: reports,
		ReportP50MS: percentileMS(lat, 0.5), ReportP99MS: percentileMS(lat, 0.99),
		Heartbeats: sim.heartbeats.Load(), Errors: sim.errors.Load()}
	if reports > 0 {
		out.ServerCPUMSPerReport = round(float64((after.cpu-before.cpu).Microseconds())/1000/float64(reports), 3)
	}
	if e := sim.firstErr.Load(); e != nil {
		logf("first error: %s", *e)
	}
	logf("load average: %s", loadAvg())
	return emit(stdout, *asJSON, out)
}

// createGroup creates the group and adds members in bodies under the
// API's 64 KiB limit.
func createGroup(ctx context.Context, op *operator, name string, members []string) error {
	const batch = 2000
	first := members[:min(batch, len(members))]
	if err := op.call(ctx, http.MethodPost, "/api/v1/groups", map[string]any{"name": name, "devices": first}, nil); err != nil {
		return err
	}
	for i := len(first); i < len(members); i += batch {
		add := members[i:min(i+batch, len(members))]
		if err := op.call(ctx, http.MethodPost, "/api/v1/groups/"+name+"/members", map[string]any{"add": add}, nil); err != nil {
			return err
		}
	}
	return nil
}

// rolloutSim plays the devices of a rollout: heartbeats at the server's
// interval (±10 %), and for each new assignment "downloading" at once and
// "healthy" after a random delay.
type rolloutSim struct {
	maxDelay   time.Duration
	applies    sync.WaitGroup // one per assignment being reported
	heartbeats atomic.Int64
	errors     atomic.Int64
	firstErr   atomic.Pointer[string]

	mu   sync.Mutex
	lat  []uint32
	seen map[string]bool // assignment ids handled
}

func (s *rolloutSim) fail(err error) {
	s.errors.Add(1)
	msg := err.Error()
	s.firstErr.CompareAndSwap(nil, &msg)
}

func (s *rolloutSim) device(ctx context.Context, d *device, interval time.Duration) {
	wait := time.Duration(rand.Int64N(int64(interval)))
	for {
		if sleepCtx(ctx, wait) != nil {
			return
		}
		resp, err := d.client.Heartbeat(ctx, &devicev1.HeartbeatRequest{})
		if err != nil {
			if ctx.Err() == nil {
				s.fail(err)
			}
			wait = interval
			continue
		}
		s.heartbeats.Add(1)
		if ms := resp.GetHeartbeatIntervalMs(); ms > 0 {
			interval = time.Duration(ms) * time.Millisecond
		}
		for _, as := range resp.GetAssignments() {
			s.mu.Lock()
			isNew := !s.seen[as.GetId()]
			s.seen[as.GetId()] = true
			s.mu.Unlock()
			if isNew {
				s.applies.Go(func() { s.apply(ctx, d, as.GetId()) })
			}
		}
		wait = time.Duration(float64(interval) * (0.9 + 0.2*rand.Float64()))
	}
}

func (s *rolloutSim) apply(ctx context.Context, d *device, id string) {
	started := time.Now()
	if err := s.report(ctx, d, id, "downloading", started); err != nil {
		return
	}
	if s.maxDelay > 0 && sleepCtx(ctx, time.Duration(rand.Int64N(int64(s.maxDelay)))) != nil {
		return
	}
	_ = s.report(ctx, d, id, "healthy", started)
}

func (s *rolloutSim) report(ctx context.Context, d *device, id, state string, started time.Time) error {
	t0 := time.Now()
	_, err := d.client.ReportArtifactStatus(ctx, &devicev1.ReportArtifactStatusRequest{
		AssignmentId: id, State: state, StartedUnixMs: started.UnixMilli(), ReportedUnixMs: t0.UnixMilli()})
	if err != nil {
		if ctx.Err() == nil {
			s.fail(fmt.Errorf("%s report %s: %w", d.name, state, err))
		}
		return err
	}
	us := uint32(min(time.Since(t0).Microseconds(), 1<<32-1))
	s.mu.Lock()
	s.lat = append(s.lat, us)
	s.mu.Unlock()
	return nil
}

func (s *rolloutSim) latencies() []uint32 {
	s.mu.Lock()
	defer s.mu.Unlock()
	l := slices.Clone(s.lat)
	slices.Sort(l)
	return l
}
