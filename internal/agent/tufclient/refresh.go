package tufclient

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/theupdateframework/go-tuf/v2/metadata"
	"github.com/theupdateframework/go-tuf/v2/metadata/config"
	"github.com/theupdateframework/go-tuf/v2/metadata/updater"

	"github.com/meshanics/meshanics/internal/errdefs"
)

// targetInfo runs the TUF client workflow (go-tuf's updater) against the
// repository and returns the verified target info for path.
func (c *Client) targetInfo(ctx context.Context, path string) (*metadata.TargetFiles, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	cfg, err := config.New(c.metaURL, c.startRoot())
	if err != nil {
		return nil, fmt.Errorf("tuf config: %w", err)
	}
	cfg.LocalMetadataDir = c.cacheDir
	cfg.LocalTargetsDir = c.stagingDir // never used: targets are streamed by download
	cfg.RemoteTargetsURL = c.targetsURL
	cfg.Fetcher = &fetcher{ctx: ctx, http: c.http}
	up, err := updater.New(cfg)
	if err != nil {
		return nil, classify(fmt.Errorf("load trusted root: %w", err))
	}
	// The reference time for expiry is the agent's clock (the same one
	// that feeds tls.Config.Time), not go-tuf's own time.Now at New.
	up.UnsafeSetRefTime(c.now().UTC())
	if err := up.Refresh(); err != nil {
		return nil, classify(fmt.Errorf("refresh update metadata: %w", err))
	}
	tf, err := up.GetTargetInfo(path)
	if err != nil {
		return nil, classify(fmt.Errorf("resolve %s: %w", path, err))
	}
	return tf, nil
}

// startRoot is the newer of the pinned root and the cached root (which
// go-tuf only ever writes after verifying it against its predecessor).
func (c *Client) startRoot() []byte {
	cached, err := os.ReadFile(filepath.Join(c.cacheDir, "root.json"))
	if err != nil || len(cached) > MaxRootBytes {
		return c.pinned
	}
	cr, err := metadata.Root().FromBytes(cached)
	if err != nil {
		return c.pinned
	}
	pr, err := metadata.Root().FromBytes(c.pinned)
	if err != nil || cr.Signed.Version <= pr.Signed.Version {
		return c.pinned
	}
	return cached
}

// classify maps go-tuf's errors to the agent's kinds: expired metadata
// (errdefs.ErrExpired), unreachable repository (errdefs.ErrUnavailable),
// everything else a verification failure.
func classify(err error) error {
	var httpErr *metadata.ErrDownloadHTTP
	var netErr *downloadError
	switch {
	case errors.Is(err, &metadata.ErrExpiredMetadata{}):
		return fmt.Errorf("%w (update metadata expired; refusing new installs): %w", err, errdefs.ErrExpired)
	case errors.As(err, &netErr), errors.As(err, &httpErr):
		return fmt.Errorf("%w: %w", err, errdefs.ErrUnavailable)
	}
	return fmt.Errorf("%w: %w", ErrVerification, err)
}

// downloadError is a transport failure (not a verification failure).
type downloadError struct{ err error }

func (e *downloadError) Error() string { return e.err.Error() }
func (e *downloadError) Unwrap() error { return e.err }

// fetcher implements go-tuf's Fetcher over the mutual-TLS client, bounded
// by maxLength and cancelled with ctx.
type fetcher struct {
	ctx  context.Context
	http *http.Client
}

func (f *fetcher) DownloadFile(u string, maxLength int64, _ time.Duration) ([]byte, error) {
	req, err := http.NewRequestWithContext(f.ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, err
	}
	resp, err := f.http.Do(req)
	if err != nil {
		return nil, &downloadError{err}
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, &metadata.ErrDownloadHTTP{StatusCode: resp.StatusCode, URL: u}
	}
	if resp.ContentLength > maxLength {
		return nil, &metadata.ErrDownloadLengthMismatch{Msg: fmt.Sprintf("%s is %d bytes, at most %d expected", u, resp.ContentLength, maxLength)}
	}
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxLength+1))
	if err != nil {
		return nil, &downloadError{err}
	}
	if int64(len(data)) > maxLength {
		return nil, &metadata.ErrDownloadLengthMismatch{Msg: fmt.Sprintf("%s is more than the %d bytes expected", u, maxLength)}
	}
	return data, nil
}
