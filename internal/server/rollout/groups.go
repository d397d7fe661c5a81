package rollout

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/meshanics/meshanics/internal/errdefs"
	"github.com/meshanics/meshanics/internal/names"
	"github.com/meshanics/meshanics/internal/server/store"
)

// maxGroupChange bounds the device names one request may carry.
const maxGroupChange = 100000

// GroupView is a group as the REST API shows it.
type GroupView struct {
	Name      string    `json:"name"`
	Devices   []string  `json:"devices,omitempty"`
	Size      int       `json:"size"`
	CreatedBy string    `json:"created_by"`
	CreatedAt time.Time `json:"created_at"`
	UpdatedAt time.Time `json:"updated_at"`
}

func groupViewOf(g store.Group) GroupView {
	return GroupView{Name: g.Name, Devices: g.Members, Size: g.Size, CreatedBy: g.CreatedBy, CreatedAt: g.CreatedAt, UpdatedAt: g.UpdatedAt}
}

// auditNames summarises a list of device names for an audit event, whose
// data is bounded (64 KiB): the count and the sha256 of the sorted,
// newline-joined list always, the names themselves when there are few.
func auditNames(names []string) map[string]any {
	sorted := append([]string(nil), names...)
	sort.Strings(sorted)
	sum := sha256.Sum256([]byte(strings.Join(sorted, "\n")))
	out := map[string]any{"count": len(sorted), "sha256": hex.EncodeToString(sum[:])}
	if len(sorted) <= 200 {
		out["names"] = sorted
	}
	return out
}

// checkNames validates device names; a malformed name is a request error,
// a well-formed unknown one is "unresolved".
func checkNames(devices []string) error {
	if len(devices) > maxGroupChange {
		return errdefs.Invalid(fmt.Sprintf("at most %d device names per request", maxGroupChange))
	}
	for _, d := range devices {
		if err := names.ValidateDevice(d); err != nil {
			return errdefs.Invalid(err.Error())
		}
	}
	return nil
}

// CreateGroup creates a static group and returns it with the names that did
// not resolve to a device.
func (r *Runner) CreateGroup(ctx context.Context, actor, name string, devices []string) (GroupView, []string, error) {
	if err := ValidateGroupName(name); err != nil {
		return GroupView{}, nil, err
	}
	if err := checkNames(devices); err != nil {
		return GroupView{}, nil, err
	}
	var g store.Group
	var unresolved []string
	err := r.db.Tx(ctx, func(tx *store.Tx) (err error) {
		if unresolved, err = tx.CreateGroup(ctx, name, devices, actor); err != nil {
			return err
		}
		if g, err = tx.GetGroup(ctx, name); err != nil {
			return err
		}
		_, err = tx.AppendAudit(ctx, store.Event{Actor: actor, Type: "group.created", Subject: name,
			Data: map[string]any{"devices": auditNames(g.Members), "unresolved": auditNames(unresolved)}})
		return err
	})
	return groupViewOf(g), unresolved, err
}

// ChangeGroup adds (add = true) or removes devices and returns the group
// with the names that did not resolve (add) or were not members (remove).
func (r *Runner) ChangeGroup(ctx context.Context, actor, name string, add bool, devices []string) (GroupView, []string, error) {
	if err := ValidateGroupName(name); err != nil {
		return GroupView{}, nil, errdefs.NotFound(fmt.Sprintf("group %s not found", truncate(name)))
	}
	if err := checkNames(devices); err != nil {
		return GroupView{}, nil, err
	}
	var g store.Group
	var left []string
	err := r.db.Tx(ctx, func(tx *store.Tx) (err error) {
		typ, key := "group.members_added", "unresolved"
		if add {
			left, err = tx.AddGroupMembers(ctx, name, devices)
		} else {
			typ, key = "group.members_removed", "not_members"
			left, err = tx.RemoveGroupMembers(ctx, name, devices)
		}
		if err != nil {
			return err
		}
		if g, err = tx.GetGroup(ctx, name); err != nil {
			return err
		}
		_, err = tx.AppendAudit(ctx, store.Event{Actor: actor, Type: typ, Subject: name,
			Data: map[string]any{"devices": auditNames(devices), key: auditNames(left)}})
		return err
	})
	return groupViewOf(g), left, err
}

// ReplaceGroup sets the members of a group and returns it with the names
// that did not resolve.
func (r *Runner) ReplaceGroup(ctx context.Context, actor, name string, devices []string) (GroupView, []string, error) {
	if err := ValidateGroupName(name); err != nil {
		return GroupView{}, nil, errdefs.NotFound(fmt.Sprintf("group %s not found", truncate(name)))
	}
	if err := checkNames(devices); err != nil {
		return GroupView{}, nil, err
	}
	var g store.Group
	var unresolved []string
	err := r.db.Tx(ctx, func(tx *store.Tx) (err error) {
		if unresolved, err = tx.SetGroupMembers(ctx, name, devices); err != nil {
			return err
		}
		if g, err = tx.GetGroup(ctx, name); err != nil {
			return err
		}
		_, err = tx.AppendAudit(ctx, store.Event{Actor: actor, Type: "group.members_replaced", Subject: name,
			Data: map[string]any{"devices": auditNames(g.Members), "unresolved": auditNames(unresolved)}})
		return err
	})
	return groupViewOf(g), unresolved, err
}

// DeleteGroup removes a group; rollouts keep their stored partition.
func (r *Runner) DeleteGroup(ctx context.Context, actor, name string) error {
	if err := ValidateGroupName(name); err != nil {
		return errdefs.NotFound(fmt.Sprintf("group %s not found", truncate(name)))
	}
	return r.db.Tx(ctx, func(tx *store.Tx) error {
		if err := tx.DeleteGroup(ctx, name); err != nil {
			return err
		}
		_, err := tx.AppendAudit(ctx, store.Event{Actor: actor, Type: "group.deleted", Subject: name})
		return err
	})
}

// Group returns one group with its members.
func (r *Runner) Group(ctx context.Context, name string) (GroupView, error) {
	if err := ValidateGroupName(name); err != nil {
		return GroupView{}, errdefs.NotFound(fmt.Sprintf("group %s not found", truncate(name)))
	}
	var g store.Group
	err := r.db.Read(ctx, func(tx *store.Tx) (err error) {
		g, err = tx.GetGroup(ctx, name)
		return err
	})
	return groupViewOf(g), err
}

// Groups returns one page of groups (without member lists) by name.
func (r *Runner) Groups(ctx context.Context, p store.Page) ([]GroupView, int, error) {
	var gs []store.Group
	var total int
	err := r.db.Read(ctx, func(tx *store.Tx) (err error) {
		gs, total, err = tx.ListGroups(ctx, p)
		return err
	})
	out := make([]GroupView, len(gs))
	for i, g := range gs {
		out[i] = groupViewOf(g)
	}
	return out, total, err
}
