package bench

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/meshanics/meshanics/internal/agent/apply/file"
	"github.com/meshanics/meshanics/internal/agent/probe"
	"github.com/meshanics/meshanics/internal/agent/reconcile"
	"github.com/meshanics/meshanics/internal/agent/tufclient"
	devicev1 "github.com/meshanics/meshanics/proto/meshanics/device/v1"
)

// applyResult is what the apply benchmark prints (issue 7):
// ratio = baseline_s / agent_s (≥ 0.8 is SPEC §12's target).
type applyResult struct {
	AgentS    float64 `json:"agent_s"`
	BaselineS float64 `json:"baseline_s"`
	Ratio     float64 `json:"ratio"`
}

func runApply(ctx context.Context, args []string, _ io.Reader, stdout, stderr io.Writer) error {
	fs := newFlags("apply", stderr)
	sizeFlag := fs.String("size", "1GiB", "model size (bytes, or with KiB, MiB, GiB)")
	runs := fs.Int("runs", 1, "alternate baseline and agent this many times; the sums are reported")
	asJSON := fs.Bool("json", false, "print one JSON line")
	keep := fs.Bool("keep", false, "keep the work directory")
	cpuprofile := fs.String("cpuprofile", "", "write a CPU profile of the agent path (this process) to `file`")
	binDir := fs.String("bin-dir", "", "`directory` with meshanics-server (default: go build from this module)")
	if err := parse(fs, args); err != nil {
		return err
	}
	size, err := parseSize(*sizeFlag)
	if err != nil || size < 1 || *runs < 1 {
		return usagef("-size: want a positive size like 1GiB, and -runs ≥ 1")
	}
	var bins [3]string
	for i, name := range []string{"openssl", "cp", "sync"} {
		if bins[i], err = exec.LookPath(name); err != nil {
			return fmt.Errorf("the baseline needs %s: %w", name, err)
		}
	}
	dir, cleanup, err := workDir(*keep, stderr)
	if err != nil {
		return err
	}
	defer cleanup()
	logf := func(format string, a ...any) { fmt.Fprintf(stderr, "# "+format+"\n", a...) }
	sb, err := binaries(ctx, *binDir, filepath.Join(dir, "bin"), "meshanics-server")
	if err != nil {
		return err
	}
	cp, err := startControlPlane(ctx, serverOpts{bin: filepath.Join(sb, "meshanics-server"), dir: dir, args: []string{"-log-level", "warn"}})
	if err != nil {
		return err
	}
	defer cp.stop()
	op := newOperator(cp.servers[0].webURL, cp.apiKey, cp.caPEM)

	src := filepath.Join(dir, "model.bin")
	if err := writeModel(src, size); err != nil {
		return err
	}
	tufc, err := applyDevice(ctx, op, cp, filepath.Join(dir, "device"))
	if err != nil {
		return err
	}
	rep := &lastReport{}
	dataDir := filepath.Join(dir, "device")
	rec, err := reconcile.New(reconcile.Options{
		DataDir: dataDir, Fetcher: tufc, Reporter: rep,
		Appliers: map[string]reconcile.Applier{"model": file.Model{Layout: file.Layout{Root: filepath.Join(dataDir, "artifacts")}}},
		Prober:   probe.New(nil),
	})
	if err != nil {
		return err
	}
	logf("load average before: %s", loadAvg())
	var agentT, baseT time.Duration
	for run := range *runs {
		version := strconv.Itoa(run + 1)
		t0 := time.Now()
		art, err := op.publishModel(ctx, "bench-model", version, src)
		if err != nil {
			return err
		}
		logf("published %s@%s (%d bytes) in %.1f s", art.Name, art.Version, art.Length, time.Since(t0).Seconds())
		// Each timed part starts with no dirty pages (the publish just wrote
		// a blob; the previous part wrote a gigabyte): flush them untimed.
		settle := func() error { return exec.CommandContext(ctx, bins[2]).Run() }
		// Baseline: hash with openssl, copy, and make the copy durable (the
		// agent fsyncs what it stages). The copies are kept like the agent
		// keeps versions (current and previous; older ones pruned): on this
		// VM writing a new gigabyte slows down while earlier ones stay on
		// disk, and both sides should see the same.
		baseline := func() (time.Duration, error) {
			if err := settle(); err != nil {
				return 0, err
			}
			dst := filepath.Join(dir, fmt.Sprintf("copy-%d.bin", run))
			t0 := time.Now()
			for _, argv := range [][]string{{bins[0], "dgst", "-sha256", src}, {bins[1], src, dst}, {bins[2], dst}} {
				if b, err := exec.CommandContext(ctx, argv[0], argv[1:]...).CombinedOutput(); err != nil {
					return 0, fmt.Errorf("%s: %v: %s", strings.Join(argv, " "), err, b)
				}
			}
			d := time.Since(t0)
			if run >= 2 {
				os.Remove(filepath.Join(dir, fmt.Sprintf("copy-%d.bin", run-2)))
			}
			return d, nil
		}
		// The agent path: TUF refresh, mutual-TLS download from the real
		// repository with streaming verification, staging, activation.
		as := &devicev1.Assignment{Id: "bench-apply-" + version, RolloutId: "bench", Action: "apply",
			Artifact: &devicev1.Artifact{Kind: "model", Name: art.Name, Version: art.Version,
				TargetPath: art.TargetPath, Sha256: art.SHA256, Length: art.Length}}
		agent := func() (time.Duration, error) {
			// For the log: the fetch and verification alone, into nothing.
			tf := time.Now()
			stopF, err := startProfiles(ctx, os.Getenv("MESHANICS_BENCH_FETCH_PROFILE"), "", "", 0, 0)
			if err != nil {
				return 0, err
			}
			if _, err := tufc.Fetch(ctx, as.Artifact, io.Discard); err != nil {
				return 0, err
			}
			if err := stopF(); err != nil {
				return 0, err
			}
			logf("run %d: fetch + verify alone (no disk) %.2f s", run+1, time.Since(tf).Seconds())
			if err := settle(); err != nil {
				return 0, err
			}
			stopProf, err := startProfiles(ctx, *cpuprofile, "", "", 0, 0)
			if err != nil {
				return 0, err
			}
			rep.reset()
			srv0, _ := sampleProc(cp.pids[0])
			self0, _ := sampleProc(os.Getpid())
			t0 := time.Now()
			err = rec.Reconcile(ctx, []*devicev1.Assignment{as})
			d := time.Since(t0)
			srv1, _ := sampleProc(cp.pids[0])
			self1, _ := sampleProc(os.Getpid())
			if perr := stopProf(); err == nil {
				err = perr
			}
			if err != nil {
				return 0, err
			}
			logf("run %d: reports %s", run+1, strings.Join(rep.reset(), ", "))
			logf("run %d: during the agent path the server used %.0f %% and the agent code %.0f %% of one core", run+1, cpuPercent(srv0, srv1), cpuPercent(self0, self1))
			if st, detail := rep.get(as.Id); st != "healthy" {
				return 0, fmt.Errorf("apply ended %q: %s", st, detail)
			}
			return d, nil
		}
		// Alternate which goes first, so neither always meets the other's
		// fresh gigabyte.
		var at, bt time.Duration
		if run%2 == 0 {
			if bt, err = baseline(); err == nil {
				at, err = agent()
			}
		} else {
			if at, err = agent(); err == nil {
				bt, err = baseline()
			}
		}
		if err != nil {
			return err
		}
		logf("run %d: agent %.2f s, openssl + cp + sync %.2f s", run+1, at.Seconds(), bt.Seconds())
		agentT += at
		baseT += bt
	}
	logf("load average after: %s", loadAvg())
	return emit(stdout, *asJSON, applyResult{AgentS: secs(agentT), BaselineS: secs(baseT), Ratio: round(baseT.Seconds()/agentT.Seconds(), 3)})
}

