package bench

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"

	"github.com/meshanics/meshanics/internal/agentenv"
)

// agentResult is what the agent benchmark prints (issue 7). Sizes in MiB.
type agentResult struct {
	BinaryMB   float64 `json:"binary_mb"`
	RSSIdleMB  float64 `json:"rss_idle_mb"`
	CPUIdlePct float64 `json:"cpu_idle_pct"`
}

// releaseBuildFlags are the flags the agent ships with: static, stripped,
// and without grpc's x/net/trace (which pulls html/template in; see
// docs/agent.md).
var releaseBuildFlags = []string{"-trimpath", "-ldflags=-s -w", "-tags", "grpcnotrace"}

func runAgent(ctx context.Context, args []string, _ io.Reader, stdout, stderr io.Writer) error {
	fs := newFlags("agent", stderr)
	duration := fs.Duration("duration", 60*time.Second, "idle window over which RSS and CPU are measured")
	warmup := fs.Duration("warmup", 5*time.Second, "time after start (enrolled, registered) before the window")
	interval := fs.Duration("interval", 30*time.Second, "the server's heartbeat interval")
	asJSON := fs.Bool("json", false, "print one JSON line")
	keep := fs.Bool("keep", false, "keep the work directory")
	binDir := fs.String("bin-dir", "", "`directory` with meshanics-server (the agent is always built with the release flags)")
	if err := parse(fs, args); err != nil {
		return err
	}
	if *duration <= 0 || *interval < time.Second {
		return usagef("-duration must be positive and -interval at least 1s")
	}
	dir, cleanup, err := workDir(*keep, stderr)
	if err != nil {
		return err
	}
	defer cleanup()
	bins, err := binaries(ctx, *binDir, filepath.Join(dir, "bin"), "meshanics-server")
	if err != nil {
		return err
	}
	agentBin, err := buildRelease(ctx, filepath.Join(dir, "agent-bin"), "meshanics-agent")
	if err != nil {
		return err
	}
	st, err := os.Stat(agentBin)
	if err != nil {
		return err
	}
	cp, err := startControlPlane(ctx, serverOpts{bin: filepath.Join(bins, "meshanics-server"), dir: dir,
		args: []string{"-heartbeat-interval", interval.String(), "-log-level", "warn"}})
	if err != nil {
		return err
	}
	defer cp.stop()
	op := newOperator(cp.servers[0].webURL, cp.apiKey, cp.caPEM)
	proc, err := startAgent(ctx, op, agentBin, filepath.Join(dir, "device"), "bench-agent")
	if err != nil {
		return err
	}
	defer proc.stop()
	fmt.Fprintf(stderr, "# load average before: %s\n", loadAvg())
	if err := sleepCtx(ctx, *warmup); err != nil {
		return err
	}
	if err := proc.alive(); err != nil {
		return err
	}
	a, err := sampleProc(proc.pid())
	if err != nil {
		return err
	}
	if err := sleepCtx(ctx, *duration); err != nil {
		return err
	}
	if err := proc.alive(); err != nil {
		return err
	}
	b, err := sampleProc(proc.pid())
	if err != nil {
		return err
	}
	fmt.Fprintf(stderr, "# load average after: %s\n", loadAvg())
	return emit(stdout, *asJSON, agentResult{
		BinaryMB:   round(float64(st.Size())/(1<<20), 2),
		RSSIdleMB:  round(float64(b.rssKB)/1024, 2),
		CPUIdlePct: round(cpuPercent(a, b), 3),
	})
}

// buildRelease builds ./cmd/<name> with CGO_ENABLED=0 and the release flags.
func buildRelease(ctx context.Context, dir, name string) (string, error) {
	root, err := moduleRoot(ctx)
	if err != nil {
		return "", err
	}
	out := filepath.Join(dir, name)
	cmd := exec.CommandContext(ctx, "go", append(append([]string{"build"}, releaseBuildFlags...), "-o", out, "./cmd/"+name)...)
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build %s: %v\n%s", name, err, b)
	}
	return out, nil
}

// agentProc is a real meshanics-agent, enrolled with `meshanics-agent
// enroll` and started with the agent.env it wrote (as the unit would),
// unprivileged, in its own directory tree.
type agentProc struct {
	cmd     *exec.Cmd
	done    chan struct{}
	waitErr error
	logPath string
	dataDir string
}

func startAgent(ctx context.Context, op *operator, bin, root, name string) (*agentProc, error) {
	token, pin, err := op.tokenPin(ctx, 1)
	if err != nil {
		return nil, err
	}
	dataDir, confDir := filepath.Join(root, "var"), filepath.Join(root, "etc")
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		return nil, err
	}
	enroll := exec.CommandContext(ctx, bin, "enroll", "-url", op.url, "-token", token, "-ca-pin", pin, "-name", name,
		"-config-dir", confDir, "-data-dir", dataDir, "-container-runtime", "none",
		"-containers-certs-dir", filepath.Join(root, "containers-certs.d"), "-docker-certs-dir", filepath.Join(root, "docker-certs.d"))
	if b, err := enroll.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("meshanics-agent enroll: %v\n%s", err, tailString(string(b), 2000))
	}
	env, err := agentenv.Read(filepath.Join(confDir, "agent.env"))
	if err != nil {
		return nil, err
	}
	p := &agentProc{logPath: filepath.Join(root, "agent.log"), dataDir: dataDir, done: make(chan struct{})}
	logf, err := os.OpenFile(p.logPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	p.cmd = exec.Command(bin)
	p.cmd.Dir = dataDir
	p.cmd.Env = append([]string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}, env...)
	p.cmd.Stdout, p.cmd.Stderr = logf, logf
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := p.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start meshanics-agent: %w", err)
	}
	go func() { p.waitErr = p.cmd.Wait(); close(p.done) }()
	return p, nil
}

func (p *agentProc) pid() int { return p.cmd.Process.Pid }

func (p *agentProc) alive() error {
	select {
	case <-p.done:
		log, _ := os.ReadFile(p.logPath)
		return fmt.Errorf("meshanics-agent exited: %v\n%s", p.waitErr, tailString(string(log), 3000))
	default:
		return nil
	}
}

func (p *agentProc) stop() {
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(15 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
