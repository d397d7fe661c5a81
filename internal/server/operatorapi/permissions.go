package operatorapi

import (
	"slices"
	"strings"
)

// Permission is "<area>.<verb>" (SPEC §8).
type Permission string

// Every permission of SPEC §8.
const (
	DevicesRead     Permission = "devices.read"
	DevicesWrite    Permission = "devices.write"
	EnrollmentWrite Permission = "enrollment.write"
	ArtifactsRead   Permission = "artifacts.read"
	ArtifactsWrite  Permission = "artifacts.write"
	GroupsRead      Permission = "groups.read"
	GroupsWrite     Permission = "groups.write"
	RolloutsRead    Permission = "rollouts.read"
	RolloutsWrite   Permission = "rollouts.write"
	RolloutsApprove Permission = "rollouts.approve"
	AuditRead       Permission = "audit.read"
	TrustManage     Permission = "trust.manage"
	UsersManage     Permission = "users.manage"
	APIKeysManage   Permission = "apikeys.manage"
)

// AllPermissions lists every permission.
var AllPermissions = []Permission{
	DevicesRead, DevicesWrite, EnrollmentWrite, ArtifactsRead, ArtifactsWrite,
	GroupsRead, GroupsWrite, RolloutsRead, RolloutsWrite, RolloutsApprove,
	AuditRead, TrustManage, UsersManage, APIKeysManage,
}

// Role is a built-in role.
type Role string

// The built-in roles of SPEC §8.
const (
	RoleAdmin    Role = "admin"
	RoleOperator Role = "operator"
	RoleApprover Role = "approver"
	RoleViewer   Role = "viewer"
)

// Roles lists the roles from most to least privileged.
var Roles = []Role{RoleAdmin, RoleApprover, RoleOperator, RoleViewer}

// ParseRole returns the role named s.
func ParseRole(s string) (Role, bool) {
	r := Role(s)
	return r, slices.Contains(Roles, r)
}

// Permissions returns the permissions a role grants:
//
//	admin    every permission
//	operator every permission but users.manage, apikeys.manage, trust.manage
//	         and rollouts.approve
//	approver operator + rollouts.approve
//	viewer   every *.read
//
// An unknown role grants nothing.
func (r Role) Permissions() []Permission {
	var out []Permission
	for _, p := range AllPermissions {
		if r.Has(p) {
			out = append(out, p)
		}
	}
	return out
}

// Has reports whether r grants p.
func (r Role) Has(p Permission) bool {
	switch r {
	case RoleAdmin:
		return slices.Contains(AllPermissions, p)
	case RoleApprover:
		return RoleOperator.Has(p) || p == RolloutsApprove
	case RoleOperator:
		switch p {
		case UsersManage, APIKeysManage, TrustManage, RolloutsApprove:
			return false
		}
		return slices.Contains(AllPermissions, p)
	case RoleViewer:
		return strings.HasSuffix(string(p), ".read") && slices.Contains(AllPermissions, p)
	}
	return false
}
