package artifacts

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/meshanics/meshanics/internal/artifact"
	"github.com/meshanics/meshanics/internal/errdefs"
	"github.com/meshanics/meshanics/internal/server/store"
	"github.com/meshanics/meshanics/internal/server/updaterepo"
)

// DefaultMaxUpload bounds an uploaded artifact file (-max-artifact-size).
const DefaultMaxUpload = 4 << 30

// Signer signs a target into publisher metadata in the transaction that
// also records the artifact (*updaterepo.Repository).
type Signer interface {
	AddTarget(ctx context.Context, t updaterepo.Target, also func(tx *store.Tx) error) error
}

// DB is what the service reads (*store.DB).
type DB interface {
	Read(ctx context.Context, fn func(tx *store.Tx) error) error
	Artifact(ctx context.Context, name, version string) (store.Artifact, error)
}

// Config configures New.
type Config struct {
	DB        DB
	Blobs     *Blobs
	Signer    Signer
	MaxUpload int64 // 0 = DefaultMaxUpload
	Log       *slog.Logger
}

// Service publishes and lists artifacts. Safe for concurrent use.
type Service struct {
	db        DB
	blobs     *Blobs
	signer    Signer
	maxUpload int64
	log       *slog.Logger
}

// New builds the service.
func New(cfg Config) (*Service, error) {
	if cfg.DB == nil || cfg.Blobs == nil || cfg.Signer == nil {
		return nil, errors.New("artifacts: DB, blobs and signer are required")
	}
	s := &Service{db: cfg.DB, blobs: cfg.Blobs, signer: cfg.Signer, maxUpload: cfg.MaxUpload, log: cfg.Log}
	if s.maxUpload <= 0 {
		s.maxUpload = DefaultMaxUpload
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	s.log = s.log.With("component", "artifacts")
	return s, nil
}

// MaxUpload is the largest file Publish accepts.
func (s *Service) MaxUpload() int64 { return s.maxUpload }

// Metadata is the publish request's metadata (the multipart "metadata"
// part, or the whole JSON body for a container): the kind, name, version
// and exactly the descriptor of the kind, as signed into the target.
type Metadata struct {
	Kind      string                  `json:"kind"`
	Name      string                  `json:"name"`
	Version   string                  `json:"version"`
	FileName  string                  `json:"file_name,omitempty"`
	Manifest  *artifact.ModelManifest `json:"manifest,omitempty"`
	Config    *artifact.ConfigProfile `json:"config,omitempty"`
	Container *artifact.ContainerSpec `json:"container,omitempty"`
}

// ParseMetadata decodes untrusted metadata strictly (bounded, unknown
// fields refused) and validates it (SPEC §6).
func ParseMetadata(data []byte) (Metadata, error) {
	var m Metadata
	if err := artifact.DecodeStrict(data, &m); err != nil {
		return m, errdefs.Invalid("artifact metadata: " + err.Error())
	}
	return m, m.Validate()
}

// Validate checks names, kind and descriptor.
func (m Metadata) Validate() error {
	if err := m.custom().Validate(); err != nil {
		return errdefs.Invalid(err.Error())
	}
	if m.FileName != "" {
		if err := artifact.ValidateFileName(m.FileName); err != nil {
			return errdefs.Invalid(err.Error())
		}
		if m.Kind == artifact.KindContainer {
			return errdefs.Invalid("a container artifact has no file")
		}
	}
	return nil
}

func (m Metadata) custom() artifact.Custom {
	return artifact.Custom{Kind: m.Kind, Name: m.Name, Version: m.Version, Manifest: m.Manifest, Config: m.Config, Container: m.Container}
}

// fileName is the target's file element: given, else a default per kind.
func (m Metadata) fileName() string {
	switch {
	case m.FileName != "":
		return m.FileName
	case m.Kind == artifact.KindContainer:
		return "container.json"
	case m.Kind == artifact.KindConfig:
		return "config"
	}
	return "model.bin"
}

// Artifact is the REST view of a published artifact.
type Artifact struct {
	Name        string                  `json:"name"`
	Version     string                  `json:"version"`
	Kind        string                  `json:"kind"`
	TargetPath  string                  `json:"target_path"`
	SHA256      string                  `json:"sha256"`
	Length      int64                   `json:"length"`
	Manifest    *artifact.ModelManifest `json:"manifest,omitempty"`
	Config      *artifact.ConfigProfile `json:"config,omitempty"`
	Container   *artifact.ContainerSpec `json:"container,omitempty"`
	PublishedBy string                  `json:"published_by"`
	CreatedAt   time.Time               `json:"created_at"`
}

func view(a store.Artifact) Artifact {
	v := Artifact{Name: a.Name, Version: a.Version, Kind: a.Kind, TargetPath: a.TargetPath, SHA256: a.SHA256, Length: a.Length,
		PublishedBy: a.PublishedBy, CreatedAt: a.CreatedAt}
	var c artifact.Custom
	if json.Unmarshal(a.Custom, &c) == nil {
		v.Manifest, v.Config, v.Container = c.Manifest, c.Config, c.Container
	}
	return v
}

// Publish stores file (nil for a container: its descriptor is the target
// file) in the blob store, signs it into publisher metadata and records it
// with an "artifact.published" audit event by actor, all before returning:
// a returned artifact is served signed. name@version taken is
// errdefs.ErrConflict; bad metadata errdefs.ErrInvalid; a file over the
// limit ErrTooLarge.
func (s *Service) Publish(ctx context.Context, m Metadata, file io.Reader, actor string) (Artifact, error) {
	if err := m.Validate(); err != nil {
		return Artifact{}, err
	}
	custom, err := json.Marshal(m.custom())
	if err != nil {
		return Artifact{}, fmt.Errorf("encode descriptor: %w", err)
	}
	switch {
	case m.Kind == artifact.KindContainer && file != nil:
		return Artifact{}, errdefs.Invalid("a container artifact is published as JSON, without a file")
	case m.Kind != artifact.KindContainer && file == nil:
		return Artifact{}, errdefs.Invalid(fmt.Sprintf("a %s artifact needs a file", m.Kind))
	case m.Kind == artifact.KindContainer:
		b, err := json.Marshal(m.Container)
		if err != nil {
			return Artifact{}, fmt.Errorf("encode container descriptor: %w", err)
		}
		file = bytes.NewReader(b)
	}
	// Refuse a duplicate before streaming gigabytes; the insert below is
	// the authority (a concurrent publish of the same name@version).
	if _, err := s.db.Artifact(ctx, m.Name, m.Version); err == nil {
		return Artifact{}, errdefs.Conflict(fmt.Sprintf("artifact %s@%s already exists", m.Name, m.Version))
	} else if !errors.Is(err, errdefs.ErrNotFound) {
		return Artifact{}, err
	}
	sum, n, err := s.blobs.Put(file, s.maxUpload)
	if err != nil {
		return Artifact{}, err
	}
	rec := store.Artifact{
		Name: m.Name, Version: m.Version, Kind: m.Kind,
		TargetPath: artifact.TargetPath(m.Kind, m.Name, m.Version, m.fileName()),
		SHA256:     sum, Length: n, Custom: custom, PublishedBy: actor,
	}
	signedCustom, err := artifact.EncodeTargetCustom(m.custom())
	if err != nil {
		return Artifact{}, err
	}
	err = s.signer.AddTarget(ctx, updaterepo.Target{Path: rec.TargetPath, SHA256: sum, Length: n, Custom: signedCustom}, func(tx *store.Tx) error {
		if err := tx.InsertArtifact(ctx, rec); err != nil {
			return err
		}
		_, err := tx.AppendAudit(ctx, store.Event{Actor: actor, Type: "artifact.published", Subject: m.Name + "@" + m.Version,
			Data: map[string]any{"kind": m.Kind, "target_path": rec.TargetPath, "sha256": sum, "length": n}})
		return err
	})
	if err != nil {
		// The blob stays: content-addressed, harmless, and possibly shared
		// with another artifact.
		return Artifact{}, err
	}
	got, err := s.db.Artifact(ctx, m.Name, m.Version)
	if err != nil {
		return Artifact{}, err
	}
	s.log.Info("artifact published", "artifact", m.Name+"@"+m.Version, "kind", m.Kind, "sha256", sum, "length", n, "actor", actor)
	return view(got), nil
}

// Get returns name@version.
func (s *Service) Get(ctx context.Context, name, version string) (Artifact, error) {
	a, err := s.db.Artifact(ctx, name, version)
	if err != nil {
		return Artifact{}, err
	}
	return view(a), nil
}

// List returns one page, newest first, and the total.
func (s *Service) List(ctx context.Context, f store.ArtifactFilter, p store.Page) ([]Artifact, int, error) {
	var items []Artifact
	var total int
	err := s.db.Read(ctx, func(tx *store.Tx) error {
		as, n, err := tx.ListArtifacts(ctx, f, p)
		if err != nil {
			return err
		}
		total = n
		for _, a := range as {
			items = append(items, view(a))
		}
		return nil
	})
	return items, total, err
}

// Ref is what the rollout engine needs to build an assignment.
type Ref struct {
	Kind       string
	TargetPath string
	SHA256     string
	Length     int64
}

// Artifact returns the signed target of name@version.
func (s *Service) Artifact(ctx context.Context, name, version string) (Ref, error) {
	a, err := s.db.Artifact(ctx, name, version)
	if err != nil {
		return Ref{}, err
	}
	return Ref{Kind: a.Kind, TargetPath: a.TargetPath, SHA256: a.SHA256, Length: a.Length}, nil
}
