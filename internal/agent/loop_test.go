package agent

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/meshanics/meshanics/internal/agent/config"
	"github.com/meshanics/meshanics/internal/agent/identity"
	"github.com/meshanics/meshanics/internal/agent/identity/testca"
	"github.com/meshanics/meshanics/internal/agent/logring"
	devicev1 "github.com/meshanics/meshanics/proto/meshanics/device/v1"
)

// start runs the agent in the bubble and returns a stop function that
// cancels it and returns Run's error.
func start(a *Agent) (stop func() error, done <-chan error) {
	ctx, cancel := context.WithCancel(context.Background())
	ch := make(chan error, 1)
	go func() { ch <- a.Run(ctx) }()
	return func() error { cancel(); return <-ch }, ch
}

func TestJitterAndBackoffBounds(t *testing.T) {
	for _, r := range []float64{0, 0.25, 0.5, 0.999999} {
		if j := Jitter(30*time.Second, r); j < 27*time.Second || j > 33*time.Second {
			t.Errorf("Jitter(30s, %v) = %v, want within ±10%%", r, j)
		}
		prevLow := time.Duration(0)
		for n := 1; n <= 20; n++ {
			b := Backoff(n, r)
			if b < BackoffMin || b > BackoffMax {
				t.Errorf("Backoff(%d, %v) = %v, want within [1s, 5m]", n, r, b)
			}
			low := Backoff(n, 0)
			if low < prevLow {
				t.Errorf("Backoff(%d, 0) = %v < Backoff(%d, 0) = %v: not growing", n, low, n-1, prevLow)
			}
			prevLow = low
		}
	}
	if got := Backoff(30, 1); got != BackoffMax {
		t.Errorf("Backoff(30, 1) = %v, want the 5m cap", got)
	}
	// At the cap retries must still be spread, or a fleet that lost its
	// server retries in lockstep.
	if lo, hi := Backoff(30, 0), Backoff(30, 0.5); lo >= hi || lo < 4*time.Minute {
		t.Errorf("Backoff(30, 0), Backoff(30, 0.5) = %v, %v; want jitter below the cap, from 4m", lo, hi)
	}
}

func TestHeartbeatsFollowServerIntervalWithJitter(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ca := testca.New(t)
		f := newFakeCP(ca)
		f.interval = 20 * time.Second
		dev := newDevice(t, ca, time.Now().Add(-time.Hour), 90*24*time.Hour)
		var dials int
		a := New(dev.cfg, testDeps(f, &dials, nil))
		stop, _ := start(a)
		time.Sleep(10 * time.Minute)
		if err := stop(); err != nil {
			t.Fatalf("Run() = %v after cancel, want nil", err)
		}
		f.mu.Lock()
		defer f.mu.Unlock()
		if f.registers != 1 {
			t.Errorf("Register called %d times, want 1", f.registers)
		}
		if f.lastReg.GetHardware().GetModel() != "fixture" || f.lastReg.GetTags()["site"] != "lab" || f.lastReg.GetAgentVersion() != "test" {
			t.Errorf("Register request = %v", f.lastReg)
		}
		// beats[0] is Register, beats[1] the first heartbeat right after.
		gaps := 0
		distinct := map[time.Duration]bool{}
		for i := 2; i < len(f.beats); i++ {
			gap := f.beats[i].Sub(f.beats[i-1])
			if gap < 18*time.Second || gap > 22*time.Second {
				t.Errorf("heartbeat gap %d = %v, want 20s ±10%%", i, gap)
			}
			distinct[gap] = true
			gaps++
		}
		if gaps < 25 || len(distinct) < 5 {
			t.Errorf("%d heartbeats with %d distinct gaps in 10m: want ~30, jittered", gaps, len(distinct))
		}
	})
}

