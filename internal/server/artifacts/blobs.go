package artifacts

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"

	"github.com/meshanics/meshanics/internal/errdefs"
)

// Blobs is the content-addressed blob store (SPEC §11: <data>/blobs):
// <dir>/sha256/<first 2 hex>/<64 hex>. Writes hash while streaming into a
// temp file, fsync, then rename, so a blob path always holds exactly the
// bytes its name says. Safe for concurrent use (rename is atomic; the same
// content written twice lands on the same name).
type Blobs struct {
	dir string
}

// NewBlobs opens (creating) a blob store in dir.
func NewBlobs(dir string) (*Blobs, error) {
	for _, d := range []string{filepath.Join(dir, "sha256"), filepath.Join(dir, "tmp")} {
		if err := os.MkdirAll(d, 0o750); err != nil {
			return nil, fmt.Errorf("blob store: %w", err)
		}
	}
	return &Blobs{dir: dir}, nil
}

var hexRE = regexp.MustCompile(`^[0-9a-f]{64}$`)

func (b *Blobs) path(sum string) string {
	return filepath.Join(b.dir, "sha256", sum[:2], sum)
}

// ErrTooLarge reports an upload over the limit.
var ErrTooLarge = errors.New("upload too large")

// Put streams r into the store, reading at most limit bytes (more is
// ErrTooLarge), and returns the hex sha256 and length.
func (b *Blobs) Put(r io.Reader, limit int64) (sum string, n int64, err error) {
	f, err := os.CreateTemp(filepath.Join(b.dir, "tmp"), "upload-*")
	if err != nil {
		return "", 0, fmt.Errorf("blob temp file: %w", err)
	}
	tmp := f.Name()
	defer func() {
		if f != nil {
			f.Close()
		}
		os.Remove(tmp) // no-op after rename
	}()
	h := sha256.New()
	n, err = io.Copy(io.MultiWriter(f, h), io.LimitReader(r, limit+1))
	if err != nil {
		return "", 0, fmt.Errorf("write blob: %w", err)
	}
	if n > limit {
		return "", 0, fmt.Errorf("%w: more than %d bytes", ErrTooLarge, limit)
	}
	if err := f.Sync(); err != nil {
		return "", 0, fmt.Errorf("sync blob: %w", err)
	}
	if err := f.Close(); err != nil {
		return "", 0, fmt.Errorf("close blob: %w", err)
	}
	f = nil
	sum = hex.EncodeToString(h.Sum(nil))
	final := b.path(sum)
	if err := os.MkdirAll(filepath.Dir(final), 0o750); err != nil {
		return "", 0, fmt.Errorf("blob directory: %w", err)
	}
	if err := os.Rename(tmp, final); err != nil {
		return "", 0, fmt.Errorf("store blob: %w", err)
	}
	if err := syncDir(filepath.Dir(final)); err != nil {
		return "", 0, err
	}
	return sum, n, nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("sync %s: %w", dir, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("sync %s: %w", dir, err)
	}
	return nil
}

// Open opens the blob with hex sha256 sum, or an errdefs.ErrNotFound.
func (b *Blobs) Open(sum string) (*os.File, error) {
	if !hexRE.MatchString(sum) {
		return nil, errdefs.NotFound("blob not found")
	}
	f, err := os.Open(b.path(sum))
	if errors.Is(err, os.ErrNotExist) {
		return nil, errdefs.NotFound("blob not found")
	}
	if err != nil {
		return nil, fmt.Errorf("open blob: %w", err)
	}
	return f, nil
}
