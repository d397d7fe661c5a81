package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/meshanics/meshanics/internal/testenv"
)

// TestMain lets the test binary stand in for meshanics-bench when the
// heartbeat benchmark starts worker processes (os.Executable).
func TestMain(m *testing.M) {
	if len(os.Args) > 1 && os.Args[1] == "heartbeat-worker" {
		os.Exit(Main(context.Background(), os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
	}
	code := m.Run()
	if binDir != "" {
		os.RemoveAll(binDir)
	}
	os.Exit(code)
}

var (
	buildOnce sync.Once
	binDir    string
	buildErr  error
)

// serverBin builds meshanics-server once for all smoke tests.
func serverBin(t *testing.T) string {
	t.Helper()
	_, err := exec.LookPath("go")
	testenv.Need(t, err == nil, "the go toolchain (the benchmarks build the binaries)")
	buildOnce.Do(func() {
		binDir, buildErr = os.MkdirTemp("", "meshanics-bench-test-")
		if buildErr == nil {
			_, buildErr = binaries(context.Background(), "", binDir, "meshanics-server")
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binDir
}

// run runs meshanics-bench with args and decodes its JSON line.
func run(t *testing.T, args ...string) map[string]any {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	var stdout, stderr bytes.Buffer
	if code := Main(ctx, args, strings.NewReader(""), &stdout, &stderr); code != 0 {
		t.Fatalf("meshanics-bench %s = exit %d\nstderr:\n%s", strings.Join(args, " "), code, stderr.String())
	}
	var out map[string]any
	if err := json.Unmarshal(stdout.Bytes(), &out); err != nil {
		t.Fatalf("meshanics-bench %s printed %q: %v", strings.Join(args, " "), stdout.String(), err)
	}
	return out
}

func keys(m map[string]any) []string {
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	slices.Sort(ks)
	return ks
}

func sorted(ks ...string) []string { slices.Sort(ks); return ks }

// Smoke tests: tiny scale, so the commands cannot rot. They assert the
// output's shape and that the work happened, never a timing.

func TestHeartbeatSmoke(t *testing.T) {
	bins := serverBin(t)
	// -per-process 12 puts 8 of the 20 devices in a worker process.
	out := run(t, "heartbeat", "-bin-dir", bins, "-devices", "20", "-interval", "1s", "-duration", "2s",
		"-settle", "500ms", "-per-process", "12", "-json")
	want := sorted("devices", "interval_s", "duration_s", "heartbeats", "heartbeats_per_sec", "p50_ms", "p99_ms", "max_ms", "errors", "server_rss_mb", "server_cpu_pct")
	if diff := cmp.Diff(want, keys(out)); diff != "" {
		t.Errorf("heartbeat JSON keys (-want +got):\n%s", diff)
	}
	if out["devices"] != 20.0 || out["heartbeats"].(float64) < 1 || out["errors"] != 0.0 || out["server_rss_mb"].(float64) <= 0 {
		t.Errorf("heartbeat = %v, want 20 devices, heartbeats, no errors, a server RSS", out)
	}
}

func TestHeartbeatBudgetWidens(t *testing.T) {
	bins := serverBin(t)
	// 30 devices on a budget of 1 heartbeat/s want a 30 s interval; the
	// offline rule caps widening of a 5 s base at 10 s.
	out := run(t, "heartbeat", "-bin-dir", bins, "-devices", "30", "-interval", "5s", "-heartbeat-budget", "1",
		"-duration", "6s", "-settle", "5s", "-json")
	if got := out["served_interval_s"]; got != 10.0 {
		t.Errorf("served_interval_s = %v, want 10 (widened from 5 s, capped)", got)
	}
}

func TestRolloutSmoke(t *testing.T) {
	bins := serverBin(t)
	out := run(t, "rollout", "-bin-dir", bins, "-devices", "20", "-interval", "1s", "-max-delay", "200ms", "-json")
	if out["devices"] != 20.0 || out["reports"] != 40.0 || out["errors"] != 0.0 {
		t.Errorf("rollout = %v, want 20 devices, 40 reports (downloading, healthy), no errors", out)
	}
}

func TestApplySmoke(t *testing.T) {
	bins := serverBin(t)
	_, err := exec.LookPath("openssl")
	testenv.Need(t, err == nil, "openssl (the apply baseline)")
	out := run(t, "apply", "-bin-dir", bins, "-size", "1MiB", "-json")
	if diff := cmp.Diff(sorted("agent_s", "baseline_s", "ratio"), keys(out)); diff != "" {
		t.Errorf("apply JSON keys (-want +got):\n%s", diff)
	}
	if out["agent_s"].(float64) <= 0 || out["ratio"].(float64) <= 0 {
		t.Errorf("apply = %v", out)
	}
}

func TestAgentSmoke(t *testing.T) {
	bins := serverBin(t)
	out := run(t, "agent", "-bin-dir", bins, "-duration", "1s", "-warmup", "1s", "-json")
	if diff := cmp.Diff(sorted("binary_mb", "rss_idle_mb", "cpu_idle_pct"), keys(out)); diff != "" {
		t.Errorf("agent JSON keys (-want +got):\n%s", diff)
	}
	if out["binary_mb"].(float64) <= 0 || out["rss_idle_mb"].(float64) <= 0 {
		t.Errorf("agent = %v", out)
	}
}

func TestUsage(t *testing.T) {
	for _, args := range [][]string{{}, {"nope"}, {"heartbeat", "-devices", "0"}, {"apply", "-size", "big"}, {"heartbeat", "extra"}} {
		var stderr bytes.Buffer
		if code := Main(context.Background(), args, strings.NewReader(""), &bytes.Buffer{}, &stderr); code != 2 {
			t.Errorf("Main(%q) = %d, want 2 (usage)", args, code)
		}
	}
}

func TestParseSize(t *testing.T) {
	for in, want := range map[string]int64{"1GiB": 1 << 30, "64MiB": 64 << 20, "4096": 4096, "3KiB": 3072} {
		if got, err := parseSize(in); err != nil || got != want {
			t.Errorf("parseSize(%q) = %d, %v, want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "x", "-1", "1TiB", "99999999GiB"} {
		if _, err := parseSize(in); err == nil {
			t.Errorf("parseSize(%q) succeeded, want error", in)
		}
	}
}

func TestSampleProc(t *testing.T) {
	s, err := sampleProc(os.Getpid())
	if err != nil || s.rssKB <= 0 {
		t.Fatalf("sampleProc(self) = %+v, %v", s, err)
	}
	if _, err := sampleProc(1 << 30); err == nil {
		t.Error("sampleProc(no such pid) succeeded")
	}
}

func TestHeartbeatTargetsRunningServer(t *testing.T) {
	bins := serverBin(t)
	cp, err := startControlPlane(context.Background(), serverOpts{bin: bins + "/meshanics-server", dir: t.TempDir(), args: []string{"-heartbeat-interval", "1s"}})
	if err != nil {
		t.Fatal(err)
	}
	defer cp.stop()
	caFile := t.TempDir() + "/ca.pem"
	if err := os.WriteFile(caFile, cp.caPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	out := run(t, "heartbeat", "-server", cp.servers[0].webURL, "-ca", caFile, "-api-key", cp.apiKey,
		"-server-pid", strconv.Itoa(cp.pids[0]), "-devices", "10", "-interval", "30s", "-duration", "2s", "-settle", "500ms", "-json")
	if out["interval_s"] != 1.0 || out["heartbeats"].(float64) < 1 || out["server_rss_mb"].(float64) <= 0 {
		t.Errorf("heartbeat against a running server = %v, want the server's 1 s interval, heartbeats, its RSS", out)
	}
}

func TestTokenSplitCoversEveryDevice(t *testing.T) {
	for _, tc := range []struct{ n, k int }{{1, 1}, {1000, 1}, {1001, 2}, {18000, 18}, {40000, 32}} {
		k, uses := tokenSplit(tc.n)
		// device i uses token i % k: token 0 is used ⌈n/k⌉ times, the most.
		if k != tc.k || uses*k < tc.n || uses != (tc.n+k-1)/k {
			t.Errorf("tokenSplit(%d) = %d tokens × %d uses, want %d tokens covering every device", tc.n, k, uses, tc.k)
		}
	}
}
