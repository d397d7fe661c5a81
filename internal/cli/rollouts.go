package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"sort"
	"strings"
	"time"

	"github.com/meshanics/meshanics/internal/names"
	"github.com/meshanics/meshanics/internal/states"
	"golang.org/x/sys/unix"
)

func rolloutsGroup() *group {
	return &group{
		name:    "rollouts",
		summary: "Rollouts: an artifact going to a group in waves that halt themselves when devices fail.",
		cmds: []*command{
			{name: "create", summary: "start a rollout (-artifact NAME@VERSION -group G -probe JSON [-strategy JSON])", run: rolloutsCreate},
			{name: "list", summary: "list rollouts, newest first (-state S)", run: rolloutsList},
			{name: "show", args: "ID", summary: "show state, per-wave device counts, failures, acknowledged, tolerance", run: rolloutsShow},
			{name: "devices", args: "ID", summary: "list each device's wave, state and detail", run: rolloutsDevices},
			{name: "approve", args: "ID", summary: "start the next wave of a rollout waiting for approval", run: rolloutsCommand("approve")},
			{name: "halt", args: "ID", summary: "halt a running rollout", run: rolloutsCommand("halt")},
			{name: "resume", args: "ID", summary: "resume a halted rollout, acknowledging its failures", run: rolloutsCommand("resume")},
			{name: "abort", args: "ID", summary: "abort for good (-policy keep|revert)", run: rolloutsAbort},
			{name: "watch", args: "ID", summary: "live per-wave progress until completed, halted or aborted", run: rolloutsWatch},
		},
	}
}

// rolloutInfo is a rollout as GET /api/v1/rollouts/{id} returns it.
type rolloutInfo struct {
	ID                   string          `json:"id"`
	Artifact             string          `json:"artifact"`
	Group                string          `json:"group"`
	State                string          `json:"state"`
	Probe                json.RawMessage `json:"probe"`
	Strategy             json.RawMessage `json:"strategy"`
	Waves                []waveInfo      `json:"waves"`
	Failures             int             `json:"failures"`
	AcknowledgedFailures int             `json:"acknowledged_failures"`
	CreatedAt            time.Time       `json:"created_at"`
	UpdatedAt            time.Time       `json:"updated_at"`
}

type waveInfo struct {
	Index    int            `json:"index"`
	Percent  int            `json:"percent"`
	Approval string         `json:"approval"`
	Devices  int            `json:"devices"`
	Counts   map[string]int `json:"counts"`
}

type rolloutDeviceInfo struct {
	Device    string    `json:"device"`
	Wave      int       `json:"wave"`
	State     string    `json:"state"`
	Detail    string    `json:"detail"`
	UpdatedAt time.Time `json:"updated_at"`
}

// devices is N, the number of targeted devices.
func (r rolloutInfo) devices() int {
	n := 0
	for _, w := range r.Waves {
		n += w.Devices
	}
	return n
}

// tolerance is max_failure_rate × N from the stored strategy.
func (r rolloutInfo) tolerance() (rate, tol float64) {
	var s struct {
		MaxFailureRate float64 `json:"max_failure_rate"`
	}
	_ = json.Unmarshal(r.Strategy, &s)
	// Rounded like the engine's audit: 0.1 × 3 shows as 0.3.
	return s.MaxFailureRate, math.Round(s.MaxFailureRate*float64(r.devices())*1e9) / 1e9
}

func (r rolloutInfo) finished() bool {
	switch states.Rollout(r.State) {
	case states.Completed, states.Halted, states.Aborted:
		return true
	}
	return false
}

// fmtCounts renders "healthy=3 pending=2" in lifecycle order.
func fmtCounts(c map[string]int) string {
	var parts []string
	for _, s := range states.AllDevice {
		if n := c[string(s)]; n > 0 {
			parts = append(parts, fmt.Sprintf("%s=%d", s, n))
		}
	}
	var other []string
	for k, n := range c {
		if _, ok := states.ParseDevice(k); !ok && n > 0 {
			other = append(other, fmt.Sprintf("%s=%d", k, n))
		}
	}
	sort.Strings(other)
	if parts = append(parts, other...); len(parts) == 0 {
		return "-"
	}
	return strings.Join(parts, " ")
}

// done counts the devices of a wave that are terminal.
func (w waveInfo) done() int {
	n := 0
	for k, c := range w.Counts {
		if states.Device(k).Terminal() {
			n += c
		}
	}
	return n
}

