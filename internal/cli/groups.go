package cli

import (
	"context"
	"flag"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/meshanics/meshanics/internal/names"
)

func groupsGroup() *group {
	return &group{
		name:    "groups",
		summary: "Static device groups, the targets of rollouts.",
		cmds: []*command{
			{name: "create", args: "NAME DEVICE…", summary: "create a group; names that match no device are listed, not dropped", run: groupsCreate},
			{name: "list", summary: "list groups", run: groupsList},
			{name: "show", args: "NAME", summary: "show a group and its devices", run: groupsShow},
			{name: "add", args: "NAME DEVICE…", summary: "add devices to a group", run: groupsChange("add")},
			{name: "remove", args: "NAME DEVICE…", summary: "remove devices from a group", run: groupsChange("remove")},
			{name: "delete", args: "NAME", summary: "delete a group (rollouts keep their devices)", run: groupsDelete},
		},
	}
}

type groupInfo struct {
	Name      string    `json:"name"`
	Devices   []string  `json:"devices"`
	Size      int       `json:"size"`
	CreatedBy string    `json:"created_by"`
	CreatedAt time.Time `json:"created_at"`
	UpdatedAt time.Time `json:"updated_at"`
}

type groupResult struct {
	Group      groupInfo `json:"group"`
	Unresolved []string  `json:"unresolved"`
	NotMembers []string  `json:"not_members"`
}

func checkDeviceNames(devs []string) error {
	for _, d := range devs {
		if err := names.ValidateDevice(d); err != nil {
			return usagef("%v", err)
		}
	}
	return nil
}

func (a *app) showGroupResult(res groupResult, verb string) error {
	fmt.Fprintf(a.stdout, "Group %s %s: %d device(s)\n", res.Group.Name, verb, res.Group.Size)
	if len(res.Unresolved) > 0 {
		fmt.Fprintf(a.stdout, "Unresolved (no such device): %s\n", strings.Join(res.Unresolved, " "))
	}
	if len(res.NotMembers) > 0 {
		fmt.Fprintf(a.stdout, "Not members: %s\n", strings.Join(res.NotMembers, " "))
	}
	return nil
}

func groupsCreate(ctx context.Context, a *app, fs *flag.FlagSet, args []string) error {
	pos, err := parseArgs(fs, args, 1, -1)
	if err != nil {
		return err
	}
	if err := checkDeviceNames(pos[1:]); err != nil {
		return err
	}
	devices := pos[1:]
	if devices == nil {
		devices = []string{}
	}
	return printObject(ctx, a, http.MethodPost, apiPath("groups"), map[string]any{"name": pos[0], "devices": devices}, func(res groupResult) error {
		return a.showGroupResult(res, "created")
	})
}

func groupsChange(op string) func(context.Context, *app, *flag.FlagSet, []string) error {
	return func(ctx context.Context, a *app, fs *flag.FlagSet, args []string) error {
		pos, err := parseArgs(fs, args, 2, -1)
		if err != nil {
			return err
		}
		if err := checkDeviceNames(pos[1:]); err != nil {
			return err
		}
		return printObject(ctx, a, http.MethodPost, apiPath("groups", pos[0], "members"), map[string]any{op: pos[1:]}, func(res groupResult) error {
			return a.showGroupResult(res, "updated")
		})
	}
}

func groupsList(ctx context.Context, a *app, fs *flag.FlagSet, args []string) error {
	_, q, err := parsePaged(fs, args, 0, 0)
	if err != nil {
		return err
	}
	return printList(ctx, a, apiPath("groups"), q, "NAME\tDEVICES\tCREATED BY\tUPDATED", func(g groupInfo) string {
		return fmt.Sprintf("%s\t%d\t%s\t%s", g.Name, g.Size, g.CreatedBy, fmtTime(g.UpdatedAt))
	})
}

func groupsShow(ctx context.Context, a *app, fs *flag.FlagSet, args []string) error {
	pos, err := parseArgs(fs, args, 1, 1)
	if err != nil {
		return err
	}
	return printObject(ctx, a, http.MethodGet, apiPath("groups", pos[0]), nil, func(g groupInfo) error {
		fmt.Fprintf(a.stdout, "Group:    %s\nDevices:  %d\nCreated:  %s by %s\nUpdated:  %s\n", g.Name, g.Size, fmtTime(g.CreatedAt), g.CreatedBy, fmtTime(g.UpdatedAt))
		for _, d := range g.Devices {
			fmt.Fprintf(a.stdout, "  %s\n", d)
		}
		return nil
	})
}

func groupsDelete(ctx context.Context, a *app, fs *flag.FlagSet, args []string) error {
	pos, err := parseArgs(fs, args, 1, 1)
	if err != nil {
		return err
	}
	return deleteObject(ctx, a, apiPath("groups", pos[0]), fmt.Sprintf("Group %s deleted", pos[0]))
}
