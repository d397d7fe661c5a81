package cli

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"time"
)

// meshctl demo (issue 8): the whole loop on one machine, with no setup and
// no root. It starts a real control plane (embedded SQLite, -dev signing
// keys) and five real agents in a temporary directory, publishes and rolls
// out a model, lets a canary fail and roll back, resumes and approves, and
// prints a summary. Every operator step runs the real meshctl command
// in-process and prints it, so the output doubles as a tutorial.

func demoGroup() *group {
	return &group{
		name:    "demo",
		summary: "Run the whole loop locally: control plane, five agents, a canary rollout that halts (no setup, no root).",
		cmds:    []*command{{name: "", summary: "run the demo in a temporary directory; everything it starts is stopped at the end (also on Ctrl-C) unless -keep", run: demoRun}},
	}
}

// demoDevices are the five demo agents. Which one is the canary is decided
// by the rollout engine (sha256 order of the names); the demo gives that
// one no camera calibration, so it is the device whose probe fails.
var demoDevices = []string{"cam-1", "cam-2", "cam-3", "cam-4", "cam-5"}

const (
	demoGroupName = "cameras"
	demoArtifact  = "detector"
	demoModelFile = "detector.onnx"
	// The agents run with their data dir as working directory, so one probe
	// path names a file in each device's own data dir.
	demoProbeModel = "/proc/self/cwd/artifacts/" + demoArtifact + "/current/" + demoModelFile
	demoProbeCalib = "/proc/self/cwd/calibration/camera.json"
)

// demoCanary returns the device the partition puts first (lowest sha256 of
// the name): wave 0 of a 20 % plan over five devices.
func demoCanary(devices []string) string {
	s := slices.Clone(devices)
	slices.SortFunc(s, func(a, b string) int {
		x, y := sha256.Sum256([]byte(a)), sha256.Sum256([]byte(b))
		return bytes.Compare(x[:], y[:])
	})
	return s[0]
}

func demoRun(ctx context.Context, a *app, fs *flag.FlagSet, args []string) error {
	keep := fs.Bool("keep", false, "leave the control plane and agents running at the end and print how to use meshctl against them")
	binDir := fs.String("bin-dir", "", "`DIR` holding meshanics-server and meshanics-agent (default: beside meshctl, else go build from the source tree)")
	timeout := fs.Duration("timeout", 5*time.Minute, "give up after this long")
	if _, err := parseArgs(fs, args, 0, 0); err != nil {
		return err
	}
	if runtime.GOOS != "linux" {
		return fmt.Errorf("the demo runs real meshanics-agent processes, which need Linux (this is %s)", runtime.GOOS)
	}
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()
	ctx, cancel := context.WithTimeoutCause(ctx, *timeout, fmt.Errorf("the demo did not finish within -timeout %v", *timeout))
	defer cancel()

	dir, err := os.MkdirTemp("", "meshanics-demo-")
	if err != nil {
		return err
	}
	d := &demo{out: a.stdout, dir: dir, binDir: *binDir, started: time.Now(), canary: demoCanary(demoDevices)}
	fmt.Fprintf(d.out, "Meshanics demo: a control plane and five agents on this machine, in %s\n", dir)
	fmt.Fprintf(d.out, "(Ctrl-C stops everything and cleans up at any time.)\n")
	err = d.run(ctx)
	if err != nil && ctx.Err() != nil {
		if cause := context.Cause(ctx); errors.Is(cause, context.Canceled) {
			err = errDemoInterrupted
		} else {
			err = fmt.Errorf("%w (%v)", cause, err)
		}
	}
	if err == nil && *keep {
		d.printKeep()
		return nil
	}
	fmt.Fprintf(d.out, "\nCleaning up: stopping the control plane and the agents\n")
	d.procs.stop(15 * time.Second)
	if err != nil && !errors.Is(err, errDemoInterrupted) {
		// Keep the logs only for a failure worth investigating.
		fmt.Fprintf(d.out, "Kept %s for its logs (server/server.log, devices/<name>/agent.log)\n", dir)
	} else if rerr := os.RemoveAll(dir); rerr != nil {
		fmt.Fprintf(a.stderr, "meshctl demo: remove %s: %v\n", dir, rerr)
	} else {
		fmt.Fprintf(d.out, "Removed %s\n", dir)
	}
	if err != nil {
		return fmt.Errorf("demo failed: %w", err)
	}
	return nil
}