func rolloutsCreate(ctx context.Context, a *app, fs *flag.FlagSet, args []string) error {
	art := fs.String("artifact", "", "artifact `NAME@VERSION` (published, hence signed)")
	grp := fs.String("group", "", "target group `NAME`")
	probe := fs.String("probe", "", `health probe JSON, e.g. {"type":"http","target":"http://127.0.0.1:8080/healthz"}`)
	strategy := fs.String("strategy", "", `strategy JSON, e.g. {"waves":[{"percent":10},{"percent":100,"approval":"manual"}],"max_failure_rate":0.05} (default: one wave of 100)`)
	if _, err := parseArgs(fs, args, 0, 0); err != nil {
		return err
	}
	if _, _, err := names.ParseRef(*art); err != nil {
		return usagef("-artifact: %v", err)
	}
	if *grp == "" {
		return usagef("-group is required")
	}
	body := map[string]any{"artifact": *art, "group": *grp}
	for _, f := range []struct{ name, val string }{{"probe", *probe}, {"strategy", *strategy}} {
		if f.val == "" {
			continue
		}
		if !json.Valid([]byte(f.val)) {
			return usagef("-%s: not valid JSON", f.name)
		}
		body[f.name] = json.RawMessage(f.val)
	}
	if *probe == "" {
		return usagef("-probe is required")
	}
	return printObject(ctx, a, http.MethodPost, apiPath("rollouts"), body, a.showRollout)
}

func (a *app) showRollout(r rolloutInfo) error {
	rate, tol := r.tolerance()
	fmt.Fprintf(a.stdout, "Rollout:   %s\nArtifact:  %s\nGroup:     %s\nState:     %s\n", r.ID, r.Artifact, r.Group, r.State)
	fmt.Fprintf(a.stdout, "Failures:  %d (acknowledged %d; tolerance %g = max_failure_rate %g × %d devices)\n",
		r.Failures, r.AcknowledgedFailures, tol, rate, r.devices())
	fmt.Fprintf(a.stdout, "Created:   %s\nUpdated:   %s\n\n", fmtTime(r.CreatedAt), fmtTime(r.UpdatedAt))
	tw := a.table()
	fmt.Fprintln(tw, "WAVE\tPERCENT\tAPPROVAL\tDEVICES\tDONE\tSTATES")
	for _, w := range r.Waves {
		fmt.Fprintf(tw, "%d\t%d%%\t%s\t%d\t%d\t%s\n", w.Index, w.Percent, w.Approval, w.Devices, w.done(), fmtCounts(w.Counts))
	}
	return tw.Flush()
}

func rolloutsList(ctx context.Context, a *app, fs *flag.FlagSet, args []string) error {
	state := fs.String("state", "", "only rollouts in this state (running, waiting_for_approval, halted, completed, aborted)")
	_, q, err := parsePaged(fs, args, 0, 0)
	if err != nil {
		return err
	}
	if *state != "" {
		q.Set("state", *state)
	}
	return printList(ctx, a, apiPath("rollouts"), q, "ID\tARTIFACT\tGROUP\tSTATE\tDEVICES\tFAILURES\tCREATED", func(r rolloutInfo) string {
		return fmt.Sprintf("%s\t%s\t%s\t%s\t%d\t%d\t%s", r.ID, r.Artifact, r.Group, r.State, r.devices(), r.Failures, fmtTime(r.CreatedAt))
	})
}

func rolloutsShow(ctx context.Context, a *app, fs *flag.FlagSet, args []string) error {
	pos, err := parseArgs(fs, args, 1, 1)
	if err != nil {
		return err
	}
	return printObject(ctx, a, http.MethodGet, apiPath("rollouts", pos[0]), nil, a.showRollout)
}

func rolloutsDevices(ctx context.Context, a *app, fs *flag.FlagSet, args []string) error {
	pos, q, err := parsePaged(fs, args, 1, 1)
	if err != nil {
		return err
	}
	return printList(ctx, a, apiPath("rollouts", pos[0], "devices"), q, "DEVICE\tWAVE\tSTATE\tUPDATED\tDETAIL", func(d rolloutDeviceInfo) string {
		return fmt.Sprintf("%s\t%d\t%s\t%s\t%s", d.Device, d.Wave, d.State, fmtTime(d.UpdatedAt), dash(d.Detail))
	})
}

func rolloutsCommand(verb string) func(context.Context, *app, *flag.FlagSet, []string) error {
	return func(ctx context.Context, a *app, fs *flag.FlagSet, args []string) error {
		pos, err := parseArgs(fs, args, 1, 1)
		if err != nil {
			return err
		}
		return printObject(ctx, a, http.MethodPost, apiPath("rollouts", pos[0], verb), nil, a.showRollout)
	}
}

