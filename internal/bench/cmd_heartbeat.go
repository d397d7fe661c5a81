package bench

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// heartbeatResult is the JSON the heartbeat benchmark prints (issue 7).
type heartbeatResult struct {
	Devices          int     `json:"devices"`
	IntervalS        float64 `json:"interval_s"`
	DurationS        float64 `json:"duration_s"`
	Heartbeats       int64   `json:"heartbeats"`
	HeartbeatsPerSec float64 `json:"heartbeats_per_sec"`
	P50MS            float64 `json:"p50_ms"`
	P99MS            float64 `json:"p99_ms"`
	MaxMS            float64 `json:"max_ms"`
	Errors           int64   `json:"errors"`
	ServerRSSMB      float64 `json:"server_rss_mb"`
	ServerCPUPct     float64 `json:"server_cpu_pct"`
	// ServedIntervalS is the widest interval the server handed out in the
	// window; printed only with -heartbeat-budget.
	ServedIntervalS *float64 `json:"served_interval_s,omitempty"`
}

type heartbeatFlags struct {
	devices    int
	interval   time.Duration
	duration   time.Duration
	database   string
	replicas   int
	budget     float64
	perProcess int
	asJSON     bool
	keep       bool
	binDir     string
	server     string
	caFile     string
	apiKey     string
	serverPID  int
	prefix     string
	settle     time.Duration
	serverProf string
	selfProf   string
}

// simGCPercent is the GOGC of a simulator that spans several processes,
// unless the environment sets one: a share of 18,000 devices holds about
// 1 GB live (connections, keys), and the default 100 would let each
// process grow to twice that, which a 100,000-device run on one machine
// cannot afford beside its servers. A one-process simulator and the
// servers keep the default.
const simGCPercent = 50

func simulatorGC() {
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(simGCPercent)
	}
}

