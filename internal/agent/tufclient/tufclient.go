// Package tufclient is the device side of the update trust (SPEC §5): the
// only way agent code gets artifact bytes. It refreshes TUF metadata from
// the pinned root.json through go-tuf's updater (root chain, timestamp,
// snapshot, targets, the publisher delegation; cache in <data>/tuf), resolves
// the assignment's target, cross-checks the assignment's sha256 and length
// against the verified target, and streams the bytes while hashing them,
// refusing anything longer, shorter or different.
//
// There is no option that skips any of this. Importers: the agent's
// composition root (which hands a *Client to the reconciler). A *Client is
// safe for concurrent use.
package tufclient

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/theupdateframework/go-tuf/v2/metadata"

	"github.com/meshanics/meshanics/internal/artifact"
	"github.com/meshanics/meshanics/internal/errdefs"
	devicev1 "github.com/meshanics/meshanics/proto/meshanics/device/v1"
)

// ErrVerification marks every refusal on trust grounds: bad signatures,
// rollback, mix-and-match, wrong digest or length, a target outside the
// delegation, an assignment that disagrees with the signed target.
var ErrVerification = errors.New("update verification failed")

// Config configures New.
type Config struct {
	// DataDir is the agent's data dir; the metadata cache lives in
	// <DataDir>/tuf/metadata.
	DataDir string
	// Root is the pinned trust anchor (root.json).
	Root []byte
	// ServerURL is the update repository, https://host:9444.
	ServerURL string
	// HTTP is the mutual-TLS client (the device certificate). Its
	// tls.Config.Time must be the same clock as Now.
	HTTP *http.Client
	// Now is the clock for TUF expiry (nil = time.Now).
	Now func() time.Time
	Log *slog.Logger
}

// Client fetches verified targets. Safe for concurrent use.
type Client struct {
	pinned     []byte
	cacheDir   string
	stagingDir string
	metaURL    string
	targetsURL string
	http       *http.Client
	now        func() time.Time
	log        *slog.Logger

	// mu serialises metadata refreshes: go-tuf's updater and its cache
	// directory are not safe for concurrent use.
	mu sync.Mutex
}

// MaxRootBytes bounds the pinned root.
const MaxRootBytes = 512 << 10

// New checks the pinned root and prepares the cache directory.
func New(cfg Config) (*Client, error) {
	if cfg.DataDir == "" || cfg.ServerURL == "" || cfg.HTTP == nil {
		return nil, errors.New("tufclient: data dir, server URL and HTTP client are required")
	}
	if len(cfg.Root) == 0 || len(cfg.Root) > MaxRootBytes {
		return nil, fmt.Errorf("tufclient: pinned root must be 1-%d bytes", MaxRootBytes)
	}
	root, err := metadata.Root().FromBytes(cfg.Root)
	if err != nil {
		return nil, fmt.Errorf("tufclient: pinned root: %w", err)
	}
	if err := root.VerifyDelegate(metadata.ROOT, root); err != nil {
		return nil, fmt.Errorf("tufclient: pinned root is not signed by its own keys: %w", err)
	}
	u, err := url.Parse(cfg.ServerURL)
	if err != nil || u.Scheme != "https" || u.Host == "" {
		return nil, fmt.Errorf("tufclient: server URL %q must be https://host:port", cfg.ServerURL)
	}
	c := &Client{
		pinned:     cfg.Root,
		cacheDir:   filepath.Join(cfg.DataDir, "tuf", "metadata"),
		stagingDir: filepath.Join(cfg.DataDir, "tuf", "staging"),
		metaURL:    strings.TrimRight(cfg.ServerURL, "/") + "/metadata",
		targetsURL: strings.TrimRight(cfg.ServerURL, "/") + "/targets",
		http:       cfg.HTTP,
		now:        cfg.Now,
		log:        cfg.Log,
	}
	if c.now == nil {
		c.now = time.Now
	}
	if c.log == nil {
		c.log = slog.New(slog.DiscardHandler)
	}
	c.log = c.log.With("component", "tufclient")
	for _, d := range []string{c.cacheDir, c.stagingDir} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, fmt.Errorf("tufclient: %w", err)
		}
	}
	return c, nil
}

// Verified is a target resolved through TUF.
type Verified struct {
	Path   string
	SHA256 string
	Length int64
	Custom artifact.Custom
}