func rolloutsAbort(ctx context.Context, a *app, fs *flag.FlagSet, args []string) error {
	policy := fs.String("policy", "keep", "keep (devices stay where they are) or revert (devices that applied go back to their previous artifact)")
	pos, err := parseArgs(fs, args, 1, 1)
	if err != nil {
		return err
	}
	if *policy != "keep" && *policy != "revert" {
		return usagef("-policy %q: want keep or revert", *policy)
	}
	return printObject(ctx, a, http.MethodPost, apiPath("rollouts", pos[0], "abort"), map[string]string{"policy": *policy}, a.showRollout)
}

// isTerminal reports whether w is a terminal (it answers the termios
// ioctl; /dev/null is a character device but not a terminal), so watch can
// redraw in place; anything else gets plain lines.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}

func rolloutsWatch(ctx context.Context, a *app, fs *flag.FlagSet, args []string) error {
	pos, err := parseArgs(fs, args, 1, 1)
	if err != nil {
		return err
	}
	c, err := a.api()
	if err != nil {
		return err
	}
	view := &watchView{w: a.stdout, tty: isTerminal(a.stdout)}
	var lastBody []byte
	for {
		resp, err := c.do(ctx, http.MethodGet, apiPath("rollouts", pos[0]), nil, nil)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		var r rolloutInfo
		if err := decodeBody(resp, &r); err != nil {
			return err
		}
		if a.jsonOut() {
			// -o json: each changed REST body unchanged, one per line.
			if !bytes.Equal(resp.body, lastBody) {
				if err := a.writeRaw(resp.body); err != nil {
					return err
				}
				lastBody = resp.body
			}
		} else {
			view.draw(r, time.Now())
		}
		if r.finished() {
			return nil
		}
		t := time.NewTimer(a.pollEvery)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
	}
}

// watchView renders a rollout: on a terminal it redraws a block with a
// progress bar per wave; otherwise it prints one line per change.
type watchView struct {
	w     io.Writer
	tty   bool
	lines int    // lines of the block drawn last (tty)
	last  string // last plain line (dedup)
}

const barWidth = 30

func bar(w waveInfo) string {
	if w.Devices == 0 {
		return "[" + strings.Repeat(" ", barWidth) + "]"
	}
	fail := w.Counts[string(states.Failed)] + w.Counts[string(states.RolledBack)] + w.Counts[string(states.RevertFailed)]
	done := w.done()
	nDone := done * barWidth / w.Devices
	nFail := fail * barWidth / w.Devices
	if fail > 0 && nFail == 0 {
		nFail = 1
	}
	nFail = min(nFail, nDone)
	if nDone == 0 && done > 0 {
		nDone = 1
	}
	return "[" + strings.Repeat("x", nFail) + strings.Repeat("#", nDone-nFail) + strings.Repeat("-", barWidth-nDone) + "]"
}

func (v *watchView) draw(r rolloutInfo, now time.Time) {
	_, tol := r.tolerance()
	head := fmt.Sprintf("rollout %s  %s -> %s  state %s  failures %d (acknowledged %d, tolerance %g)",
		r.ID, r.Artifact, r.Group, r.State, r.Failures, r.AcknowledgedFailures, tol)
	if states.Rollout(r.State) == states.WaitingForApproval {
		// watch keeps going at a gate: say how to open it.
		head += "  (to start the next wave: meshctl rollouts approve " + r.ID + ")"
	}
	if !v.tty {
		var parts []string
		for _, w := range r.Waves {
			parts = append(parts, fmt.Sprintf("wave %d %d/%d %s", w.Index, w.done(), w.Devices, fmtCounts(w.Counts)))
		}
		line := head + " | " + strings.Join(parts, " | ")
		if line != v.last {
			fmt.Fprintf(v.w, "%s %s\n", now.Format("15:04:05"), line)
			v.last = line
		}
		return
	}
	var b strings.Builder
	if v.lines > 0 {
		fmt.Fprintf(&b, "\x1b[%dA", v.lines)
	}
	lines := []string{head}
	for _, w := range r.Waves {
		lines = append(lines, fmt.Sprintf("  wave %d %3d%% %-6s %s %d/%d  %s", w.Index, w.Percent, w.Approval, bar(w), w.done(), w.Devices, fmtCounts(w.Counts)))
	}
	for _, l := range lines {
		b.WriteString("\x1b[2K")
		b.WriteString(l)
		b.WriteByte('\n')
	}
	v.lines = len(lines)
	io.WriteString(v.w, b.String())
}
