package container

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/meshanics/meshanics/internal/agent/execx"
	"github.com/meshanics/meshanics/internal/agent/statefile"
	"github.com/meshanics/meshanics/internal/errdefs"
	"github.com/meshanics/meshanics/internal/names"
)

// Applier runs container artifacts with one runtime CLI. It holds no
// mutable state; safe for concurrent use on different slots.
type Applier struct {
	Bin     string        // absolute path of docker or podman (see Select)
	Timeout time.Duration // per runtime call, except pulls (which use ctx); 0 = 2 min
	// Crashpoint, when set, is called between the steps of an activation
	// or a rollback (the crash tests kill the process there); production
	// leaves it nil.
	Crashpoint func(name string)
}

func (a *Applier) crashpoint(name string) {
	if a.Crashpoint != nil {
		a.Crashpoint(name)
	}
}

func (a *Applier) timeout() time.Duration {
	if a.Timeout > 0 {
		return a.Timeout
	}
	return 2 * time.Minute
}

// Name is the managed container of an artifact: meshanics-<name suffix or
// artifact name>.
func Name(art *statefile.Artifact) string {
	if art.Container != nil && art.Container.Name != "" {
		return "meshanics-" + art.Container.Name
	}
	return "meshanics-" + art.Name
}

// Check re-validates the signed descriptor.
func (a *Applier) Check(art *statefile.Artifact) error {
	if art.Container == nil {
		return fmt.Errorf("container %s: %w: no container descriptor", art.Name, errdefs.ErrInvalid)
	}
	if err := art.Container.Validate(); err != nil {
		return fmt.Errorf("container %s: %w: %v", art.Name, errdefs.ErrInvalid, err)
	}
	return names.ValidateArtifact(art.Name)
}

// Stage pulls the image by digest (the download phase of a container).
func (a *Applier) Stage(ctx context.Context, art *statefile.Artifact) error {
	if err := a.Check(art); err != nil {
		return err
	}
	return a.ensureImage(ctx, art.Container.Image, true)
}

func (a *Applier) ensureImage(ctx context.Context, image string, pull bool) error {
	if _, err := a.run(ctx, "image", "inspect", "--format", "{{.Id}}", image); err == nil {
		return nil
	}
	if !pull {
		return fmt.Errorf("image %s is not present", image)
	}
	// The pull is bounded by ctx (the download deadline), not a.Timeout.
	_, err := execx.Run(ctx, execx.Cmd{Path: a.Bin, Args: []string{"pull", "--quiet", image}, Timeout: 24 * time.Hour, MaxOutput: 16 << 10})
	if err != nil {
		return fmt.Errorf("pull %s: %w", image, err)
	}
	return nil
}

// Activate replaces the managed container with one running next's image.
// The previous image stays in the runtime's store for a rollback.
func (a *Applier) Activate(ctx context.Context, next, prior *statefile.Artifact) error {
	if err := a.Check(next); err != nil {
		return err
	}
	if err := a.ensureImage(ctx, next.Container.Image, true); err != nil {
		return err
	}
	if err := a.removeFor(ctx, next, prior); err != nil {
		return err
	}
	a.crashpoint("container:removed") // nothing runs in the slot now
	return a.start(ctx, next)
}

// Undo removes next's container and starts prior's digest again (or leaves
// the slot empty). It works after an agent restart: prior comes from the
// journal and its image was kept.
func (a *Applier) Undo(ctx context.Context, next, prior *statefile.Artifact) error {
	if err := a.removeFor(ctx, next, prior); err != nil {
		return err
	}
	a.crashpoint("container:undo-removed")
	if prior == nil {
		return nil
	}
	if err := a.Check(prior); err != nil {
		return err
	}
	if err := a.ensureImage(ctx, prior.Container.Image, true); err != nil {
		return err
	}
	return a.start(ctx, prior)
}

// Remove stops and removes cur's container (a revert to nothing).
func (a *Applier) Remove(ctx context.Context, cur *statefile.Artifact, _ string) error {
	return a.removeFor(ctx, cur, nil)
}

// Forget removes the image of a version the slot keeps no longer. The
// runtime refuses while a container uses it, and the reconciler never
// passes the current or previous version, so this only frees disk.
func (a *Applier) Forget(ctx context.Context, art *statefile.Artifact) error {
	if art.Container == nil {
		return nil
	}
	if _, err := a.run(ctx, "image", "inspect", "--format", "{{.Id}}", art.Container.Image); err != nil {
		return nil // not present
	}
	_, err := a.run(ctx, "image", "rm", art.Container.Image)
	return err
}

// removeFor removes the managed containers of both artifacts (their names
// differ when the descriptor's name suffix changed).
func (a *Applier) removeFor(ctx context.Context, arts ...*statefile.Artifact) error {
	var done []string
	for _, art := range arts {
		if art == nil || slices.Contains(done, Name(art)) {
			continue
		}
		done = append(done, Name(art))
		out, err := a.run(ctx, "container", "inspect", "--format", "{{.Id}}", Name(art))
		if err != nil {
			var ee *execx.ExitError
			if errors.As(err, &ee) {
				continue // no such container
			}
			return err
		}
		if _, err := a.run(ctx, "rm", "--force", strings.TrimSpace(out)); err != nil {
			return err
		}
	}
	return nil
}

func (a *Applier) start(ctx context.Context, art *statefile.Artifact) error {
	_, err := a.run(ctx, RunArgs(art)...)
	return err
}

// RunArgs is the fixed argument list that creates and starts the managed
// container: only what the signed descriptor allows, ports bound to
// loopback, no privilege escalation, never a host mount.
func RunArgs(art *statefile.Artifact) []string {
	c := art.Container
	restart := c.Restart
	if restart == "" {
		restart = "unless-stopped"
	}
	args := []string{"run", "--detach", "--pull=never", "--name", Name(art), "--restart", restart,
		"--security-opt", "no-new-privileges",
		"--label", "io.meshanics.slot=" + art.Name, "--label", "io.meshanics.version=" + art.Version}
	keys := make([]string, 0, len(c.Env))
	for k := range c.Env {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		args = append(args, "--env", k+"="+c.Env[k])
	}
	for _, p := range c.Ports {
		proto := p.Protocol
		if proto == "" {
			proto = "tcp"
		}
		args = append(args, "--publish", "127.0.0.1:"+strconv.Itoa(p.Host)+":"+strconv.Itoa(p.Container)+"/"+proto)
	}
	args = append(args, c.Image)
	return append(args, c.Args...)
}
