package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"sort"
	"time"

	"github.com/meshanics/meshanics/internal/errdefs"
)

// Group is a static group of device names (SPEC §7). Members is filled by
// GetGroup only; Size always.
type Group struct {
	Name      string
	Members   []string
	Size      int
	CreatedBy string
	CreatedAt time.Time
	UpdatedAt time.Time
}

// resolveChunk bounds the IN lists of device lookups.
const resolveChunk = 500

// ResolveDevices splits names into devices that exist and are not
// decommissioned, and the rest (unresolved), each sorted and deduplicated.
func (tx *Tx) ResolveDevices(ctx context.Context, names []string) (found, unresolved []string, err error) {
	uniq := dedupe(names)
	ok := make(map[string]bool, len(uniq))
	for start := 0; start < len(uniq); start += resolveChunk {
		chunk := uniq[start:min(start+resolveChunk, len(uniq))]
		args := make([]any, len(chunk))
		for i, n := range chunk {
			args[i] = n
		}
		err := tx.scanAll(ctx, func(r *sql.Rows) error {
			var n string
			if err := r.Scan(&n); err != nil {
				return err
			}
			ok[n] = true
			return nil
		}, "SELECT name FROM devices WHERE status <> 'decommissioned' AND name IN ("+Placeholders(len(chunk))+")", args...)
		if err != nil {
			return nil, nil, fmt.Errorf("resolve devices: %w", err)
		}
	}
	found, unresolved = []string{}, []string{}
	for _, n := range uniq {
		if ok[n] {
			found = append(found, n)
		} else {
			unresolved = append(unresolved, n)
		}
	}
	return found, unresolved, nil
}

func dedupe(names []string) []string {
	out := append([]string(nil), names...)
	sort.Strings(out)
	w := 0
	for i, n := range out {
		if i == 0 || n != out[i-1] {
			out[w] = n
			w++
		}
	}
	return out[:w]
}

// CreateGroup creates group name with the resolvable devices of members and
// returns the names that did not resolve (never silently dropped). A taken
// name is errdefs.ErrConflict.
func (tx *Tx) CreateGroup(ctx context.Context, name string, members []string, by string) (unresolved []string, err error) {
	now := ms(tx.Now())
	_, err = tx.Exec(ctx, "INSERT INTO device_groups (name, created_by, created_at, updated_at) VALUES (?, ?, ?, ?)", name, by, now, now)
	if errors.Is(err, errdefs.ErrConflict) {
		return nil, errdefs.Conflict(fmt.Sprintf("group %s already exists", name))
	}
	if err != nil {
		return nil, fmt.Errorf("create group: %w", err)
	}
	found, unresolved, err := tx.ResolveDevices(ctx, members)
	if err != nil {
		return nil, err
	}
	if err := tx.insertMembers(ctx, name, found); err != nil {
		return nil, err
	}
	return unresolved, nil
}

func (tx *Tx) insertMembers(ctx context.Context, group string, devices []string) error {
	const per = 400
	for start := 0; start < len(devices); start += per {
		chunk := devices[start:min(start+per, len(devices))]
		args := make([]any, 0, 2*len(chunk))
		q := "INSERT INTO group_members (group_name, device_name) VALUES "
		for i, d := range chunk {
			if i > 0 {
				q += ", "
			}
			q += "(?, ?)"
			args = append(args, group, d)
		}
		if _, err := tx.Exec(ctx, q+" ON CONFLICT DO NOTHING", args...); err != nil {
			return fmt.Errorf("insert group members: %w", err)
		}
	}
	return nil
}

// AddGroupMembers adds the resolvable devices to an existing group and
// returns the unresolved names.
func (tx *Tx) AddGroupMembers(ctx context.Context, name string, devices []string) (unresolved []string, err error) {
	if err := tx.touchGroup(ctx, name); err != nil {
		return nil, err
	}
	found, unresolved, err := tx.ResolveDevices(ctx, devices)
	if err != nil {
		return nil, err
	}
	return unresolved, tx.insertMembers(ctx, name, found)
}

// SetGroupMembers replaces the members of a group with the resolvable
// devices and returns the unresolved names.
func (tx *Tx) SetGroupMembers(ctx context.Context, name string, devices []string) (unresolved []string, err error) {
	if err := tx.touchGroup(ctx, name); err != nil {
		return nil, err
	}
	found, unresolved, err := tx.ResolveDevices(ctx, devices)
	if err != nil {
		return nil, err
	}
	if _, err := tx.Exec(ctx, "DELETE FROM group_members WHERE group_name = ?", name); err != nil {
		return nil, fmt.Errorf("replace group members: %w", err)
	}
	return unresolved, tx.insertMembers(ctx, name, found)
}

