// Package container applies container artifacts (SPEC §4.3) through the
// docker or podman CLI: pull by digest, replace the managed container
// meshanics-<name> (restart policy unless-stopped, env, loopback-only port
// mappings from the signed descriptor), keep the previous image, and start
// the previous digest again on rollback. Every call goes through execx.
// Imported by the agent's composition root and reconciler.
package container

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"

	"github.com/meshanics/meshanics/internal/agent/execx"
	"github.com/meshanics/meshanics/internal/errdefs"
)

// ErrNoRuntime means container artifacts cannot be applied here.
var ErrNoRuntime = errors.New("no container runtime")

// Select resolves the -container-runtime setting to an absolute binary:
// "auto" (podman if present, else docker), "podman", "docker", an absolute
// path, or "none". It returns ErrNoRuntime for "none" and for "auto" when
// neither is installed.
func Select(setting string) (string, error) {
	switch setting {
	case "none":
		return "", fmt.Errorf("container runtime: %w (disabled)", ErrNoRuntime)
	case "auto", "":
		for _, name := range []string{"podman", "docker"} {
			if p, err := execx.Find(name); err == nil {
				return p, nil
			}
		}
		return "", fmt.Errorf("container runtime: %w (neither podman nor docker found)", ErrNoRuntime)
	case "podman", "docker":
		p, err := execx.Find(setting)
		if err != nil {
			return "", fmt.Errorf("container runtime: %w", err)
		}
		return p, nil
	}
	if !filepath.IsAbs(setting) || filepath.Clean(setting) != setting {
		return "", fmt.Errorf("container runtime %q: %w: want auto, podman, docker, none or an absolute path", setting, errdefs.ErrInvalid)
	}
	if err := execx.Check(setting); err != nil {
		return "", fmt.Errorf("container runtime: %w", err)
	}
	return setting, nil
}

// run calls the runtime with a fixed argument list.
func (a *Applier) run(ctx context.Context, args ...string) (string, error) {
	res, err := execx.Run(ctx, execx.Cmd{Path: a.Bin, Args: args, Timeout: a.timeout(), MaxOutput: 16 << 10})
	if err != nil {
		return "", fmt.Errorf("%s %s: %w", filepath.Base(a.Bin), args[0], err)
	}
	return string(res.Stdout), nil
}