func TestUnreachableServerBacksOffExponentiallyAndRecovers(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ca := testca.New(t)
		f := newFakeCP(ca)
		f.setErr(status.Error(codes.Unavailable, "connection refused"))
		dev := newDevice(t, ca, time.Now().Add(-time.Hour), 90*24*time.Hour)
		var dials int
		a := New(dev.cfg, testDeps(f, &dials, nil))
		stop, _ := start(a)
		time.Sleep(40 * time.Minute)

		f.mu.Lock()
		attempts := append([]time.Time(nil), f.beats...)
		f.mu.Unlock()
		for i := 1; i < len(attempts); i++ {
			gap := attempts[i].Sub(attempts[i-1])
			nominal := min(BackoffMin<<(i-1), BackoffMax)
			lo, hi := max(nominal*8/10, BackoffMin), min(nominal*12/10, BackoffMax)
			if gap < lo || gap > hi {
				t.Errorf("retry gap %d = %v, want within [%v, %v]", i, gap, lo, hi)
			}
		}
		if n := len(attempts); n < 12 || n > 20 {
			t.Errorf("%d attempts in 40m of outage, want ~15 (1s doubling to a 5m cap)", n)
		}

		// The server comes back: within one backoff the agent registers
		// and heartbeats on the normal interval again.
		f.setErr(nil)
		time.Sleep(BackoffMax + time.Second)
		f.mu.Lock()
		regs := f.registers
		f.mu.Unlock()
		if regs != 1 {
			t.Fatalf("registers after recovery = %d, want 1", regs)
		}
		time.Sleep(time.Minute)
		stop()
		f.mu.Lock()
		defer f.mu.Unlock()
		last := f.beats[len(f.beats)-1].Sub(f.beats[len(f.beats)-2])
		if last > 11*time.Second {
			t.Errorf("after recovery heartbeat gap = %v, want the 10s interval", last)
		}
		// Nothing was wiped by the outage.
		for _, p := range []string{dev.cfg.KeyFile, dev.cfg.CertFile, dev.cfg.CAFile} {
			if _, err := os.Stat(p); err != nil {
				t.Errorf("%s after outage: %v", p, err)
			}
		}
	})
}

// After an outage or overload (Unavailable, DeadlineExceeded,
// ResourceExhausted) the agent resumes with a heartbeat, which writes
// nothing on the server; after any other failure it registers again.
func TestReRegistersOnlyAfterNonTransientFailures(t *testing.T) {
	for _, tc := range []struct {
		code codes.Code
		want int
	}{
		{codes.Unavailable, 1}, {codes.DeadlineExceeded, 1}, {codes.ResourceExhausted, 1},
		{codes.Internal, 2}, {codes.NotFound, 2},
	} {
		t.Run(tc.code.String(), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				ca := testca.New(t)
				f := newFakeCP(ca)
				dev := newDevice(t, ca, time.Now().Add(-time.Hour), 90*24*time.Hour)
				var dials int
				a := New(dev.cfg, testDeps(f, &dials, nil))
				stop, _ := start(a)
				time.Sleep(time.Minute)
				f.setErr(status.Error(tc.code, "trouble"))
				time.Sleep(time.Minute)
				f.setErr(nil)
				time.Sleep(BackoffMax + time.Minute)
				if err := stop(); err != nil {
					t.Fatalf("Run() = %v after cancel, want nil", err)
				}
				f.mu.Lock()
				defer f.mu.Unlock()
				if f.registers != tc.want {
					t.Errorf("after %v failures the agent registered %d times, want %d", tc.code, f.registers, tc.want)
				}
			})
		})
	}
}

func TestRenewalWhenAThirdOfLifeLeft(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ca := testca.New(t)
		f := newFakeCP(ca)
		f.interval = time.Minute
		f.certTTL = 90 * time.Minute
		dev := newDevice(t, ca, time.Now(), 90*time.Minute)
		var dials int
		a := New(dev.cfg, testDeps(f, &dials, nil))
		stop, _ := start(a)

		time.Sleep(55 * time.Minute) // 35 min left > 30: not yet
		f.mu.Lock()
		early := f.renewals
		f.mu.Unlock()
		if early != 0 {
			t.Errorf("renewed %d times with more than a third of life left", early)
		}
		time.Sleep(10 * time.Minute) // 25 min left: renew
		f.mu.Lock()
		renewed := f.renewals
		f.mu.Unlock()
		if renewed != 1 {
			t.Fatalf("renewals = %d at 2/3 of life, want 1", renewed)
		}
		onDisk, _ := os.ReadFile(dev.cfg.CertFile)
		if string(onDisk) == string(dev.certPEM) {
			t.Error("device.crt not replaced after renewal")
		}
		if trust, _ := os.ReadFile(filepath.Join(dev.trustDir, "client.cert")); string(trust) != string(onDisk) {
			t.Error("runtime trust dir still holds the old client certificate")
		}
		if dials != 2 {
			t.Errorf("dials = %d, want 2 (a fresh connection presents the renewed certificate)", dials)
		}
		certs, _ := identity.ParseCerts(onDisk)
		if !identity.SameKey(certs[0], dev.key) {
			t.Error("renewed certificate is for another key")
		}
		time.Sleep(30 * time.Minute) // the new cert has 2/3 of its life left
		stop()
		if f.renewals != 1 {
			t.Errorf("renewals = %d after a fresh certificate, want still 1", f.renewals)
		}
	})
}

