// Package artifacts is the publishing service (SPEC §6): it validates an
// artifact's descriptor, streams its bytes into the content-addressed blob
// store, signs it into publisher metadata and records it with its audit
// event in one transaction, and answers lookups for the REST API and the
// rollout engine. Importers: the server composition root, operatorapi,
// the rollout engine (through its own small interface). Safe for
// concurrent use.
package artifacts
