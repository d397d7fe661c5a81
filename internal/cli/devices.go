package cli

import (
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/meshanics/meshanics/internal/names"
)

func devicesGroup() *group {
	return &group{
		name:    "devices",
		summary: "Devices of the fleet: list, show, decommission, pull logs, provision offline.",
		cmds: []*command{
			{name: "list", summary: "list devices (filters: -status, -tag)", run: devicesList},
			{name: "show", args: "NAME", summary: "show one device", run: devicesShow},
			{name: "decommission", args: "NAME", summary: "revoke a device's identity at once (it wipes its credentials and stops)", run: devicesDecommission},
			{name: "logs", args: "NAME", summary: "request the agent's logs; with -wait print them when they arrive", run: devicesLogs},
			{name: "provision-offline", args: "NAME", summary: "air-gapped provisioning: sign the device's CSR (-csr) into a bundle dir (-out) to carry back", run: devicesProvisionOffline},
		},
	}
}

// device is the REST shape of a device.
type device struct {
	Name             string            `json:"name"`
	Status           string            `json:"status"`
	Fleet            string            `json:"fleet"`
	AgentVersion     string            `json:"agent_version"`
	Tags             map[string]string `json:"tags"`
	LastSeen         *time.Time        `json:"last_seen"`
	Hardware         json.RawMessage   `json:"hardware"`
	Installed        json.RawMessage   `json:"installed"`
	EnrolledAt       time.Time         `json:"enrolled_at"`
	DecommissionedAt *time.Time        `json:"decommissioned_at"`
	CertNotAfter     *time.Time        `json:"certificate_expires_at"`
}

func devicesList(ctx context.Context, a *app, fs *flag.FlagSet, args []string) error {
	status := fs.String("status", "", "only devices `online`, `offline` or `decommissioned`")
	tags := tagsFlag{}
	fs.Var(tags, "tag", "only devices with tag `key=value` (repeatable: all must match)")
	all := fs.Bool("all", false, "list every page (table output only; -limit sets the page size)")
	var pf pageFlags
	pf.add(fs)
	if _, err := parseArgs(fs, args, 0, 0); err != nil {
		return err
	}
	if *all && (a.jsonOut() || pf.offset > 0) {
		return usagef("devices list: -all pages through everything in table output; with -o json use -limit and -offset")
	}
	switch *status {
	case "", "online", "offline", "decommissioned":
	default:
		return usagef("-status %q: want online, offline or decommissioned", *status)
	}
	c, err := a.api()
	if err != nil {
		return err
	}
	q := url.Values{}
	if *status != "" {
		q.Set("status", *status)
	}
	for k, v := range tags {
		q.Add("tag", k+"="+v)
	}
	if *all && pf.limit == 0 {
		pf.limit = 200
	}
	tw := a.table()
	for first := true; ; first = false {
		pf.query(q)
		resp, err := c.do(ctx, http.MethodGet, apiPath("devices"), q, nil)
		if err != nil {
			return err
		}
		if a.jsonOut() {
			return a.writeRaw(resp.body)
		}
		var l list[device]
		if err := decodeBody(resp, &l); err != nil {
			return err
		}
		if first {
			fmt.Fprintln(tw, "NAME\tSTATUS\tLAST SEEN\tAGENT\tTAGS")
		}
		for _, d := range l.Items {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", d.Name, d.Status, fmtTimePtr(d.LastSeen), dash(d.AgentVersion), fmtTags(d.Tags))
		}
		next := l.Offset + l.Limit
		if !*all || next >= l.Total || l.Limit <= 0 {
			if err := tw.Flush(); err != nil {
				return err
			}
			if !*all {
				a.listFooter(len(l.Items), l.Total, l.Offset)
			}
			return nil
		}
		pf.offset = next
	}
}

func fmtTimePtr(t *time.Time) string {
	if t == nil {
		return "-"
	}
	return fmtTime(*t)
}

func deviceArg(fs *flag.FlagSet, args []string) (string, error) {
	pos, err := parseArgs(fs, args, 1, 1)
	if err != nil {
		return "", err
	}
	if err := names.ValidateDevice(pos[0]); err != nil {
		return "", usagef("%v", err)
	}
	return pos[0], nil
}