func TestDecommissionSignalWipesAndExits77(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ca := testca.New(t)
		f := newFakeCP(ca)
		dev := newDevice(t, ca, time.Now().Add(-time.Hour), 90*24*time.Hour)
		dev.cfg.ArtifactServer, dev.cfg.TUFRoot = "https://cp.test:9444", filepath.Join(dev.configDir, "root.json")
		var dials int
		a := New(dev.cfg, testDeps(f, &dials, nil))
		_, done := start(a)
		time.Sleep(time.Minute)
		f.setErr(decommissionErr(t))
		time.Sleep(time.Minute)
		var err error
		select {
		case err = <-done:
		default:
			t.Fatal("agent still running a minute after the decommission signal")
		}
		if !errors.Is(err, ErrDecommissioned) || ExitCode(err) != 77 {
			t.Fatalf("Run() = %v (exit %d), want ErrDecommissioned (77)", err, ExitCode(err))
		}
		for _, p := range []string{
			dev.cfg.KeyFile, dev.cfg.CertFile, dev.cfg.CAFile, dev.cfg.TUFRoot, dev.trustDir,
			filepath.Join(dev.dataDir, "update"), filepath.Join(dev.dataDir, "tuf"),
			filepath.Join(dev.configDir, "trust-dirs.json"),
		} {
			if _, err := os.Lstat(p); err == nil {
				t.Errorf("%s survived decommission", p)
			}
		}
		if _, err := os.Stat(dev.artifactsCurrentFile); err != nil {
			t.Errorf("running payload removed by decommission: %v", err)
		}
		// A restart without credentials is a configuration error (78).
		err = New(dev.cfg, testDeps(f, &dials, nil)).Run(context.Background())
		if ExitCode(err) != 78 || !config.IsError(err) {
			t.Errorf("Run() after decommission = %v (exit %d), want a config error (78)", err, ExitCode(err))
		}
	})
}

func TestWeakerErrorsNeverWipe(t *testing.T) {
	for name, e := range map[string]error{
		"plain permission denied": status.Error(codes.PermissionDenied, "device decommissioned"),
		"unauthenticated":         status.Error(codes.Unauthenticated, "certificate superseded"),
		"tls failure":             status.Error(codes.Unavailable, "authentication handshake failed: x509: certificate signed by unknown authority"),
		"timeout":                 status.Error(codes.DeadlineExceeded, "context deadline exceeded"),
	} {
		t.Run(name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				ca := testca.New(t)
				f := newFakeCP(ca)
				f.setErr(e)
				dev := newDevice(t, ca, time.Now().Add(-time.Hour), 90*24*time.Hour)
				var dials int
				a := New(dev.cfg, testDeps(f, &dials, nil))
				stop, done := start(a)
				time.Sleep(30 * time.Minute)
				select {
				case err := <-done:
					t.Fatalf("Run() ended with %v on %s; want it to keep retrying", err, name)
				default:
				}
				if err := stop(); err != nil {
					t.Errorf("Run() = %v on cancel, want nil (exit 0)", err)
				}
				for _, p := range []string{dev.cfg.KeyFile, dev.cfg.CertFile, dev.cfg.CAFile, dev.trustDir, filepath.Join(dev.dataDir, "update")} {
					if _, err := os.Stat(p); err != nil {
						t.Errorf("%s after %s: %v", p, name, err)
					}
				}
			})
		})
	}
}

func TestOTANotConfiguredReportsFailedOnce(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ca := testca.New(t)
		f := newFakeCP(ca)
		f.assignments = []*devicev1.Assignment{
			{Id: "as1", Action: "apply", Artifact: &devicev1.Artifact{Kind: "model", Name: "m", Version: "1"}},
			{Id: "as2", Action: "revert"},
		}
		dev := newDevice(t, ca, time.Now().Add(-time.Hour), 90*24*time.Hour)
		var dials int
		stop, _ := start(New(dev.cfg, testDeps(f, &dials, nil)))
		time.Sleep(5 * time.Minute)
		stop()
		f.mu.Lock()
		defer f.mu.Unlock()
		got := map[string]string{}
		for _, r := range f.reports {
			if _, dup := got[r.GetAssignmentId()]; dup {
				t.Errorf("assignment %s reported again", r.GetAssignmentId())
			}
			got[r.GetAssignmentId()] = r.GetState() + ": " + r.GetDetail()
			if r.GetReportedUnixMs() == 0 || r.GetStartedUnixMs() == 0 {
				t.Errorf("report without timestamps: %v", r)
			}
		}
		if got["as1"] != "failed: OTA not configured" || got["as2"] != "revert_failed: OTA not configured" {
			t.Errorf("reports = %v", got)
		}
	})
}

