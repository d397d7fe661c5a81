// Package updaterepo is the server's TUF update repository (SPEC §5): it
// holds the online snapshot, timestamp and publisher keys, signs published
// artifacts into publisher metadata, keeps timestamp/snapshot/publisher
// fresh, imports root and targets metadata signed by the offline ceremony
// (never holding those keys), serves metadata and targets on the repo
// listener, and describes the trust state for the operator ("trust
// center") and the enrollment response (the trust anchor).
//
// The database is the source of truth for every signed document, so any
// replica serves the same versions; a replica that loses a signing race
// (same role and version) reloads and signs again.
//
// Importers: the server composition root, operatorapi (trust routes), the
// artifacts publishing service. A *Repository is safe for concurrent use.
package updaterepo

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"github.com/theupdateframework/go-tuf/v2/metadata"

	"github.com/meshanics/meshanics/internal/atomicfile"
	"github.com/meshanics/meshanics/internal/ceremony"
	"github.com/meshanics/meshanics/internal/errdefs"
	"github.com/meshanics/meshanics/internal/server/store"
)

// DB is what the repository needs from the store.
type DB interface {
	Tx(ctx context.Context, fn func(tx *store.Tx) error) error
	Read(ctx context.Context, fn func(tx *store.Tx) error) error
	TUFDoc(ctx context.Context, role string, version int64) (store.TUFDoc, error)
}

// Blobs opens content-addressed target bytes by hex sha256.
type Blobs interface {
	Open(sha256Hex string) (*os.File, error)
}

// Config configures New.
type Config struct {
	DataDir string // keys in <DataDir>/tuf/keys, mirror in <DataDir>/tuf/repository
	DB      DB
	Blobs   Blobs
	Now     func() time.Time // nil = time.Now
	Log     *slog.Logger     // nil = discard
	// CheckInterval is how often Run looks for metadata to re-sign
	// (default 1 minute; the timestamp itself is re-signed hourly).
	CheckInterval time.Duration
}

// ErrNotInitialized reports a repository that has no root yet: the
// ceremony has not been imported (or the server was not started -dev).
var ErrNotInitialized = fmt.Errorf("update trust not initialized: run the ceremony (meshctl tuf init, export, import) or start the server with -dev: %w", errdefs.ErrUnavailable)

// Repository is the online half of the update trust. Safe for concurrent use.
type Repository struct {
	db       DB
	blobs    Blobs
	now      func() time.Time
	log      *slog.Logger
	dataDir  string
	keysDir  string
	repoDir  string
	interval time.Duration

	mu sync.Mutex
	// keys are the online private keys found in keysDir (guarded by mu
	// because RotateOnlineKey adds to them).
	keys []*ceremony.PrivateKey

	cache docCache
}

// New loads the online keys from <data>/tuf/keys, generating a key for
// each online role that has none (0600 files in a 0700 directory).
func New(cfg Config) (*Repository, error) {
	if cfg.DataDir == "" || cfg.DB == nil || cfg.Blobs == nil {
		return nil, errors.New("updaterepo: data dir, DB and blobs are required")
	}
	r := &Repository{
		db:       cfg.DB,
		blobs:    cfg.Blobs,
		now:      cfg.Now,
		log:      cfg.Log,
		dataDir:  cfg.DataDir,
		keysDir:  filepath.Join(cfg.DataDir, "tuf", "keys"),
		repoDir:  filepath.Join(cfg.DataDir, "tuf", "repository"),
		interval: cfg.CheckInterval,
	}
	if r.now == nil {
		r.now = time.Now
	}
	if r.log == nil {
		r.log = slog.New(slog.DiscardHandler)
	}
	r.log = r.log.With("component", "updaterepo")
	if r.interval <= 0 {
		r.interval = time.Minute
	}
	keys, err := ceremony.LoadKeys(r.keysDir)
	if err != nil {
		return nil, fmt.Errorf("online keys: %w", err)
	}
	for _, role := range []string{ceremony.RoleSnapshot, ceremony.RoleTimestamp, ceremony.RolePublisher} {
		if hasRole(keys, role) {
			continue
		}
		k, err := ceremony.NewKey(role)
		if err != nil {
			return nil, err
		}
		if err := ceremony.WriteKey(r.keysDir, k); err != nil {
			return nil, fmt.Errorf("online keys: %w", err)
		}
		r.log.Info("generated online key", "key", k)
		keys = append(keys, k)
	}
	r.keys = keys
	if err := os.MkdirAll(r.repoDir, 0o755); err != nil {
		return nil, fmt.Errorf("repository directory: %w", err)
	}
	return r, nil
}

func hasRole(keys []*ceremony.PrivateKey, role string) bool {
	for _, k := range keys {
		if k.Role == role {
			return true
		}
	}
	return false
}