func runHeartbeat(ctx context.Context, args []string, _ io.Reader, stdout, stderr io.Writer) error {
	stderr = &lockedWriter{w: stderr} // worker processes write to it too
	var f heartbeatFlags
	fs := newFlags("heartbeat", stderr)
	fs.IntVar(&f.devices, "devices", 1000, "simulated devices")
	fs.DurationVar(&f.interval, "interval", 30*time.Second, "base heartbeat interval of the started server (its -heartbeat-interval); with -server, the server's own")
	fs.DurationVar(&f.duration, "duration", 60*time.Second, "measured heartbeat window, after every device is connected")
	fs.StringVar(&f.database, "database", "", "PostgreSQL DSN for the started server(s); empty = SQLite")
	fs.IntVar(&f.replicas, "replicas", 1, "meshanics-server replicas to start (more than one needs -database); devices are spread over them")
	fs.Float64Var(&f.budget, "heartbeat-budget", 0, "the server's -heartbeat-budget (heartbeats/s per replica; 0 = off)")
	fs.IntVar(&f.perProcess, "per-process", 18000, "devices per simulator process (each connection is a descriptor; the limit here is 20,000 per process)")
	fs.BoolVar(&f.asJSON, "json", false, "print one JSON line")
	fs.BoolVar(&f.keep, "keep", false, "keep the work directory (server data and logs)")
	fs.StringVar(&f.binDir, "bin-dir", "", "`directory` with meshanics-server (default: go build from this module)")
	fs.StringVar(&f.server, "server", "", "target this running server's web `URL` instead of starting one (needs -ca and -api-key)")
	fs.StringVar(&f.caFile, "ca", "", "fleet CA `file` of -server")
	fs.StringVar(&f.apiKey, "api-key", "", "operator API key of -server (needs enrollment.write)")
	fs.IntVar(&f.serverPID, "server-pid", 0, "process id of -server, for its RSS and CPU (0 = not measured)")
	fs.StringVar(&f.prefix, "prefix", "", "device name prefix (default: bench-<random>)")
	fs.DurationVar(&f.settle, "settle", 15*time.Second, "heartbeat this long before measuring (the registration burst of connecting settles)")
	fs.StringVar(&f.serverProf, "server-cpuprofile", "", "write a CPU profile of the (first started) server over the window to `file`")
	fs.StringVar(&f.selfProf, "cpuprofile", "", "write a CPU profile of this simulator process over the window to `file`")
	if err := parse(fs, args); err != nil {
		return err
	}
	switch {
	case f.devices < 1 || f.devices > 100000:
		return usagef("-devices must be 1…100000")
	case f.interval < time.Second || f.duration <= 0:
		return usagef("-interval must be at least 1s and -duration positive")
	case f.perProcess < 1:
		return usagef("-per-process must be positive")
	case f.server != "" && (f.caFile == "" || f.apiKey == ""):
		return usagef("-server needs -ca and -api-key")
	}
	if f.prefix == "" {
		b := make([]byte, 3)
		rand.Read(b)
		f.prefix = "bench-" + hex.EncodeToString(b)
	}
	dir, cleanup, err := workDir(f.keep, stderr)
	if err != nil {
		return err
	}
	defer cleanup()
	logf := func(format string, a ...any) { fmt.Fprintf(stderr, "# "+format+"\n", a...) }

	var (
		webURL    string
		webURLs   []string
		apiKey    = f.apiKey
		caPEM     []byte
		addrs     []string
		pids      []int
		pprofAddr string
	)
	if f.server != "" {
		webURL = strings.TrimRight(f.server, "/")
		webURLs = []string{webURL}
		if caPEM, err = os.ReadFile(f.caFile); err != nil {
			return err
		}
		if f.serverPID > 0 {
			pids = []int{f.serverPID}
		}
	} else {
		bins, err := binaries(ctx, f.binDir, filepath.Join(dir, "bin"), "meshanics-server")
		if err != nil {
			return err
		}
		extra := []string{"-heartbeat-interval", f.interval.String(), "-log-level", "warn"}
		if f.serverProf != "" {
			ports, err := freePorts(1)
			if err != nil {
				return err
			}
			pprofAddr = fmt.Sprintf("127.0.0.1:%d", ports[0])
			extra = append(extra, "-pprof-addr", pprofAddr)
		}
		if f.budget > 0 {
			extra = append(extra, "-heartbeat-budget", strconv.FormatFloat(f.budget, 'f', -1, 64))
		}
		cp, err := startControlPlane(ctx, serverOpts{bin: filepath.Join(bins, "meshanics-server"), dir: dir,
			database: f.database, replicas: f.replicas, args: extra})
		if err != nil {
			return err
		}
		defer cp.stop()
		webURL, apiKey, caPEM, pids = cp.servers[0].webURL, cp.apiKey, cp.caPEM, cp.pids
		for _, s := range cp.servers {
			addrs = append(addrs, s.deviceAddr)
			webURLs = append(webURLs, s.webURL)
		}
	}
	op := newOperator(webURL, apiKey, caPEM)
	logf("load average before: %s", loadAvg())

	// Shares: the first runs in this process, the others in worker
	// processes (each connection is a descriptor on both ends).
	var specs []fleetSpec
	procs := (f.devices + f.perProcess - 1) / f.perProcess
	if procs > 1 {
		simulatorGC()
	}
	for from := 0; from < f.devices; from += f.perProcess {
		n := min(f.perProcess, f.devices-from)
		tokens, err := mintTokens(ctx, op, n)
		if err != nil {
			return err
		}
		specs = append(specs, fleetSpec{WebURLs: webURLs, CAPEM: caPEM, Tokens: tokens, Prefix: f.prefix,
			From: from, Count: n, DeviceAddrs: addrs, Duration: f.duration, Settle: f.settle, ConnectConc: max(8, 64/procs)})
	}
	workers := make([]*worker, len(specs)-1)
	for i := range workers {
		if workers[i], err = startWorker(ctx, specs[i+1], stderr); err != nil {
			return err
		}
		defer workers[i].stop()
	}
	fleet, ready, err := prepareFleet(ctx, specs[0])
	if err != nil {
		return err
	}
	defer fleet.close()
	readies := []fleetReady{ready}
	for _, w := range workers {
		r, err := w.ready()
		if err != nil {
			return err
		}
		readies = append(readies, r)
	}
	if f.server != "" && readies[0].IntervalMS > 0 {
		// A targeted server sets its own interval; report that one.
		f.interval = time.Duration(readies[0].IntervalMS) * time.Millisecond
		logf("the server hands out a %v heartbeat interval (-interval applies only to a started server)", f.interval)
	}
	var enrollS, connectS float64
	var retries int64
	for _, r := range readies {
		enrollS, connectS = max(enrollS, r.EnrollSeconds), max(connectS, r.ConnectSeconds)
		retries += r.ConnectRetries
	}
	logf("enrolled %d devices in %.1f s (%.0f/s) through POST /api/v1/enroll; connected and registered in %.1f s (%d retries); %d simulator process(es), %d server(s)",
		f.devices, enrollS, float64(f.devices)/enrollS, connectS, retries, len(specs), max(len(pids), 1))

	// The servers' CPU is measured over the window, after the settle.
	before := make([]procSample, len(pids))
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		time.Sleep(f.settle)
		for i, pid := range pids {
			before[i], _ = sampleProc(pid)
		}
	}()
	for _, w := range workers {
		if err := w.start(); err != nil {
			return err
		}
	}
	stopProfiles, err := startProfiles(ctx, f.selfProf, f.serverProf, pprofAddr, f.settle, f.duration)
	if err != nil {
		return err
	}
	self0, _ := sampleProc(os.Getpid())
	results := []fleetResult{fleet.heartbeat(ctx)}
	self1, _ := sampleProc(os.Getpid())
	logf("this simulator process: %.0f %% CPU, %.0f MB RSS over the window (%d devices)", cpuPercent(self0, self1), float64(self1.rssKB)/1024, specs[0].Count)
	if err := stopProfiles(); err != nil {
		return err
	}
	for _, w := range workers {
		r, err := w.result()
		if err != nil {
			return err
		}
		results = append(results, r)
	}
	m := mergeResults(results)
	out := heartbeatResult{
		Devices: f.devices, IntervalS: f.interval.Seconds(), DurationS: f.duration.Seconds(),
		Heartbeats: m.Heartbeats, HeartbeatsPerSec: round(float64(m.Heartbeats)/f.duration.Seconds(), 1),
		P50MS: percentileMS(m.LatencyUS, 0.50), P99MS: percentileMS(m.LatencyUS, 0.99), MaxMS: percentileMS(m.LatencyUS, 1),
		Errors: m.Errors,
	}
	<-sampled
	for i, pid := range pids {
		after, err := sampleProc(pid)
		if err != nil {
			return fmt.Errorf("server %d: %w", pid, err)
		}
		out.ServerRSSMB += float64(after.rssKB) / 1024
		out.ServerCPUPct += cpuPercent(before[i], after)
		if len(pids) > 1 {
			logf("replica %d: %.0f MB RSS, %.1f %% CPU", i, float64(after.rssKB)/1024, cpuPercent(before[i], after))
		}
	}
	out.ServerRSSMB, out.ServerCPUPct = round(out.ServerRSSMB, 1), round(out.ServerCPUPct, 1)
	if f.budget > 0 {
		s := float64(m.IntervalMS) / 1000
		out.ServedIntervalS = &s
		logf("served interval: %.0f s at the end of the window, widest %.0f s (base %v, budget %g/s per replica)",
			float64(m.LastIntervalMS)/1000, s, f.interval, f.budget)
	}
	if m.FirstError != "" {
		logf("first error: %s", m.FirstError)
	}
	logf("load average after: %s", loadAvg())
	return emit(stdout, f.asJSON, out)
}

