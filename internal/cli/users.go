package cli

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"net/http"
	"strings"
	"time"
)

func usersGroup() *group {
	return &group{
		name:    "users",
		summary: "Console users (needs users.manage): list, create, delete.",
		cmds: []*command{
			{name: "list", summary: "list users", run: usersList},
			{name: "create", args: "NAME", summary: "create a user; the password is read from stdin (-password-stdin)", run: usersCreate},
			{name: "update", args: "NAME", summary: "change a user's role (-role) and/or password (-password-stdin)", run: usersUpdate},
			{name: "delete", args: "NAME", summary: "delete a user, end their sessions and revoke their API keys", run: usersDelete},
		},
	}
}

type user struct {
	Name      string    `json:"name"`
	Role      string    `json:"role"`
	CreatedAt time.Time `json:"created_at"`
}

func usersList(ctx context.Context, a *app, fs *flag.FlagSet, args []string) error {
	_, q, err := parsePaged(fs, args, 0, 0)
	if err != nil {
		return err
	}
	return printList(ctx, a, apiPath("users"), q, "NAME\tROLE\tCREATED", func(u user) string {
		return fmt.Sprintf("%s\t%s\t%s", u.Name, u.Role, fmtTime(u.CreatedAt))
	})
}

func usersCreate(ctx context.Context, a *app, fs *flag.FlagSet, args []string) error {
	role := fs.String("role", "", "`role`: admin, operator, approver or viewer (required)")
	fromStdin := fs.Bool("password-stdin", false, "read the password from the first line of stdin (required)")
	pos, err := parseArgs(fs, args, 1, 1)
	if err != nil {
		return err
	}
	if *role == "" {
		return usagef("users create: -role is required (admin, operator, approver or viewer)")
	}
	if !*fromStdin {
		return usagef("users create: pass -password-stdin and give the password on stdin (it never goes on the command line)")
	}
	pw, err := a.readPassword("users create")
	if err != nil {
		return err
	}
	return printObject(ctx, a, http.MethodPost, apiPath("users"), map[string]string{"name": pos[0], "role": *role, "password": pw}, func(u user) error {
		fmt.Fprintf(a.stdout, "created user %s (role %s)\n", u.Name, u.Role)
		return nil
	})
}

func usersDelete(ctx context.Context, a *app, fs *flag.FlagSet, args []string) error {
	pos, err := parseArgs(fs, args, 1, 1)
	if err != nil {
		return err
	}
	return deleteObject(ctx, a, apiPath("users", pos[0]), fmt.Sprintf("deleted user %s", pos[0]))
}

// readPassword reads the first line of stdin.
func (a *app) readPassword(cmd string) (string, error) {
	sc := bufio.NewScanner(a.stdin)
	sc.Buffer(make([]byte, 4096), 4096)
	if !sc.Scan() {
		return "", usagef("%s: no password on stdin", cmd)
	}
	return strings.TrimRight(sc.Text(), "\r"), nil
}

func usersUpdate(ctx context.Context, a *app, fs *flag.FlagSet, args []string) error {
	role := fs.String("role", "", "new `role`: admin, operator, approver or viewer")
	fromStdin := fs.Bool("password-stdin", false, "read a new password from the first line of stdin")
	pos, err := parseArgs(fs, args, 1, 1)
	if err != nil {
		return err
	}
	body := map[string]string{}
	if *role != "" {
		body["role"] = *role
	}
	if *fromStdin {
		pw, err := a.readPassword("users update")
		if err != nil {
			return err
		}
		body["password"] = pw
	}
	if len(body) == 0 {
		return usagef("users update: give -role and/or -password-stdin")
	}
	return printObject(ctx, a, http.MethodPatch, apiPath("users", pos[0]), body, func(u user) error {
		fmt.Fprintf(a.stdout, "updated user %s (role %s)\n", u.Name, u.Role)
		return nil
	})
}
