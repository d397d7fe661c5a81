package cli

import (
	"context"
	"flag"
	"fmt"
	"net/http"
	"strconv"
	"time"
)

func tokensGroup() *group {
	return &group{
		name:    "tokens",
		summary: "Enrollment tokens: mint one for a device install, list, revoke.",
		cmds: []*command{
			{name: "create", summary: "mint a token and print the install command (the token is shown once)", run: tokensCreate},
			{name: "list", summary: "list tokens (never their secrets)", run: tokensList},
			{name: "revoke", args: "ID", summary: "revoke a token at once", run: tokensRevoke},
		},
	}
}

// tokenCreateRequest is the body of POST /api/v1/enrollment-tokens.
type tokenCreateRequest struct {
	TTLSeconds int64             `json:"ttl_seconds,omitempty"`
	Uses       int               `json:"uses,omitempty"`
	Tags       map[string]string `json:"tags,omitempty"`
	Replace    bool              `json:"replace,omitempty"`
}

type tokenCreated struct {
	ID             string    `json:"id"`
	Token          string    `json:"token"`
	ExpiresAt      time.Time `json:"expires_at"`
	Uses           int       `json:"uses"`
	CAPin          string    `json:"ca_pin"`
	InstallCommand string    `json:"install_command"`
}

type tokenInfo struct {
	ID        string            `json:"id"`
	State     string            `json:"state"`
	CreatedBy string            `json:"created_by"`
	CreatedAt time.Time         `json:"created_at"`
	ExpiresAt time.Time         `json:"expires_at"`
	Uses      int               `json:"uses"`
	UsesLeft  int               `json:"uses_left"`
	Tags      map[string]string `json:"tags"`
	Replace   bool              `json:"replace"`
}

func tokensCreate(ctx context.Context, a *app, fs *flag.FlagSet, args []string) error {
	ttl := fs.Duration("ttl", time.Hour, "how long the token is valid (max 720h)")
	uses := fs.Int("uses", 1, "how many devices may enroll with it")
	replace := fs.Bool("replace", false, "allow replacing an active device of the same name (recovery of a wiped device)")
	tags := tagsFlag{}
	fs.Var(tags, "tag", "`key=value` tag applied to devices it enrolls (repeatable)")
	if _, err := parseArgs(fs, args, 0, 0); err != nil {
		return err
	}
	if *ttl < time.Second {
		return usagef("-ttl %v: want at least 1s", *ttl)
	}
	if *uses < 1 {
		return usagef("-uses %d: want at least 1", *uses)
	}
	c, err := a.api()
	if err != nil {
		return err
	}
	req := tokenCreateRequest{TTLSeconds: int64(ttl.Seconds()), Uses: *uses, Replace: *replace}
	if len(tags) > 0 {
		req.Tags = tags
	}
	resp, err := c.do(ctx, http.MethodPost, apiPath("enrollment-tokens"), nil, req)
	if err != nil {
		return err
	}
	if a.jsonOut() {
		return a.writeRaw(resp.body)
	}
	var t tokenCreated
	if err := decodeBody(resp, &t); err != nil {
		return err
	}
	fmt.Fprintf(a.stdout, "Token %s (id %s) for %d device(s), expires %s.\n", t.Token, t.ID, t.Uses, fmtTime(t.ExpiresAt))
	fmt.Fprintf(a.stdout, "It is shown only this once.\n\nCA pin: %s\n\nRun on the device:\n\n%s\n", t.CAPin, t.InstallCommand)
	return nil
}

func tokensList(ctx context.Context, a *app, fs *flag.FlagSet, args []string) error {
	_, q, err := parsePaged(fs, args, 0, 0)
	if err != nil {
		return err
	}
	return printList(ctx, a, apiPath("enrollment-tokens"), q, "ID\tSTATE\tUSES LEFT\tEXPIRES\tTAGS\tREPLACE\tCREATED BY", func(t tokenInfo) string {
		return fmt.Sprintf("%s\t%s\t%d/%d\t%s\t%s\t%s\t%s", t.ID, t.State, t.UsesLeft, t.Uses, fmtTime(t.ExpiresAt), fmtTags(t.Tags), strconv.FormatBool(t.Replace), t.CreatedBy)
	})
}

func tokensRevoke(ctx context.Context, a *app, fs *flag.FlagSet, args []string) error {
	pos, err := parseArgs(fs, args, 1, 1)
	if err != nil {
		return err
	}
	return deleteObject(ctx, a, apiPath("enrollment-tokens", pos[0]), fmt.Sprintf("revoked token %s", pos[0]))
}
