package updaterepo

import (
	"context"
	"fmt"
	"path/filepath"

	"github.com/meshanics/meshanics/internal/ceremony"
	"github.com/meshanics/meshanics/internal/server/store"
)

// DevCeremonyDir is where -dev keeps the offline keys it generated:
// separate from the online keys, and named in a loud log line.
func (r *Repository) DevCeremonyDir() string {
	return filepath.Join(r.dataDir, "tuf", "dev-ceremony-keys")
}

// InitDev runs the offline ceremony on this machine when the repository
// has no root yet (meshanics-server -dev). This defeats the point of
// offline keys (whoever owns this machine can re-root the fleet), which is
// why it is only for development and demos and says so loudly.
func (r *Repository) InitDev(ctx context.Context) error {
	dir := r.DevCeremonyDir()
	if _, err := r.TrustAnchor(ctx); err == nil {
		r.log.Warn("DEV MODE: update trust was created by a local ceremony; root and targets keys are on this machine", "ceremony_keys", dir)
		return nil
	}
	online, err := r.OnlineKeys(ctx)
	if err != nil {
		return err
	}
	if _, err := ceremony.Load(dir); err != nil {
		if _, err := ceremony.Init(dir, ceremony.InitOptions{Online: online, Now: r.now()}); err != nil {
			return fmt.Errorf("dev ceremony: %w", err)
		}
	}
	if _, err := r.ImportDir(ctx, dir, store.ActorSystem); err != nil {
		return fmt.Errorf("dev ceremony import: %w", err)
	}
	r.log.Warn("DEV MODE: ran the offline TUF ceremony on this server; root and targets keys are NOT offline. Never use -dev for a real fleet.",
		"ceremony_keys", dir)
	return nil
}

// ImportDir imports the bundle in a ceremony or export directory (see
// ceremony.Bundle).
func (r *Repository) ImportDir(ctx context.Context, dir, actor string) (ImportResult, error) {
	roots, targets, err := ceremony.Bundle(dir)
	if err != nil {
		return ImportResult{}, err
	}
	req := ImportRequest{Targets: targets}
	for _, b := range roots {
		req.Roots = append(req.Roots, b)
	}
	return r.Import(ctx, req, actor)
}