func devicesShow(ctx context.Context, a *app, fs *flag.FlagSet, args []string) error {
	name, err := deviceArg(fs, args)
	if err != nil {
		return err
	}
	return printObject(ctx, a, http.MethodGet, apiPath("devices", name), nil, a.printDevice)
}

func (a *app) printDevice(d device) error {
	tw := a.table()
	fmt.Fprintf(tw, "Name:\t%s\n", d.Name)
	fmt.Fprintf(tw, "Status:\t%s\n", d.Status)
	fmt.Fprintf(tw, "Fleet:\t%s\n", dash(d.Fleet))
	fmt.Fprintf(tw, "Last seen:\t%s\n", fmtTimePtr(d.LastSeen))
	fmt.Fprintf(tw, "Agent version:\t%s\n", dash(d.AgentVersion))
	fmt.Fprintf(tw, "Tags:\t%s\n", fmtTags(d.Tags))
	fmt.Fprintf(tw, "Enrolled:\t%s\n", fmtTime(d.EnrolledAt))
	if d.CertNotAfter != nil {
		fmt.Fprintf(tw, "Certificate expires:\t%s\n", fmtTimePtr(d.CertNotAfter))
	}
	if d.DecommissionedAt != nil {
		fmt.Fprintf(tw, "Decommissioned:\t%s\n", fmtTimePtr(d.DecommissionedAt))
	}
	var hw struct {
		Model        string   `json:"model"`
		SoC          string   `json:"soc"`
		Arch         string   `json:"arch"`
		MemoryBytes  int64    `json:"memory_bytes"`
		CPUCores     int      `json:"cpu_cores"`
		Accelerators []string `json:"accelerators"`
		OS           string   `json:"os"`
		Kernel       string   `json:"kernel"`
	}
	if len(d.Hardware) > 0 && json.Unmarshal(d.Hardware, &hw) == nil {
		fmt.Fprintf(tw, "Model:\t%s\n", dash(hw.Model))
		fmt.Fprintf(tw, "SoC / arch:\t%s / %s\n", dash(hw.SoC), dash(hw.Arch))
		fmt.Fprintf(tw, "CPU cores / memory:\t%d / %d MiB\n", hw.CPUCores, hw.MemoryBytes>>20)
		fmt.Fprintf(tw, "Accelerators:\t%s\n", dash(strings.Join(hw.Accelerators, ", ")))
		fmt.Fprintf(tw, "OS / kernel:\t%s / %s\n", dash(hw.OS), dash(hw.Kernel))
	}
	if len(d.Installed) > 0 && string(d.Installed) != "null" && string(d.Installed) != "[]" {
		fmt.Fprintf(tw, "Installed:\t%s\n", d.Installed)
	}
	return tw.Flush()
}

func devicesDecommission(ctx context.Context, a *app, fs *flag.FlagSet, args []string) error {
	name, err := deviceArg(fs, args)
	if err != nil {
		return err
	}
	c, err := a.api()
	if err != nil {
		return err
	}
	resp, err := c.do(ctx, http.MethodPost, apiPath("devices", name, "decommission"), nil, nil)
	if err != nil {
		return err
	}
	if a.jsonOut() {
		return a.writeRaw(resp.body)
	}
	fmt.Fprintf(a.stdout, "decommissioned %s: its certificate is refused from now on; the agent wipes its credentials at its next contact\n", name)
	return nil
}

// logRequest is the REST shape of a log request.
type logRequest struct {
	ID     string `json:"id"`
	Device string `json:"device"`
	State  string `json:"state"`
	Detail string `json:"detail"`
	Size   int64  `json:"size"`
}

// Log request states that end the wait.
const (
	logComplete = "completed"
	logFailed   = "failed"
)

// maxLogBundle bounds the decompressed logs meshctl prints (the agent caps
// the compressed upload at 8 MiB).
const maxLogBundle = 256 << 20

