package cli

import (
	"context"
	"flag"
	"fmt"
	"net/http"
	"strings"
)

func whoamiGroup() *group {
	return &group{
		name:    "whoami",
		summary: "Show who the API key is and what its role may do.",
		cmds:    []*command{{summary: "show the caller's identity, role and permissions", run: whoami}},
	}
}

func whoami(ctx context.Context, a *app, fs *flag.FlagSet, args []string) error {
	if _, err := parseArgs(fs, args, 0, 0); err != nil {
		return err
	}
	return printObject(ctx, a, http.MethodGet, apiPath("me"), nil, func(me identity) error {
		fmt.Fprintf(a.stdout, "%s (role %s)\npermissions: %s\n", me.Actor, me.Role, strings.Join(me.Permissions, ", "))
		return nil
	})
}

// identity is the body of GET /api/v1/me.
type identity struct {
	Actor       string   `json:"actor"`
	Role        string   `json:"role"`
	Permissions []string `json:"permissions"`
}