// RemoveGroupMembers removes devices from a group and returns the names
// that were not members.
func (tx *Tx) RemoveGroupMembers(ctx context.Context, name string, devices []string) (notMembers []string, err error) {
	if err := tx.touchGroup(ctx, name); err != nil {
		return nil, err
	}
	notMembers = []string{}
	for _, d := range dedupe(devices) {
		res, err := tx.Exec(ctx, "DELETE FROM group_members WHERE group_name = ? AND device_name = ?", name, d)
		if err != nil {
			return nil, fmt.Errorf("remove group member: %w", err)
		}
		if n, err := affected(res); err != nil {
			return nil, err
		} else if n == 0 {
			notMembers = append(notMembers, d)
		}
	}
	return notMembers, nil
}

func (tx *Tx) touchGroup(ctx context.Context, name string) error {
	res, err := tx.Exec(ctx, "UPDATE device_groups SET updated_at = ? WHERE name = ?", ms(tx.Now()), name)
	if err != nil {
		return fmt.Errorf("update group: %w", err)
	}
	if n, err := affected(res); err != nil {
		return err
	} else if n == 0 {
		return errdefs.NotFound(fmt.Sprintf("group %s not found", name))
	}
	return nil
}

// DeleteGroup removes a group. Rollouts keep their stored partition.
func (tx *Tx) DeleteGroup(ctx context.Context, name string) error {
	if _, err := tx.Exec(ctx, "DELETE FROM group_members WHERE group_name = ?", name); err != nil {
		return fmt.Errorf("delete group members: %w", err)
	}
	res, err := tx.Exec(ctx, "DELETE FROM device_groups WHERE name = ?", name)
	if err != nil {
		return fmt.Errorf("delete group: %w", err)
	}
	if n, err := affected(res); err != nil {
		return err
	} else if n == 0 {
		return errdefs.NotFound(fmt.Sprintf("group %s not found", name))
	}
	return nil
}

const groupCols = "g.name, g.created_by, g.created_at, g.updated_at, (SELECT COUNT(*) FROM group_members m WHERE m.group_name = g.name)"

func scanGroup(sc interface{ Scan(...any) error }) (Group, error) {
	var g Group
	var c, u int64
	if err := sc.Scan(&g.Name, &g.CreatedBy, &c, &u, &g.Size); err != nil {
		return Group{}, err
	}
	g.CreatedAt, g.UpdatedAt = fromMS(c), fromMS(u)
	return g, nil
}

// GetGroup returns a group with its members (sorted).
func (tx *Tx) GetGroup(ctx context.Context, name string) (Group, error) {
	g, err := scanGroup(tx.QueryRow(ctx, "SELECT "+groupCols+" FROM device_groups g WHERE g.name = ?", name))
	if errors.Is(err, errdefs.ErrNotFound) {
		return Group{}, errdefs.NotFound(fmt.Sprintf("group %s not found", name))
	}
	if err != nil {
		return Group{}, fmt.Errorf("get group: %w", err)
	}
	g.Members, err = tx.GroupMembers(ctx, name)
	return g, err
}

// GroupMembers returns the device names of a group, sorted.
func (tx *Tx) GroupMembers(ctx context.Context, name string) ([]string, error) {
	out := []string{}
	err := tx.scanAll(ctx, func(r *sql.Rows) error {
		var d string
		err := r.Scan(&d)
		out = append(out, d)
		return err
	}, "SELECT device_name FROM group_members WHERE group_name = ? ORDER BY device_name", name)
	if err != nil {
		return nil, fmt.Errorf("list group members: %w", err)
	}
	return out, nil
}

// ListGroups returns one page of groups by name, and the total.
func (tx *Tx) ListGroups(ctx context.Context, p Page) ([]Group, int, error) {
	p = p.norm()
	var total int
	if err := tx.QueryRow(ctx, "SELECT COUNT(*) FROM device_groups").Scan(&total); err != nil {
		return nil, 0, fmt.Errorf("count groups: %w", err)
	}
	out := []Group{}
	err := tx.scanAll(ctx, func(r *sql.Rows) error {
		g, err := scanGroup(r)
		out = append(out, g)
		return err
	}, "SELECT "+groupCols+" FROM device_groups g ORDER BY g.name LIMIT ? OFFSET ?", p.Limit, p.Offset)
	if err != nil {
		return nil, 0, fmt.Errorf("list groups: %w", err)
	}
	return out, total, nil
}