func devicesLogs(ctx context.Context, a *app, fs *flag.FlagSet, args []string) error {
	since := fs.String("since", "1h", "logs since a `duration` ago (e.g. 30m) or an RFC 3339 time")
	lines := fs.Int("lines", 0, "at most this many lines (0 = server default)")
	wait := fs.Bool("wait", false, "wait until the device has uploaded the logs and print them")
	timeout := fs.Duration("timeout", 5*time.Minute, "with -wait, give up after this long")
	out := fs.String("out", "", "with -wait, write the logs to `FILE` instead of stdout")
	name, err := deviceArg(fs, args)
	if err != nil {
		return err
	}
	body := map[string]any{}
	if *since != "" {
		t, err := parseSince(*since, time.Now())
		if err != nil {
			return usagef("-since %q: %v", *since, err)
		}
		body["since"] = t.UTC().Format(time.RFC3339)
	}
	if *lines < 0 {
		return usagef("-lines %d: want 0 or more", *lines)
	}
	if *lines > 0 {
		body["max_lines"] = *lines
	}
	c, err := a.api()
	if err != nil {
		return err
	}
	resp, err := c.do(ctx, http.MethodPost, apiPath("devices", name, "log-requests"), nil, body)
	if err != nil {
		return err
	}
	var lr logRequest
	if err := decodeBody(resp, &lr); err != nil {
		return err
	}
	if !*wait {
		if a.jsonOut() {
			return a.writeRaw(resp.body)
		}
		fmt.Fprintf(a.stdout, "log request %s queued; the device uploads at its next heartbeat.\nFetch later with: meshctl devices logs %s -wait, or GET /api/v1/log-requests/%s/bundle\n", lr.ID, name, lr.ID)
		return nil
	}
	wctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	if err := a.waitLogs(wctx, c, lr.ID); err != nil {
		return err
	}
	return a.fetchBundle(ctx, c, lr.ID, *out)
}

func parseSince(s string, now time.Time) (time.Time, error) {
	if d, err := time.ParseDuration(s); err == nil {
		if d < 0 {
			return time.Time{}, errors.New("want a positive duration")
		}
		return now.Add(-d), nil
	}
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		return time.Time{}, errors.New("want a duration such as 30m or an RFC 3339 time")
	}
	return t, nil
}

// waitLogs polls the log request until it completes or fails.
func (a *app) waitLogs(ctx context.Context, c *client, id string) error {
	tick := time.NewTicker(a.pollEvery)
	defer tick.Stop()
	for {
		resp, err := c.do(ctx, http.MethodGet, apiPath("log-requests", id), nil, nil)
		if err != nil {
			if ctx.Err() != nil {
				return fmt.Errorf("log request %s: gave up waiting (raise -timeout, or fetch it later)", id)
			}
			return err
		}
		var lr logRequest
		if err := decodeBody(resp, &lr); err != nil {
			return err
		}
		switch {
		case lr.State == logComplete:
			return nil
		case lr.State == logFailed:
			return fmt.Errorf("log request %s failed: %s", id, dash(lr.Detail))
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("log request %s is still %s: gave up waiting (is the device online? raise -timeout)", id, lr.State)
		case <-tick.C:
		}
	}
}

func (a *app) fetchBundle(ctx context.Context, c *client, id, out string) error {
	resp, err := c.stream(ctx, http.MethodGet, apiPath("log-requests", id, "bundle"), nil)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	zr, err := gzip.NewReader(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return fmt.Errorf("log bundle: %w", err)
	}
	w := a.stdout
	if out != "" {
		f, err := os.OpenFile(out, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
		if err != nil {
			return err
		}
		defer f.Close()
		w = f
	}
	n, err := io.Copy(w, io.LimitReader(zr, maxLogBundle+1))
	if err != nil {
		return fmt.Errorf("log bundle: %w", err)
	}
	if n > maxLogBundle {
		return fmt.Errorf("log bundle: larger than %d bytes uncompressed; truncated", maxLogBundle)
	}
	if out != "" {
		fmt.Fprintf(a.stderr, "wrote %d bytes of logs to %s\n", n, out)
	}
	return nil
}
