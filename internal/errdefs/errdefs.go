// Package errdefs holds the handful of error kinds that cross package
// boundaries. Callers wrap them with context and test them with errors.Is;
// deviceapi maps them to gRPC codes and operatorapi to HTTP statuses, each in
// exactly one function.
package errdefs

import "errors"

var (
	ErrNotFound        = errors.New("not found")
	ErrConflict        = errors.New("conflict")
	ErrInvalid         = errors.New("invalid")
	ErrUnauthenticated = errors.New("unauthenticated")
	ErrPermission      = errors.New("permission denied")
	ErrExpired         = errors.New("expired")
	ErrDecommissioned  = errors.New("device decommissioned")
	ErrUnavailable     = errors.New("unavailable")
)

// Invalid wraps a user-facing validation message as ErrInvalid.
func Invalid(msg string) error { return &kindError{kind: ErrInvalid, msg: msg} }

// Conflict wraps a user-facing message as ErrConflict.
func Conflict(msg string) error { return &kindError{kind: ErrConflict, msg: msg} }

// NotFound wraps a user-facing message as ErrNotFound.
func NotFound(msg string) error { return &kindError{kind: ErrNotFound, msg: msg} }

// kindError carries a message meant for the client, unlike fmt.Errorf wraps
// whose context may be internal.
type kindError struct {
	kind error
	msg  string
}

func (e *kindError) Error() string { return e.msg }
func (e *kindError) Unwrap() error { return e.kind }

// PublicMessage returns the client-safe message of err if it was built with
// Invalid, Conflict or NotFound, or "" otherwise.
func PublicMessage(err error) string {
	var k *kindError
	if errors.As(err, &k) {
		return k.msg
	}
	return ""
}
