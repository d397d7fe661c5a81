package artifacts

import (
	"bytes"
	"context"
	"errors"
	"io"
	"path/filepath"
	"strings"
	"testing"

	"github.com/meshanics/meshanics/internal/artifact"
	"github.com/meshanics/meshanics/internal/errdefs"
	"github.com/meshanics/meshanics/internal/server/store"
	"github.com/meshanics/meshanics/internal/server/store/storetest"
	"github.com/meshanics/meshanics/internal/server/updaterepo"
)

func newService(t *testing.T, db *store.DB, maxUpload int64) (*Service, *updaterepo.Repository) {
	t.Helper()
	dir := t.TempDir()
	blobs, err := NewBlobs(filepath.Join(dir, "blobs"))
	if err != nil {
		t.Fatal(err)
	}
	repo, err := updaterepo.New(updaterepo.Config{DataDir: dir, DB: db, Blobs: blobs})
	if err != nil {
		t.Fatal(err)
	}
	if err := repo.InitDev(context.Background()); err != nil {
		t.Fatal(err)
	}
	s, err := New(Config{DB: db, Blobs: blobs, Signer: repo, MaxUpload: maxUpload})
	if err != nil {
		t.Fatal(err)
	}
	return s, repo
}

func modelMeta(version string) Metadata {
	return Metadata{Kind: "model", Name: "detector", Version: version, FileName: "model.onnx", Manifest: &artifact.ModelManifest{Framework: "onnx"}}
}

func TestPublishOnBothEngines(t *testing.T) {
	storetest.ForEachEngine(t, func(t *testing.T, db *store.DB) {
		ctx := context.Background()
		s, repo := newService(t, db, 1<<20)
		a, err := s.Publish(ctx, modelMeta("1.0"), strings.NewReader("weights"), "user:alice")
		if err != nil {
			t.Fatal(err)
		}
		if a.TargetPath != "artifacts/model/detector/1.0/model.onnx" || a.Length != 7 || a.PublishedBy != "user:alice" || a.Manifest == nil {
			t.Fatalf("Publish = %+v", a)
		}
		// Signed before Publish returned: the publisher lists the target.
		info, _ := repo.Trust(ctx)
		for _, r := range info.Roles {
			if r.Role == "publisher" && r.Version != 2 {
				t.Errorf("publisher version %d after one publish, want 2", r.Version)
			}
		}
		_, err = s.Publish(ctx, modelMeta("1.0"), strings.NewReader("other"), "user:alice")
		if !errors.Is(err, errdefs.ErrConflict) {
			t.Fatalf("Publish(duplicate) = %v, want ErrConflict", err)
		}
		c, err := s.Publish(ctx, Metadata{Kind: "container", Name: "web", Version: "2", Container: &artifact.ContainerSpec{Image: "registry.example/web@sha256:" + strings.Repeat("a", 64)}}, nil, "user:alice")
		if err != nil {
			t.Fatal(err)
		}
		if c.TargetPath != "artifacts/container/web/2/container.json" || c.Container == nil {
			t.Fatalf("Publish(container) = %+v", c)
		}
		items, total, err := s.List(ctx, store.ArtifactFilter{}, store.Page{})
		if err != nil || total != 2 || len(items) != 2 {
			t.Fatalf("List = %d items, total %d, %v; want 2", len(items), total, err)
		}
		items, total, _ = s.List(ctx, store.ArtifactFilter{Kind: "model"}, store.Page{})
		if total != 1 || items[0].Name != "detector" {
			t.Fatalf("List(kind=model) = %+v, total %d", items, total)
		}
		ref, err := s.Artifact(ctx, "detector", "1.0")
		if err != nil || ref.SHA256 != a.SHA256 || ref.Length != 7 || ref.Kind != "model" {
			t.Fatalf("Artifact = %+v, %v", ref, err)
		}
		if _, err := s.Get(ctx, "detector", "9"); !errors.Is(err, errdefs.ErrNotFound) {
			t.Fatalf("Get(missing) = %v, want ErrNotFound", err)
		}
		evs, _, err := db.ListAudit(ctx, store.AuditFilter{}, store.Page{})
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for _, e := range evs {
			if e.Type == "artifact.published" {
				n++
			}
		}
		if n != 2 {
			t.Fatalf("%d artifact.published events, want 2", n)
		}
	})
}

func TestPublishRefusesBadInput(t *testing.T) {
	ctx := context.Background()
	s, _ := newService(t, storetest.SQLite(t), 16)
	cases := map[string]struct {
		m    Metadata
		file io.Reader
	}{
		"bad name":           {Metadata{Kind: "model", Name: "Bad Name", Version: "1", Manifest: &artifact.ModelManifest{Framework: "onnx"}}, strings.NewReader("x")},
		"bad version":        {Metadata{Kind: "model", Name: "a", Version: "-1", Manifest: &artifact.ModelManifest{Framework: "onnx"}}, strings.NewReader("x")},
		"no manifest":        {Metadata{Kind: "model", Name: "a", Version: "1"}, strings.NewReader("x")},
		"model without file": {modelMeta("2"), nil},
		"config bad dest":    {Metadata{Kind: "config", Name: "c", Version: "1", Config: &artifact.ConfigProfile{Activator: "place-file", Destination: "etc/x", Mode: "0644"}}, strings.NewReader("x")},
		"config setuid":      {Metadata{Kind: "config", Name: "c", Version: "1", Config: &artifact.ConfigProfile{Activator: "place-file", Destination: "/etc/x", Mode: "4755"}}, strings.NewReader("x")},
		"container by tag":   {Metadata{Kind: "container", Name: "w", Version: "1", Container: &artifact.ContainerSpec{Image: "nginx:latest"}}, nil},
		"container w/ file":  {Metadata{Kind: "container", Name: "w", Version: "1", Container: &artifact.ContainerSpec{Image: "r/w@sha256:" + strings.Repeat("a", 64)}}, strings.NewReader("x")},
		"bad file name":      {Metadata{Kind: "model", Name: "a", Version: "1", FileName: "../x", Manifest: &artifact.ModelManifest{Framework: "onnx"}}, strings.NewReader("x")},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			if _, err := s.Publish(ctx, c.m, c.file, "user:a"); !errors.Is(err, errdefs.ErrInvalid) {
				t.Fatalf("Publish = %v, want ErrInvalid", err)
			}
		})
	}
	if _, err := s.Publish(ctx, modelMeta("3"), bytes.NewReader(make([]byte, 17)), "user:a"); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("Publish(17 bytes, limit 16) = %v, want ErrTooLarge", err)
	}
	if items, _, _ := s.List(ctx, store.ArtifactFilter{}, store.Page{}); len(items) != 0 {
		t.Fatalf("refused publishes left %d artifacts", len(items))
	}
}

func TestBlobsAreContentAddressed(t *testing.T) {
	b, err := NewBlobs(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	s1, n, err := b.Put(strings.NewReader("abc"), 10)
	if err != nil || n != 3 || s1 != "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad" {
		t.Fatalf("Put = %s, %d, %v", s1, n, err)
	}
	f, err := b.Open(s1)
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(f)
	f.Close()
	if string(got) != "abc" {
		t.Fatalf("Open read %q", got)
	}
	if _, err := b.Open("../../etc/passwd"); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("Open(traversal) = %v, want ErrNotFound", err)
	}
}