// Resolve refreshes the metadata and returns the signed target a names,
// after checking that a agrees with it. Nothing is downloaded but metadata.
func (c *Client) Resolve(ctx context.Context, a *devicev1.Artifact) (Verified, error) {
	if a == nil {
		return Verified{}, fmt.Errorf("%w: no artifact", ErrVerification)
	}
	kind, name, version, _, err := artifact.ParseTargetPath(a.GetTargetPath())
	if err != nil {
		return Verified{}, fmt.Errorf("%w: %v", ErrVerification, err)
	}
	if kind != a.GetKind() || name != a.GetName() || version != a.GetVersion() {
		return Verified{}, fmt.Errorf("%w: assignment %s %s@%s does not match its target path %s", ErrVerification, a.GetKind(), a.GetName(), a.GetVersion(), a.GetTargetPath())
	}
	tf, err := c.targetInfo(ctx, a.GetTargetPath())
	if err != nil {
		return Verified{}, err
	}
	sum, ok := tf.Hashes["sha256"]
	if !ok || len(sum) != sha256.Size {
		return Verified{}, fmt.Errorf("%w: target %s carries no sha256", ErrVerification, tf.Path)
	}
	v := Verified{Path: tf.Path, SHA256: hex.EncodeToString(sum), Length: tf.Length}
	if subtle.ConstantTimeCompare([]byte(v.SHA256), []byte(strings.ToLower(a.GetSha256()))) != 1 || v.Length != a.GetLength() {
		return Verified{}, fmt.Errorf("%w: assignment says sha256 %.12s… length %d, signed target says %.12s… length %d",
			ErrVerification, a.GetSha256(), a.GetLength(), v.SHA256, v.Length)
	}
	if tf.Custom == nil {
		return Verified{}, fmt.Errorf("%w: target %s carries no descriptor", ErrVerification, tf.Path)
	}
	if v.Custom, err = artifact.DecodeTargetCustom(*tf.Custom); err != nil {
		return Verified{}, fmt.Errorf("%w: target descriptor: %v", ErrVerification, err)
	}
	if v.Custom.Kind != kind || v.Custom.Name != name || v.Custom.Version != version {
		return Verified{}, fmt.Errorf("%w: signed descriptor names %s %s@%s, target path says %s", ErrVerification, v.Custom.Kind, v.Custom.Name, v.Custom.Version, tf.Path)
	}
	return v, nil
}

// Fetch resolves a through TUF, then streams the target into w while
// hashing it; it fails (ErrVerification) on more, fewer or different bytes
// than the signed target, so the caller must treat w's contents as
// unverified until Fetch returns nil. On success the bytes written to w are
// exactly v.Length bytes with sha256 v.SHA256 (hashed once, as they
// streamed), and v.Custom is the signed descriptor.
func (c *Client) Fetch(ctx context.Context, a *devicev1.Artifact, w io.Writer) (Verified, error) {
	v, err := c.Resolve(ctx, a)
	if err != nil {
		return Verified{}, err
	}
	if err := c.download(ctx, v, w); err != nil {
		return Verified{}, err
	}
	return v, nil
}

// FetchFile is Fetch into a private staging file that is renamed to dst
// only once verified, so nothing unverified ever appears at dst (or in its
// directory). dst must be on the same file system as the data dir.
func (c *Client) FetchFile(ctx context.Context, a *devicev1.Artifact, dst string) (artifact.Custom, error) {
	v, err := c.Resolve(ctx, a)
	if err != nil {
		return artifact.Custom{}, err
	}
	f, err := os.CreateTemp(c.stagingDir, "fetch-*")
	if err != nil {
		return artifact.Custom{}, fmt.Errorf("staging file: %w", err)
	}
	tmp := f.Name()
	defer os.Remove(tmp) // no-op after the rename
	err = c.download(ctx, v, f)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return artifact.Custom{}, err
	}
	if err := os.Rename(tmp, dst); err != nil {
		return artifact.Custom{}, fmt.Errorf("place verified target: %w", err)
	}
	return v.Custom, nil
}

// download streams the target named by v (consistent-snapshot URL
// <dir>/<sha256>.<file>) into w, verifying length and digest.
func (c *Client) download(ctx context.Context, v Verified, w io.Writer) error {
	dir, base := v.Path[:strings.LastIndexByte(v.Path, '/')], v.Path[strings.LastIndexByte(v.Path, '/')+1:]
	u := c.targetsURL + "/" + dir + "/" + v.SHA256 + "." + base
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return fmt.Errorf("download %s: %w", v.Path, err)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return fmt.Errorf("download %s: %v: %w", v.Path, err, errdefs.ErrUnavailable)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("download %s: HTTP %d: %w", v.Path, resp.StatusCode, errdefs.ErrUnavailable)
	}
	if resp.ContentLength > v.Length {
		return fmt.Errorf("%w: %s: server announces %d bytes, signed length is %d", ErrVerification, v.Path, resp.ContentLength, v.Length)
	}
	h := sha256.New()
	n, err := copyHashed(w, h, io.LimitReader(resp.Body, v.Length+1))
	if err != nil {
		return fmt.Errorf("download %s: %w", v.Path, err)
	}
	switch {
	case n > v.Length:
		return fmt.Errorf("%w: %s: more than the signed %d bytes (endless data)", ErrVerification, v.Path, v.Length)
	case n < v.Length:
		return fmt.Errorf("%w: %s: %d bytes, signed length is %d", ErrVerification, v.Path, n, v.Length)
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != v.SHA256 {
		return fmt.Errorf("%w: %s: sha256 %.12s… does not match the signed %.12s…", ErrVerification, v.Path, got, v.SHA256)
	}
	return nil
}