// applyDevice enrolls one device and builds the agent's TUF client for it
// exactly as cmd/meshanics-agent does (mutual TLS, TLS 1.3, HTTP/2).
func applyDevice(ctx context.Context, op *operator, cp *controlPlane, dataDir string) (*tufclient.Client, error) {
	token, err := op.token(ctx, 1)
	if err != nil {
		return nil, err
	}
	e := newEnroller([]string{op.url}, []string{token}, cp.caPEM)
	defer e.close()
	dev, enr, err := e.enroll(ctx, 0, "bench-apply")
	if err != nil {
		return nil, err
	}
	if len(enr.TrustAnchor) == 0 || string(enr.TrustAnchor) == "null" {
		return nil, errors.New("the server has no trust anchor (was it started with -dev?)")
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(cp.caPEM)
	cert := dev.cert
	hc := &http.Client{Transport: &http.Transport{
		TLSClientConfig: &tls.Config{MinVersion: tls.VersionTLS13, RootCAs: pool, ServerName: "127.0.0.1",
			GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &cert, nil }},
		TLSHandshakeTimeout: 15 * time.Second, ResponseHeaderTimeout: 60 * time.Second,
		MaxIdleConnsPerHost: 2, ForceAttemptHTTP2: true,
	}}
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		return nil, err
	}
	return tufclient.New(tufclient.Config{DataDir: dataDir, Root: enr.TrustAnchor, ServerURL: enr.Config.ArtifactServer, HTTP: hc})
}

// writeModel writes size pseudo-random bytes and syncs them, so that no
// dirty page of the source is flushed inside a timed part.
func writeModel(path string, size int64) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	buf := make([]byte, 1<<20)
	rng := rand.NewChaCha8([32]byte{7})
	for n := int64(0); n < size; {
		rng.Read(buf)
		k := min(int64(len(buf)), size-n)
		if _, err := f.Write(buf[:k]); err != nil {
			f.Close()
			return err
		}
		n += k
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func parseSize(s string) (int64, error) {
	mult := int64(1)
	for _, u := range []struct {
		suffix string
		m      int64
	}{{"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}, {"B", 1}} {
		if v, ok := strings.CutSuffix(s, u.suffix); ok {
			s, mult = v, u.m
			break
		}
	}
	n, err := strconv.ParseInt(strings.TrimSpace(s), 10, 64)
	if err != nil || n < 0 || n > (1<<40)/mult {
		return 0, fmt.Errorf("bad size %q", s)
	}
	return n * mult, nil
}

// lastReport is the reconciler's Reporter: it keeps the last state of each
// assignment.
type lastReport struct {
	mu     sync.Mutex
	state  map[string]string
	detail map[string]string
	since  time.Time
	trail  []string // state +seconds since since, for the log
}

func (r *lastReport) reset() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	t := r.trail
	r.trail, r.since = nil, time.Now()
	return t
}

func (r *lastReport) Report(_ context.Context, id, state, detail string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.state == nil {
		r.state, r.detail = map[string]string{}, map[string]string{}
	}
	r.state[id], r.detail[id] = state, detail
	r.trail = append(r.trail, fmt.Sprintf("%s +%.2fs", state, time.Since(r.since).Seconds()))
	return nil
}

func (r *lastReport) get(id string) (string, string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.state[id], r.detail[id]
}