func TestLogPullSendsRingOutsideSystemd(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ca := testca.New(t)
		f := newFakeCP(ca)
		f.logReqs = []*devicev1.LogRequest{{RequestId: "lr1", MaxLines: 500}}
		dev := newDevice(t, ca, time.Now().Add(-time.Hour), 90*24*time.Hour)
		ring := logring.NewRing(100)
		d := testDeps(f, new(int), ring)
		d.Log = ringLogger(ring)
		stop, _ := start(New(dev.cfg, d))
		time.Sleep(time.Minute)
		stop()
		f.mu.Lock()
		defer f.mu.Unlock()
		if len(f.uploads) != 1 {
			t.Fatalf("uploads = %d, want exactly one for a repeated request", len(f.uploads))
		}
		text := gunzip(t, f.uploads["lr1"])
		if !strings.Contains(text, "registered") {
			t.Errorf("uploaded ring = %q, want the agent's own log lines", text)
		}
	})
}

func TestLogPullReadsJournalUnderSystemd(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ca := testca.New(t)
		f := newFakeCP(ca)
		f.logReqs = []*devicev1.LogRequest{{RequestId: "lr2", SinceUnix: 1700000000, MaxLines: 7}}
		dev := newDevice(t, ca, time.Now().Add(-time.Hour), 90*24*time.Hour)
		d := testDeps(f, new(int), logring.NewRing(10))
		d.Getenv = func(k string) string {
			if k == "INVOCATION_ID" {
				return "abc"
			}
			return ""
		}
		var gotSince time.Time
		var gotLines int
		d.Journal = func(_ context.Context, since time.Time, n int) ([]byte, error) {
			gotSince, gotLines = since, n
			return []byte("journal line 1\njournal line 2\n"), nil
		}
		stop, _ := start(New(dev.cfg, d))
		time.Sleep(time.Minute)
		stop()
		if text := gunzip(t, f.uploads["lr2"]); text != "journal line 1\njournal line 2\n" {
			t.Errorf("uploaded %q, want the journal output", text)
		}
		if gotSince.Unix() != 1700000000 || gotLines != 7 {
			t.Errorf("journal asked since %v lines %d, want 1700000000, 7", gotSince.Unix(), gotLines)
		}
	})
}

func TestJournalctlArgsAreFixed(t *testing.T) {
	got := strings.Join(JournalctlArgs(time.Unix(1700000000, 0), 50), " ")
	want := "--unit=meshanics-agent.service --no-pager --output=short-iso-precise --since=@1700000000 --lines=50"
	if got != want {
		t.Errorf("JournalctlArgs() = %q, want %q", got, want)
	}
}

func TestGzipCappedKeepsNewestLines(t *testing.T) {
	var b strings.Builder
	for i := range 20000 {
		b.WriteString(strings.Repeat(string(rune('a'+i%26)), 40))
		b.WriteString(" line ")
		b.WriteString(time.Duration(i).String())
		b.WriteString("\n")
	}
	gz, err := gzipCapped([]byte(b.String()), 4096)
	if err != nil {
		t.Fatal(err)
	}
	if len(gz) > 4096 {
		t.Fatalf("gzipCapped = %d bytes, want <= 4096", len(gz))
	}
	if text := gunzip(t, gz); !strings.HasSuffix(text, "line 19.999µs\n") {
		t.Errorf("capped log lost the newest line: ...%q", text[max(0, len(text)-40):])
	}
}

func TestMissingCredentialsIsConfigError(t *testing.T) {
	dir := t.TempDir()
	cfg := &config.Config{Server: "h:1", CertFile: filepath.Join(dir, "device.crt"), KeyFile: filepath.Join(dir, "device.key"), CAFile: filepath.Join(dir, "ca.pem"), DataDir: dir}
	err := New(cfg, Deps{}).Run(context.Background())
	var ce *config.Error
	if ExitCode(err) != 78 || !errors.As(err, &ce) || ce.Flag != "-key" {
		t.Errorf("Run() without credentials = %v (exit %d), want 78 naming -key", err, ExitCode(err))
	}
	// A key but a broken certificate names -cert.
	k, _ := identity.GenerateKey()
	kb, _ := identity.EncodeKey(k)
	os.WriteFile(cfg.KeyFile, kb, 0o600)
	os.WriteFile(cfg.CertFile, []byte("not a certificate"), 0o644)
	err = New(cfg, Deps{}).Run(context.Background())
	if ExitCode(err) != 78 || !errors.As(err, &ce) || ce.Flag != "-cert" {
		t.Errorf("Run() with a broken certificate = %v (exit %d), want 78 naming -cert", err, ExitCode(err))
	}
}
