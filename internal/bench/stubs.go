package bench

import (
	"context"
	"io"
)

func runRollout(context.Context, []string, io.Reader, io.Writer, io.Writer) error {
	return errNotImplemented
}
func runApply(context.Context, []string, io.Reader, io.Writer, io.Writer) error {
	return errNotImplemented
}
