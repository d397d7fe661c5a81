package cli

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"
)

// This file is the demo's process handling: finding or building the two
// binaries, starting them in one process group, and stopping that group.

const demoModule = "github.com/meshanics/meshanics"

// demoBinaries returns the directory holding meshanics-server and
// meshanics-agent: dir if given, else the directory of the running meshctl
// if both are there, else a fresh `go build` of the module the working
// directory belongs to, into out.
func demoBinaries(ctx context.Context, dir, out string) (string, bool, error) {
	has := func(d string) bool {
		for _, b := range []string{"meshanics-server", "meshanics-agent"} {
			if st, err := os.Stat(filepath.Join(d, b)); err != nil || st.IsDir() || st.Mode()&0o111 == 0 {
				return false
			}
		}
		return true
	}
	if dir != "" {
		if !has(dir) {
			return "", false, usagef("-bin-dir %s: want executables meshanics-server and meshanics-agent in it", dir)
		}
		return dir, false, nil
	}
	if exe, err := os.Executable(); err == nil && has(filepath.Dir(exe)) {
		return filepath.Dir(exe), false, nil
	}
	root, err := demoModuleRoot(ctx)
	if err != nil {
		return "", false, err
	}
	cmd := exec.CommandContext(ctx, "go", "build", "-o", out+string(filepath.Separator), "./cmd/meshanics-server", "./cmd/meshanics-agent")
	cmd.Dir = root
	// Same environment as the `go run` that started meshctl, so the build
	// reuses its cache (a static CGO_ENABLED=0 agent matters for shipping,
	// not for a local demo).
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", false, fmt.Errorf("go build in %s: %v\n%s", root, err, tail(string(b), 4000))
	}
	return out, true, nil
}

// demoModuleRoot finds the Meshanics source tree the working directory is
// in (go run ./cmd/meshctl demo runs from there).
func demoModuleRoot(ctx context.Context) (string, error) {
	const how = "run the demo from the Meshanics source tree (go run ./cmd/meshctl demo), or pass -bin-dir DIR with meshanics-server and meshanics-agent"
	if _, err := exec.LookPath("go"); err != nil {
		return "", fmt.Errorf("no meshanics-server/meshanics-agent beside meshctl and no go toolchain to build them: %s", how)
	}
	b, err := exec.CommandContext(ctx, "go", "env", "GOMOD").Output()
	gomod := strings.TrimSpace(string(b))
	if err != nil || gomod == "" || gomod == os.DevNull {
		return "", fmt.Errorf("not inside a Go module: %s", how)
	}
	data, err := os.ReadFile(gomod)
	if err != nil {
		return "", fmt.Errorf("read %s: %w", gomod, err)
	}
	first, _, _ := strings.Cut(string(data), "\n")
	if strings.TrimSpace(strings.TrimPrefix(first, "module")) != demoModule {
		return "", fmt.Errorf("%s is not the %s module: %s", gomod, demoModule, how)
	}
	return filepath.Dir(gomod), nil
}

// freeLoopbackPorts reserves n distinct ports on 127.0.0.1 and releases
// them for the server to bind (a small window another program could take
// one in; the server then fails to start and says which address).
func freeLoopbackPorts(n int) ([]int, error) {
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	ports := make([]int, 0, n)
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("find a free loopback port: %w", err)
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

// demoProc is one started binary; its output goes to a log file.
type demoProc struct {
	name    string
	cmd     *exec.Cmd
	logPath string
	done    chan struct{}
	mu      sync.Mutex
	err     error // Wait's result, once done is closed
}

// exited reports whether the process has ended, with Wait's error.
func (p *demoProc) exited() (bool, error) {
	select {
	case <-p.done:
		p.mu.Lock()
		defer p.mu.Unlock()
		return true, p.err
	default:
		return false, nil
	}
}

// demoProcGroup starts processes in one process group (the first one leads it)
// so that cleanup, and an operator after -keep, can stop all of them with
// one signal, and a Ctrl-C in the terminal reaches only meshctl, which then
// stops them in order.
type demoProcGroup struct {
	mu    sync.Mutex
	pgid  int
	procs []*demoProc
}

func (g *demoProcGroup) start(name, dir, logPath string, env []string, bin string, args ...string) (*demoProc, error) {
	logf, err := os.OpenFile(logPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return nil, err
	}
	defer logf.Close() // the child holds its own copy
	cmd := exec.Command(bin, args...)
	cmd.Dir = dir
	cmd.Env = env
	cmd.Stdout, cmd.Stderr = logf, logf
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.allExited() {
		g.pgid = 0 // a process group ends with its last member; start a new one
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pgid: g.pgid}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	if g.pgid == 0 {
		g.pgid = cmd.Process.Pid
	}
	p := &demoProc{name: name, cmd: cmd, logPath: logPath, done: make(chan struct{})}
	go func() {
		err := cmd.Wait()
		p.mu.Lock()
		p.err = err
		p.mu.Unlock()
		close(p.done)
	}()
	g.procs = append(g.procs, p)
	return p, nil
}

// allExited reports whether no started process runs. g.mu is held.
func (g *demoProcGroup) allExited() bool {
	for _, p := range g.procs {
		if done, _ := p.exited(); !done {
			return false
		}
	}
	return true
}

// stop sends SIGTERM to the whole group, waits up to grace for every
// process, then SIGKILLs the group.
func (g *demoProcGroup) stop(grace time.Duration) {
	g.mu.Lock()
	pgid, procs := g.pgid, g.procs
	g.mu.Unlock()
	if pgid == 0 {
		return
	}
	_ = syscall.Kill(-pgid, syscall.SIGTERM)
	deadline := time.After(grace)
	for _, p := range procs {
		select {
		case <-p.done:
		case <-deadline:
			_ = syscall.Kill(-pgid, syscall.SIGKILL)
			for _, p := range procs {
				<-p.done
			}
			return
		}
	}
	// Anything else that joined the group (nothing should) goes too.
	_ = syscall.Kill(-pgid, syscall.SIGKILL)
}

// tail returns the last n bytes of s, starting at a line.
func tail(s string, n int) string {
	if len(s) <= n {
		return s
	}
	s = s[len(s)-n:]
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		s = s[i+1:]
	}
	return "…\n" + s
}

// logTail reads the end of a log file for an error message.
func logTail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Sprintf("(cannot read %s: %v)", path, err)
	}
	return tail(string(b), n)
}

var errDemoInterrupted = errors.New("interrupted")
