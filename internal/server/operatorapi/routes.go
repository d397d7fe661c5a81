package operatorapi

import "net/http"

// routes registers every route group. To add a group, write its file
// (artifacts.go, trust.go, groups.go, rollouts.go) with a
// registerX(mux *http.ServeMux) method that uses a.handle(mux, pattern,
// permission, handler), add its dependency to Config, and add one line here.
//
// Helpers for route files (all in this package):
//   - a.handle: authentication + permission check; the handler returns an error
//   - decodeJSON / decodeOptionalJSON: bounded body, unknown fields refused
//   - writeJSON, writeNoContent; errors go through statusOf (errors.go)
//   - parsePage + newList: limit/offset and the list body
//   - Principal.Actor(): the audit actor, for tx.AppendAudit in the same transaction
func (a *API) routes(mux *http.ServeMux) {
	a.registerSession(mux)
	a.registerMe(mux)
	a.registerEnrollmentTokens(mux)
	a.registerDevices(mux)
	a.registerProvision(mux)
	a.registerLogRequests(mux)
	a.registerAudit(mux)
	a.registerUsers(mux)
	a.registerAPIKeys(mux)
	a.registerArtifacts(mux)
	a.registerTrust(mux)
	a.registerGroups(mux)
	a.registerRollouts(mux)
}
