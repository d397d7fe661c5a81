package cli

// groups lists meshctl's command groups in the order help shows them. To add
// a group, write its file (artifacts.go, rollouts.go, …) with a function
// returning *group and add one line here.
func groups() []*group {
	return []*group{
		tokensGroup(),
		devicesGroup(),
		auditGroup(),
		usersGroup(),
		apiKeysGroup(),
		whoamiGroup(),
		artifactsGroup(),
		groupsGroup(),
		rolloutsGroup(),
		trustGroup(),
		tufGroup(),
		demoGroup(),
	}
}
