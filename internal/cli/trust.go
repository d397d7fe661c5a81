package cli

import (
	"context"
	"flag"
	"fmt"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/meshanics/meshanics/internal/ceremony"
)

func trustGroup() *group {
	return &group{
		name:    "trust",
		summary: "The update trust center: roles, keys, versions, expiry; the server's online keys.",
		cmds: []*command{
			{name: "show", summary: "key ids, thresholds, versions and expiry of every TUF role", run: trustShow},
			{name: "online-keys", summary: "print (or -out FILE) the server's online public keys for meshctl tuf init", run: trustOnlineKeys},
			{name: "rotate-key", args: "ROLE", summary: "generate a new online key (snapshot, timestamp or publisher) for the next ceremony", run: trustRotateKey},
		},
	}
}

type trustRole struct {
	Role           string    `json:"role"`
	Online         bool      `json:"online"`
	Version        int64     `json:"version"`
	Expires        time.Time `json:"expires"`
	Threshold      int       `json:"threshold"`
	KeyIDs         []string  `json:"keyids"`
	Paths          []string  `json:"paths"`
	ServerHoldsKey bool      `json:"server_holds_key"`
}

func trustShow(ctx context.Context, a *app, fs *flag.FlagSet, args []string) error {
	if _, err := parseArgs(fs, args, 0, 0); err != nil {
		return err
	}
	return printObject(ctx, a, http.MethodGet, apiPath("trust"), nil, a.showTrust)
}

// trustInfo is the body of GET /api/v1/trust.
type trustInfo struct {
	Initialized bool        `json:"initialized"`
	Roles       []trustRole `json:"roles"`
}

func (a *app) showTrust(info trustInfo) error {
	if !info.Initialized {
		fmt.Fprintln(a.stdout, "Update trust is not initialized: run meshctl tuf init / export / import (or start the server with -dev).")
		return nil
	}
	tw := a.table()
	fmt.Fprintln(tw, "ROLE\tKEYS\tVERSION\tEXPIRES\tTHRESHOLD\tKEY IDS")
	for _, r := range info.Roles {
		where := "offline"
		if r.Online {
			where = "online"
			if !r.ServerHoldsKey {
				where = "online (key missing here)"
			}
		}
		ids := make([]string, len(r.KeyIDs))
		for i, id := range r.KeyIDs {
			ids[i] = shortID(id)
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%d\t%s\n", r.Role, where, r.Version, fmtTime(r.Expires), r.Threshold, strings.Join(ids, ","))
	}
	return tw.Flush()
}

func shortID(id string) string {
	if len(id) > 16 {
		return id[:16]
	}
	return id
}

func trustOnlineKeys(ctx context.Context, a *app, fs *flag.FlagSet, args []string) error {
	out := fs.String("out", "", "write the keys to `FILE` (for meshctl tuf init -online-keys)")
	if _, err := parseArgs(fs, args, 0, 0); err != nil {
		return err
	}
	c, err := a.api()
	if err != nil {
		return err
	}
	resp, err := c.do(ctx, http.MethodGet, apiPath("trust", "online-keys"), nil, nil)
	if err != nil {
		return err
	}
	if _, err := ceremony.ParseOnlineKeys(resp.body); err != nil {
		return fmt.Errorf("server sent unusable online keys: %w", err)
	}
	if *out != "" {
		if err := os.WriteFile(*out, resp.body, 0o644); err != nil {
			return err
		}
		if !a.jsonOut() {
			fmt.Fprintf(a.stdout, "Wrote the server's online public keys to %s.\n", *out)
			return nil
		}
	}
	if a.jsonOut() || *out == "" {
		return a.writeRaw(resp.body)
	}
	return nil
}

func trustRotateKey(ctx context.Context, a *app, fs *flag.FlagSet, args []string) error {
	pos, err := parseArgs(fs, args, 1, 1)
	if err != nil {
		return err
	}
	return printObject(ctx, a, http.MethodPost, apiPath("trust", "online-keys", "rotate"), map[string]string{"role": pos[0]}, func(res rotatedKey) error {
		fmt.Fprintf(a.stdout, "The server generated a new %s key %s. It signs once the ceremony names it:\n  meshctl trust online-keys -out online.json\n", pos[0], res.KeyID)
		if pos[0] == "publisher" {
			fmt.Fprintln(a.stdout, "  meshctl tuf rotate-publisher -keys DIR -online-keys online.json && meshctl tuf import DIR")
		} else {
			fmt.Fprintln(a.stdout, "  meshctl tuf rotate-root -keys DIR -online-keys online.json && meshctl tuf import DIR")
		}
		return nil
	})
}

// rotatedKey is the body of POST /api/v1/trust/online-keys/rotate.
type rotatedKey struct {
	KeyID string `json:"keyid"`
}