// demo is one run. Not safe for concurrent use.
type demo struct {
	out     io.Writer
	dir     string
	binDir  string
	started time.Time
	canary  string

	bins    string // directory of meshanics-server and meshanics-agent
	procs   demoProcGroup
	server  *demoProc
	agents  map[string]*demoAgent
	webURL  string
	caFile  string
	apiKey  string
	step    int
	cl      *client
	rollout map[string]string // version → rollout id
}

// demoAgent is one enrolled device.
type demoAgent struct {
	name    string
	root    string // <dir>/devices/<name>
	dataDir string
	proc    *demoProc
}

// stepf prints the next numbered step.
func (d *demo) stepf(format string, args ...any) {
	d.step++
	fmt.Fprintf(d.out, "\n%2d. %s\n", d.step, fmt.Sprintf(format, args...))
}

// notef prints an indented line under the current step.
func (d *demo) notef(format string, args ...any) {
	fmt.Fprintf(d.out, "    %s\n", fmt.Sprintf(format, args...))
}

// display shortens the demo directory to $DEMO in printed commands (printKeep
// exports it).
func (d *demo) display(s string) string { return strings.ReplaceAll(s, d.dir, "$DEMO") }

// meshctl runs a real meshctl command in-process against the demo's control
// plane (as MESHCTL_SERVER, MESHCTL_CA and MESHCTL_API_KEY would). With show,
// the command and its output are printed; the output is also returned.
func (d *demo) meshctl(ctx context.Context, show bool, args ...string) (string, error) {
	var stdout, stderr bytes.Buffer
	var w io.Writer = &stdout
	if show {
		fmt.Fprintf(d.out, "    $ meshctl %s\n", d.display(strings.Join(args, " ")))
		w = io.MultiWriter(&stdout, &indentWriter{w: d.out, prefix: "      "})
	}
	code := run(ctx, args, strings.NewReader(""), w, &stderr, d.lookupEnv)
	if code != exitOK {
		if ctx.Err() != nil {
			return stdout.String(), ctx.Err()
		}
		return stdout.String(), fmt.Errorf("meshctl %s: exit %d: %s", strings.Join(args, " "), code, strings.TrimSpace(stderr.String()))
	}
	if show && stderr.Len() > 0 {
		(&indentWriter{w: d.out, prefix: "      "}).Write([]byte(d.display(stderr.String())))
	}
	return stdout.String(), nil
}

func (d *demo) lookupEnv(k string) (string, bool) {
	switch k {
	case "MESHCTL_SERVER":
		return d.webURL, true
	case "MESHCTL_CA":
		return d.caFile, true
	case "MESHCTL_API_KEY":
		return d.apiKey, true
	}
	return "", false
}

// run is the story, step by step.
func (d *demo) run(ctx context.Context) error {
	for _, s := range []func(context.Context) error{
		d.build,
		d.startServer,
		d.enroll,
		d.publishFirst,
		d.rolloutFirst,
		d.publishSecond,
		d.rolloutCanary,
		d.showHalt,
		d.resumeApprove,
		d.summary,
	} {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := s(ctx); err != nil {
			return err
		}
	}
	return nil
}

// indentWriter prefixes every line.
type indentWriter struct {
	w       io.Writer
	prefix  string
	midLine bool
}

func (iw *indentWriter) Write(p []byte) (int, error) {
	var b bytes.Buffer
	for _, c := range p {
		if !iw.midLine {
			b.WriteString(iw.prefix)
			iw.midLine = true
		}
		b.WriteByte(c)
		if c == '\n' {
			iw.midLine = false
		}
	}
	if _, err := iw.w.Write(b.Bytes()); err != nil {
		return 0, err
	}
	return len(p), nil
}

func (d *demo) printKeep() {
	fmt.Fprintf(d.out, "\nThe control plane and the five agents keep running (-keep). Use meshctl against them:\n\n")
	fmt.Fprintf(d.out, "  export DEMO=%s\n", d.dir)
	fmt.Fprintf(d.out, "  export MESHCTL_SERVER=%s\n", d.webURL)
	fmt.Fprintf(d.out, "  export MESHCTL_CA=$DEMO/server/pki/ca.pem\n")
	fmt.Fprintf(d.out, "  export MESHCTL_API_KEY=%s\n", d.apiKey)
	fmt.Fprintf(d.out, "  go run ./cmd/meshctl devices list\n")
	fmt.Fprintf(d.out, "\nLogs: $DEMO/server/server.log and $DEMO/devices/<name>/agent.log.\n")
	fmt.Fprintf(d.out, "Stop everything (one process group), then remove the directory:\n\n  kill -TERM -- -%d\n  rm -rf \"$DEMO\"\n", d.procs.pgid)
}
