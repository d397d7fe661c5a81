package cli

import (
	"context"
	"flag"
	"fmt"
	"net/http"
	"time"
)

func apiKeysGroup() *group {
	return &group{
		name:    "api-keys",
		summary: "API keys (needs apikeys.manage): list, create (the key is shown once), delete.",
		cmds: []*command{
			{name: "list", summary: "list keys (never the secrets)", run: apiKeysList},
			{name: "create", args: "NAME", summary: "create a key with a role; prints the key once", run: apiKeysCreate},
			{name: "delete", args: "ID", summary: "revoke a key at once", run: apiKeysDelete},
		},
	}
}

type apiKey struct {
	ID         string     `json:"id"`
	Name       string     `json:"name"`
	Role       string     `json:"role"`
	Owner      string     `json:"owner"`
	Key        string     `json:"key,omitempty"`
	CreatedAt  time.Time  `json:"created_at"`
	LastUsedAt *time.Time `json:"last_used_at"`
}

func apiKeysList(ctx context.Context, a *app, fs *flag.FlagSet, args []string) error {
	_, q, err := parsePaged(fs, args, 0, 0)
	if err != nil {
		return err
	}
	return printList(ctx, a, apiPath("api-keys"), q, "ID\tNAME\tROLE\tOWNER\tCREATED\tLAST USED", func(k apiKey) string {
		return fmt.Sprintf("%s\t%s\t%s\t%s\t%s\t%s", k.ID, k.Name, k.Role, dash(k.Owner), fmtTime(k.CreatedAt), fmtTimePtr(k.LastUsedAt))
	})
}

func apiKeysCreate(ctx context.Context, a *app, fs *flag.FlagSet, args []string) error {
	role := fs.String("role", "", "`role`: admin, operator, approver or viewer (required)")
	pos, err := parseArgs(fs, args, 1, 1)
	if err != nil {
		return err
	}
	if *role == "" {
		return usagef("api-keys create: -role is required (admin, operator, approver or viewer)")
	}
	return printObject(ctx, a, http.MethodPost, apiPath("api-keys"), map[string]string{"name": pos[0], "role": *role}, func(k apiKey) error {
		fmt.Fprintf(a.stdout, "created API key %s (%s, role %s). It is shown only this once:\n%s\n", k.ID, k.Name, k.Role, k.Key)
		return nil
	})
}

func apiKeysDelete(ctx context.Context, a *app, fs *flag.FlagSet, args []string) error {
	pos, err := parseArgs(fs, args, 1, 1)
	if err != nil {
		return err
	}
	return deleteObject(ctx, a, apiPath("api-keys", pos[0]), fmt.Sprintf("revoked API key %s", pos[0]))
}