// state is the newest document of every role (nil = none yet).
type state struct {
	root      *metadata.Metadata[metadata.RootType]
	targets   *metadata.Metadata[metadata.TargetsType]
	publisher *metadata.Metadata[metadata.TargetsType]
	snapshot  *metadata.Metadata[metadata.SnapshotType]
	timestamp *metadata.Metadata[metadata.TimestampType]
	// raw bodies of targets and publisher for snapshot hashes
	targetsRaw, publisherRaw []byte
}

func latest(ctx context.Context, tx *store.Tx, role string) ([]byte, error) {
	d, err := tx.LatestTUF(ctx, role)
	if errors.Is(err, errdefs.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	return d.Body, nil
}

// loadState reads the newest document of each role inside tx.
func loadState(ctx context.Context, tx *store.Tx) (*state, error) {
	st := &state{}
	var err error
	raw := map[string][]byte{}
	for _, role := range []string{ceremony.RoleRoot, ceremony.RoleTargets, ceremony.RolePublisher, ceremony.RoleSnapshot, ceremony.RoleTimestamp} {
		if raw[role], err = latest(ctx, tx, role); err != nil {
			return nil, err
		}
	}
	if b := raw[ceremony.RoleRoot]; b != nil {
		if st.root, err = metadata.Root().FromBytes(b); err != nil {
			return nil, fmt.Errorf("stored root: %w", err)
		}
	}
	if b := raw[ceremony.RoleTargets]; b != nil {
		if st.targets, err = metadata.Targets().FromBytes(b); err != nil {
			return nil, fmt.Errorf("stored targets: %w", err)
		}
		st.targetsRaw = b
	}
	if b := raw[ceremony.RolePublisher]; b != nil {
		if st.publisher, err = metadata.Targets().FromBytes(b); err != nil {
			return nil, fmt.Errorf("stored publisher: %w", err)
		}
		st.publisherRaw = b
	}
	if b := raw[ceremony.RoleSnapshot]; b != nil {
		if st.snapshot, err = metadata.Snapshot().FromBytes(b); err != nil {
			return nil, fmt.Errorf("stored snapshot: %w", err)
		}
	}
	if b := raw[ceremony.RoleTimestamp]; b != nil {
		if st.timestamp, err = metadata.Timestamp().FromBytes(b); err != nil {
			return nil, fmt.Errorf("stored timestamp: %w", err)
		}
	}
	return st, nil
}

// signerFor returns the online key that the current metadata names for
// role (root for snapshot/timestamp, the targets delegation for publisher).
func (r *Repository) signerFor(st *state, role string) (*ceremony.PrivateKey, error) {
	var ids []string
	switch role {
	case ceremony.RolePublisher:
		ids = ceremony.PublisherKeyIDs(st.targets)
	default:
		if rr := st.root.Signed.Roles[role]; rr != nil {
			ids = rr.KeyIDs
		}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, k := range r.keys {
		for _, id := range ids {
			if k.Role == role && k.ID == id {
				return k, nil
			}
		}
	}
	return nil, fmt.Errorf("this server holds none of the %s keys the trusted metadata names (copy <data>/tuf/keys from the replica that exported them, or re-run the ceremony with this server's online keys): %w", role, errdefs.ErrUnavailable)
}

// builder accumulates the documents one change signs.
type builder struct {
	r    *Repository
	st   *state
	now  time.Time
	docs []store.TUFDoc
}

func (b *builder) add(role string, version int64, body []byte, expires time.Time) {
	b.docs = append(b.docs, store.TUFDoc{Role: role, Version: version, Body: body, Expires: expires})
}

func encode[T metadata.Roles](m *metadata.Metadata[T]) ([]byte, error) {
	b, err := m.ToBytes(false)
	if err != nil {
		return nil, fmt.Errorf("encode metadata: %w", err)
	}
	return b, nil
}

// bumpPublisher signs publisher as version+1 with a fresh expiry.
func (b *builder) bumpPublisher() error {
	k, err := b.r.signerFor(b.st, ceremony.RolePublisher)
	if err != nil {
		return err
	}
	p := b.st.publisher
	if p == nil {
		p = metadata.Targets(b.now)
		p.Signed.Version = 0
		b.st.publisher = p
	}
	p.Signed.Version++
	p.Signed.Expires = b.now.Add(ceremony.PublisherExpiry).UTC()
	if err := ceremony.Sign(p, k); err != nil {
		return err
	}
	raw, err := encode(p)
	if err != nil {
		return err
	}
	b.st.publisherRaw = raw
	b.add(ceremony.RolePublisher, p.Signed.Version, raw, p.Signed.Expires)
	return nil
}

func metaFor(version int64, raw []byte) *metadata.MetaFiles {
	sum := sha256.Sum256(raw)
	return &metadata.MetaFiles{Version: version, Length: int64(len(raw)), Hashes: metadata.Hashes{"sha256": sum[:]}}
}

// bumpSnapshot signs snapshot as version+1 naming the current targets and
// publisher versions (with length and hash, so mix-and-match fails).
func (b *builder) bumpSnapshot() error {
	k, err := b.r.signerFor(b.st, ceremony.RoleSnapshot)
	if err != nil {
		return err
	}
	s := b.st.snapshot
	var version int64 = 1
	if s != nil {
		version = s.Signed.Version + 1
	}
	s = metadata.Snapshot(b.now.Add(ceremony.SnapshotExpiry).UTC())
	s.Signed.Version = version
	s.Signed.Meta = map[string]*metadata.MetaFiles{
		"targets.json":   metaFor(b.st.targets.Signed.Version, b.st.targetsRaw),
		"publisher.json": metaFor(b.st.publisher.Signed.Version, b.st.publisherRaw),
	}
	if err := ceremony.Sign(s, k); err != nil {
		return err
	}
	raw, err := encode(s)
	if err != nil {
		return err
	}
	b.st.snapshot = s
	b.add(ceremony.RoleSnapshot, version, raw, s.Signed.Expires)
	return b.bumpTimestamp(raw)
}

// bumpTimestamp signs timestamp as version+1 naming snapshot (raw given
// when the snapshot just changed; nil re-signs over the stored one).
func (b *builder) bumpTimestamp(snapRaw []byte) error {
	k, err := b.r.signerFor(b.st, ceremony.RoleTimestamp)
	if err != nil {
		return err
	}
	var version int64 = 1
	var meta *metadata.MetaFiles
	if b.st.timestamp != nil {
		version = b.st.timestamp.Signed.Version + 1
		meta = b.st.timestamp.Signed.Meta["snapshot.json"]
	}
	if snapRaw != nil {
		meta = metaFor(b.st.snapshot.Signed.Version, snapRaw)
	}
	t := metadata.Timestamp(b.now.Add(ceremony.TimestampExpiry).UTC())
	t.Signed.Version = version
	t.Signed.Meta = map[string]*metadata.MetaFiles{"snapshot.json": meta}
	if err := ceremony.Sign(t, k); err != nil {
		return err
	}
	raw, err := encode(t)
	if err != nil {
		return err
	}
	b.st.timestamp = t
	b.add(ceremony.RoleTimestamp, version, raw, t.Signed.Expires)
	return nil
}

// maxSignAttempts bounds how often a change is re-signed after another
// replica won the race for the same versions.
const maxSignAttempts = 8

// change runs fn on the newest state inside one transaction and stores the
// documents it signed. fn may add its own rows (artifact, audit) on tx; it
// runs again when another replica signed the same versions first.
func (r *Repository) change(ctx context.Context, fn func(tx *store.Tx, b *builder) error) error {
	var err error
	for range maxSignAttempts {
		var docs []store.TUFDoc
		err = r.db.Tx(ctx, func(tx *store.Tx) error {
			// Replicas on PostgreSQL sign one after the other: without
			// the lock, a burst of publishes on several replicas can
			// lose the version race more often than maxSignAttempts.
			if err := tx.Lock(ctx, "tuf-metadata"); err != nil {
				return err
			}
			st, err := loadState(ctx, tx)
			if err != nil {
				return err
			}
			b := &builder{r: r, st: st, now: r.now().UTC().Truncate(time.Second)}
			if err := fn(tx, b); err != nil {
				return err
			}
			docs = b.docs
			return tx.InsertTUF(ctx, b.docs...)
		})
		if errors.Is(err, store.ErrTUFStale) {
			r.log.Info("another replica signed first; re-signing")
			continue
		}
		if err == nil {
			r.mirror(docs)
		}
		return err
	}
	return fmt.Errorf("sign metadata: %w", err)
}

// mirror writes committed documents under <data>/tuf/repository with their
// consistent-snapshot names, for operators and backups. Serving reads the
// database, so a failed mirror write is logged, not fatal.
func (r *Repository) mirror(docs []store.TUFDoc) {
	for _, d := range docs {
		r.cache.put(d.Role, d.Version, d.Body)
		name := strconv.FormatInt(d.Version, 10) + "." + d.Role + ".json"
		if d.Role == ceremony.RoleTimestamp {
			name = "timestamp.json"
		}
		if err := atomicfile.WriteFile(filepath.Join(r.repoDir, name), d.Body, 0o644); err != nil {
			r.log.Warn("mirror metadata to disk", "file", name, "err", err)
		}
	}
}

// docCache keeps immutable versioned documents (everything but the
// timestamp) in memory, bounded.
type docCache struct {
	mu sync.Mutex
	m  map[string][]byte // guarded by mu
}

const maxCachedDocs = 256

func (c *docCache) get(role string, version int64) ([]byte, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	b, ok := c.m[role+"/"+strconv.FormatInt(version, 10)]
	return b, ok
}

func (c *docCache) put(role string, version int64, body []byte) {
	if role == ceremony.RoleTimestamp {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil || len(c.m) >= maxCachedDocs {
		c.m = map[string][]byte{}
	}
	c.m[role+"/"+strconv.FormatInt(version, 10)] = body
}
