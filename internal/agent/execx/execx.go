// Package execx is the agent's one way to run an external program (container
// runtime, systemctl, journalctl, probe and reload binaries): an absolute
// path, a fixed argument list, a timeout, bounded output capture and a minimal
// environment. It never runs a shell and refuses to run one. Any agent
// package may import it; nothing else in the agent imports os/exec.
package execx

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/meshanics/meshanics/internal/errdefs"
)

// SearchDirs are the fixed directories a program name is looked up in (by
// Find) and the PATH a child process sees.
var SearchDirs = []string{"/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin"}

const (
	// DefaultTimeout applies when Cmd.Timeout is zero.
	DefaultTimeout = 30 * time.Second
	// DefaultMaxOutput bounds each of stdout and stderr when Cmd.MaxOutput is zero.
	DefaultMaxOutput = 64 << 10
	maxArgs          = 256
	maxArgBytes      = 64 << 10
)

// shells are refused by base name, also when reached through a symlink:
// nothing the agent runs may interpret a string as a command line.
var shells = map[string]bool{
	"sh": true, "bash": true, "dash": true, "ash": true, "zsh": true, "ksh": true,
	"mksh": true, "csh": true, "tcsh": true, "fish": true, "busybox": true, "env": true,
}

// Cmd is one program invocation.
type Cmd struct {
	Path      string        // absolute, clean path of the binary
	Args      []string      // arguments after the program name
	Env       []string      // extra KEY=VALUE entries on top of the minimal environment
	Timeout   time.Duration // 0 = DefaultTimeout
	MaxOutput int           // bytes kept of each stream; 0 = DefaultMaxOutput
}

// Result is what a finished program left behind.
type Result struct {
	Stdout, Stderr []byte
	ExitCode       int  // -1 when killed by a signal or the timeout
	Truncated      bool // some output was dropped
}

// ExitError reports a program that ran and exited non-zero.
type ExitError struct {
	Path   string
	Code   int
	Stderr string // bounded tail-free prefix of stderr, for details
}

func (e *ExitError) Error() string {
	msg := fmt.Sprintf("%s exited with status %d", filepath.Base(e.Path), e.Code)
	if e.Stderr != "" {
		msg += ": " + e.Stderr
	}
	return msg
}

// Check refuses a path that is not absolute and clean, names a shell
// directly or through symlinks, or is not a regular executable file.
func Check(path string) error {
	if path == "" || !filepath.IsAbs(path) || filepath.Clean(path) != path {
		return fmt.Errorf("exec %q: %w: program must be an absolute clean path", path, errdefs.ErrPermission)
	}
	if shells[filepath.Base(path)] {
		return fmt.Errorf("exec %q: %w: shells are never run", path, errdefs.ErrPermission)
	}
	real, err := filepath.EvalSymlinks(path)
	if err != nil {
		return fmt.Errorf("exec %q: %w", path, err)
	}
	if shells[filepath.Base(real)] {
		return fmt.Errorf("exec %q: %w: resolves to a shell", path, errdefs.ErrPermission)
	}
	fi, err := os.Stat(real)
	if err != nil {
		return fmt.Errorf("exec %q: %w", path, err)
	}
	if !fi.Mode().IsRegular() || fi.Mode().Perm()&0o111 == 0 {
		return fmt.Errorf("exec %q: not an executable regular file", path)
	}
	return nil
}

// Find returns the absolute path of a program name looked up in SearchDirs,
// or an error wrapping errdefs.ErrNotFound.
func Find(name string) (string, error) {
	if name == "" || strings.ContainsRune(name, '/') {
		return "", fmt.Errorf("find %q: want a bare program name", name)
	}
	for _, d := range SearchDirs {
		p := filepath.Join(d, name)
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() && fi.Mode().Perm()&0o111 != 0 {
			return p, nil
		}
	}
	return "", fmt.Errorf("find %q: %w", name, errdefs.ErrNotFound)
}

// Run runs c and waits for it. A non-zero exit is an *ExitError; the Result
// is filled in either way once the program started.
func Run(ctx context.Context, c Cmd) (Result, error) {
	if err := Check(c.Path); err != nil {
		return Result{ExitCode: -1}, err
	}
	if len(c.Args) > maxArgs {
		return Result{ExitCode: -1}, fmt.Errorf("exec %s: more than %d arguments", c.Path, maxArgs)
	}
	for _, a := range c.Args {
		if len(a) > maxArgBytes || strings.ContainsRune(a, 0) {
			return Result{ExitCode: -1}, fmt.Errorf("exec %s: argument too long or contains NUL", c.Path)
		}
	}
	timeout, max := c.Timeout, c.MaxOutput
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	if max <= 0 {
		max = DefaultMaxOutput
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()

	cmd := exec.CommandContext(ctx, c.Path, c.Args...)
	cmd.Env = append(minimalEnv(), c.Env...)
	cmd.Dir = "/"
	cmd.Stdin = nil
	stdout, stderr := &capped{max: max}, &capped{max: max}
	cmd.Stdout, cmd.Stderr = stdout, stderr
	// Own process group, so a timeout kills what the program started too.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 2 * time.Second

	err := cmd.Run()
	res := Result{Stdout: stdout.buf.Bytes(), Stderr: stderr.buf.Bytes(), Truncated: stdout.dropped || stderr.dropped, ExitCode: -1}
	if cmd.ProcessState != nil {
		res.ExitCode = cmd.ProcessState.ExitCode()
	}
	if ctxErr := ctx.Err(); ctxErr != nil && err != nil {
		return res, fmt.Errorf("exec %s: %w", filepath.Base(c.Path), ctxErr)
	}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return res, &ExitError{Path: c.Path, Code: res.ExitCode, Stderr: summary(res.Stderr)}
	}
	if err != nil {
		return res, fmt.Errorf("exec %s: %w", filepath.Base(c.Path), err)
	}
	return res, nil
}

func minimalEnv() []string {
	return []string{"PATH=" + strings.Join(SearchDirs, ":"), "LANG=C", "LC_ALL=C"}
}

// summary keeps error details short and on one line.
func summary(b []byte) string {
	s := strings.TrimSpace(string(b))
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		s = s[:i]
	}
	if len(s) > 256 {
		s = s[:256] + "…"
	}
	return s
}

// capped keeps the first max bytes written and drops the rest, so a chatty
// program cannot grow the agent's memory.
type capped struct {
	buf     bytes.Buffer
	max     int
	dropped bool
}

func (c *capped) Write(p []byte) (int, error) {
	if room := c.max - c.buf.Len(); room > 0 {
		if len(p) > room {
			c.buf.Write(p[:room])
			c.dropped = true
		} else {
			c.buf.Write(p)
		}
	} else if len(p) > 0 {
		c.dropped = true
	}
	return len(p), nil
}
