package operatorapi

import (
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestRolePermissions(t *testing.T) {
	tests := []struct {
		role Role
		want []Permission
	}{
		{RoleAdmin, AllPermissions},
		{RoleOperator, []Permission{DevicesRead, DevicesWrite, EnrollmentWrite, ArtifactsRead, ArtifactsWrite, GroupsRead, GroupsWrite, RolloutsRead, RolloutsWrite, AuditRead}},
		{RoleApprover, []Permission{DevicesRead, DevicesWrite, EnrollmentWrite, ArtifactsRead, ArtifactsWrite, GroupsRead, GroupsWrite, RolloutsRead, RolloutsWrite, RolloutsApprove, AuditRead}},
		{RoleViewer, []Permission{DevicesRead, ArtifactsRead, GroupsRead, RolloutsRead, AuditRead}},
		{Role("root"), nil},
	}
	for _, tt := range tests {
		if diff := cmp.Diff(tt.want, tt.role.Permissions()); diff != "" {
			t.Errorf("%s.Permissions() mismatch (-want +got):\n%s", tt.role, diff)
		}
	}
}