// devicesPerToken is how many devices of a share enroll with one bulk
// token: a token's uses are spent one at a time under its row lock (on
// PostgreSQL with several replicas about 100–190/s for one token), so a
// mass enrollment uses several, as an operator enrolling a large fleet
// would (docs/benchmarks.md).
const devicesPerToken = 1000

// mintTokens mints the bulk tokens for a share of n devices: device i of
// the share uses token i % len(tokens), so each needs ⌈n / len⌉ uses.
func mintTokens(ctx context.Context, op *operator, n int) ([]string, error) {
	k, uses := tokenSplit(n)
	tokens := make([]string, k)
	for i := range tokens {
		t, err := op.token(ctx, uses)
		if err != nil {
			return nil, err
		}
		tokens[i] = t
	}
	return tokens, nil
}

// tokenSplit says how many tokens a share of n devices gets (one per
// devicesPerToken, 1…32) and how many uses each needs.
func tokenSplit(n int) (k, uses int) {
	k = max(1, min(32, (n+devicesPerToken-1)/devicesPerToken))
	return k, (n + k - 1) / k
}

// runHeartbeatWorker is one simulator process of a large fleet: it reads
// its fleetSpec from stdin, enrolls and connects, prints fleetReady, waits
// for "go", runs the heartbeats and prints fleetResult.
func runHeartbeatWorker(ctx context.Context, _ []string, stdin io.Reader, stdout, _ io.Writer) error {
	simulatorGC()
	in := bufio.NewReader(stdin)
	line, err := in.ReadBytes('\n')
	if err != nil {
		return err
	}
	var spec fleetSpec
	if err := json.Unmarshal(line, &spec); err != nil {
		return err
	}
	fleet, ready, err := prepareFleet(ctx, spec)
	if err != nil {
		return err
	}
	defer fleet.close()
	enc := json.NewEncoder(stdout)
	if err := enc.Encode(ready); err != nil {
		return err
	}
	if _, err := in.ReadString('\n'); err != nil {
		return err
	}
	return enc.Encode(fleet.heartbeat(ctx))
}

// worker is a heartbeat-worker child process.
type worker struct {
	cmd *exec.Cmd
	in  io.WriteCloser
	out *bufio.Reader
}

func startWorker(ctx context.Context, spec fleetSpec, stderr io.Writer) (*worker, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	cmd := exec.CommandContext(ctx, exe, "heartbeat-worker")
	cmd.Stderr = stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	in, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start worker: %w", err)
	}
	w := &worker{cmd: cmd, in: in, out: bufio.NewReaderSize(out, 1<<20)}
	if err := json.NewEncoder(in).Encode(spec); err != nil {
		w.stop()
		return nil, err
	}
	return w, nil
}

func (w *worker) read(v any) error {
	line, err := w.out.ReadBytes('\n')
	if err != nil {
		return fmt.Errorf("worker %d: %w (see its errors above)", w.cmd.Process.Pid, err)
	}
	return json.Unmarshal(line, v)
}

func (w *worker) ready() (fleetReady, error) {
	var r fleetReady
	return r, w.read(&r)
}

func (w *worker) start() error {
	_, err := io.WriteString(w.in, "go\n")
	return err
}

func (w *worker) result() (fleetResult, error) {
	var r fleetResult
	return r, w.read(&r)
}

func (w *worker) stop() {
	w.in.Close()
	done := make(chan error, 1)
	go func() { done <- w.cmd.Wait() }()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		_ = w.cmd.Process.Kill()
		<-done
	}
}

// lockedWriter serialises writes from several goroutines.
type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}
