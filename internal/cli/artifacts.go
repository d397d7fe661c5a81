package cli

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"mime/multipart"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/meshanics/meshanics/internal/artifact"
	"github.com/meshanics/meshanics/internal/names"
)

func artifactsGroup() *group {
	return &group{
		name:    "artifacts",
		summary: "Signed artifacts: publish a model, config or container; list; show.",
		cmds: []*command{
			{name: "publish", summary: "upload and sign an artifact (-kind model|config|container -name N -version V …)", run: artifactsPublish},
			{name: "list", summary: "list published artifacts, newest first", run: artifactsList},
			{name: "show", args: "NAME@VERSION", summary: "show one artifact with its signed target and descriptor", run: artifactsShow},
		},
	}
}

// artifactMetadata is the "metadata" part of POST /api/v1/artifacts (the
// whole JSON body for a container).
type artifactMetadata struct {
	Kind      string                  `json:"kind"`
	Name      string                  `json:"name"`
	Version   string                  `json:"version"`
	FileName  string                  `json:"file_name,omitempty"`
	Manifest  *artifact.ModelManifest `json:"manifest,omitempty"`
	Config    *artifact.ConfigProfile `json:"config,omitempty"`
	Container *artifact.ContainerSpec `json:"container,omitempty"`
}

type artifactInfo struct {
	Name        string          `json:"name"`
	Version     string          `json:"version"`
	Kind        string          `json:"kind"`
	TargetPath  string          `json:"target_path"`
	SHA256      string          `json:"sha256"`
	Length      int64           `json:"length"`
	Manifest    json.RawMessage `json:"manifest,omitempty"`
	Config      json.RawMessage `json:"config,omitempty"`
	Container   json.RawMessage `json:"container,omitempty"`
	PublishedBy string          `json:"published_by"`
	CreatedAt   time.Time       `json:"created_at"`
}

// readDescriptor decodes a descriptor file strictly (bounded, no unknown
// fields) so mistakes show before the upload.
func readDescriptor(flagName, path string, v any) error {
	f, err := os.Open(path)
	if err != nil {
		return usagef("-%s: %v", flagName, err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, artifact.MaxDescriptorBytes+1))
	if err != nil {
		return usagef("-%s: %v", flagName, err)
	}
	if err := artifact.DecodeStrict(data, v); err != nil {
		return usagef("-%s %s: %v", flagName, path, err)
	}
	return nil
}

func artifactsPublish(ctx context.Context, a *app, fs *flag.FlagSet, args []string) error {
	kind := fs.String("kind", "", "artifact kind: model, config or container")
	name := fs.String("name", "", "artifact name")
	version := fs.String("version", "", "artifact version")
	file := fs.String("file", "", "the file to upload (model, config)")
	fileName := fs.String("file-name", "", "file name in the target path (default: the base name of -file)")
	manifest := fs.String("manifest", "", "model manifest JSON `FILE` {\"framework\":…}")
	profile := fs.String("profile", "", "config delivery profile JSON `FILE` {\"activator\":\"place-file\",\"destination\",\"mode\",\"reload\"}")
	image := fs.String("image", "", "container image pinned by digest, repo@sha256:…")
	spec := fs.String("container", "", "container descriptor JSON `FILE` (run options; -image overrides its image)")
	if _, err := parseArgs(fs, args, 0, 0); err != nil {
		return err
	}
	m := artifactMetadata{Kind: *kind, Name: *name, Version: *version, FileName: *fileName}
	if !artifact.ValidKind(m.Kind) {
		return usagef("-kind %q: want model, config or container", m.Kind)
	}
	if err := names.ValidateArtifact(m.Name); err != nil {
		return usagef("-name: %v", err)
	}
	if err := names.ValidateVersion(m.Version); err != nil {
		return usagef("-version: %v", err)
	}
	switch m.Kind {
	case artifact.KindModel:
		m.Manifest = &artifact.ModelManifest{}
		if *manifest == "" {
			return usagef("a model needs -manifest FILE")
		}
		if err := readDescriptor("manifest", *manifest, m.Manifest); err != nil {
			return err
		}
	case artifact.KindConfig:
		m.Config = &artifact.ConfigProfile{}
		if *profile == "" {
			return usagef("a config needs -profile FILE")
		}
		if err := readDescriptor("profile", *profile, m.Config); err != nil {
			return err
		}
	case artifact.KindContainer:
		m.Container = &artifact.ContainerSpec{}
		if *spec != "" {
			if err := readDescriptor("container", *spec, m.Container); err != nil {
				return err
			}
		}
		if *image != "" {
			m.Container.Image = *image
		}
		if m.Container.Image == "" {
			return usagef("a container needs -image repo@sha256:… (or -container FILE naming it)")
		}
		if *file != "" {
			return usagef("a container has no -file")
		}
	}
	custom := artifact.Custom{Kind: m.Kind, Name: m.Name, Version: m.Version, Manifest: m.Manifest, Config: m.Config, Container: m.Container}
	if err := custom.Validate(); err != nil {
		return usagef("%v", err)
	}
	c, err := a.api()
	if err != nil {
		return err
	}
	var resp *response
	if m.Kind == artifact.KindContainer {
		resp, err = c.do(ctx, http.MethodPost, apiPath("artifacts"), nil, m)
	} else {
		if *file == "" {
			return usagef("a %s needs -file", m.Kind)
		}
		if m.FileName == "" {
			m.FileName = filepath.Base(*file)
		}
		if err := artifact.ValidateFileName(m.FileName); err != nil {
			return usagef("-file-name: %v", err)
		}
		resp, err = c.upload(ctx, m, *file)
	}
	if err != nil {
		return err
	}
	return printResponse(a, resp, func(ai artifactInfo) error {
		fmt.Fprintf(a.stdout, "Published and signed %s@%s (%s): %s, %d bytes, sha256 %s\n", ai.Name, ai.Version, ai.Kind, ai.TargetPath, ai.Length, ai.SHA256)
		return nil
	})
}

// upload streams a multipart publish body (metadata, then the file) without
// holding the file in memory.
func (c *client) upload(ctx context.Context, m artifactMetadata, path string) (*response, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, usagef("-file: %v", err)
	}
	defer f.Close()
	meta, err := json.Marshal(m)
	if err != nil {
		return nil, fmt.Errorf("encode metadata: %w", err)
	}
	pr, pw := io.Pipe()
	mw := multipart.NewWriter(pw)
	go func() {
		err := mw.WriteField("metadata", string(meta))
		if err == nil {
			var fw io.Writer
			if fw, err = mw.CreateFormFile("file", m.FileName); err == nil {
				if _, err = io.Copy(fw, f); err == nil {
					err = mw.Close()
				}
			}
		}
		pw.CloseWithError(err)
	}()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.base.String()+apiPath("artifacts"), pr)
	if err != nil {
		pr.Close()
		return nil, fmt.Errorf("build request: %w", err)
	}
	req.Header.Set("Authorization", "Bearer "+c.apiKey)
	req.Header.Set("Accept", "application/json")
	req.Header.Set("Content-Type", mw.FormDataContentType())
	res, err := c.http.Do(req)
	pr.Close()
	if err != nil {
		return nil, connError(c.base.Host, err)
	}
	defer res.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(res.Body, maxResponse))
	if err != nil {
		return nil, fmt.Errorf("read response: %w", err)
	}
	if res.StatusCode < 200 || res.StatusCode > 299 {
		var eb struct {
			Error string `json:"error"`
		}
		_ = json.Unmarshal(raw, &eb)
		return nil, &apiError{status: res.StatusCode, msg: eb.Error}
	}
	return &response{status: res.StatusCode, body: raw, header: res.Header}, nil
}

func artifactsList(ctx context.Context, a *app, fs *flag.FlagSet, args []string) error {
	kind := fs.String("kind", "", "only this kind (model, config, container)")
	name := fs.String("name", "", "only versions of this artifact name")
	_, q, err := parsePaged(fs, args, 0, 0)
	if err != nil {
		return err
	}
	if *kind != "" {
		q.Set("kind", *kind)
	}
	if *name != "" {
		q.Set("name", *name)
	}
	return printList(ctx, a, apiPath("artifacts"), q, "ARTIFACT\tKIND\tLENGTH\tSHA256\tPUBLISHED\tBY", func(ai artifactInfo) string {
		return fmt.Sprintf("%s@%s\t%s\t%d\t%.16s…\t%s\t%s", ai.Name, ai.Version, ai.Kind, ai.Length, ai.SHA256, fmtTime(ai.CreatedAt), ai.PublishedBy)
	})
}

func artifactsShow(ctx context.Context, a *app, fs *flag.FlagSet, args []string) error {
	pos, err := parseArgs(fs, args, 1, 2)
	if err != nil {
		return err
	}
	ref := strings.Join(pos, "@")
	name, version, err := names.ParseRef(ref)
	if err != nil {
		return usagef("%v", err)
	}
	return printObject(ctx, a, http.MethodGet, apiPath("artifacts", name, version), nil, a.showArtifact)
}

func (a *app) showArtifact(ai artifactInfo) error {
	tw := a.table()
	fmt.Fprintf(tw, "Artifact:\t%s@%s\nKind:\t%s\nTarget:\t%s\nSHA256:\t%s\nLength:\t%d\nPublished:\t%s by %s\n",
		ai.Name, ai.Version, ai.Kind, ai.TargetPath, ai.SHA256, ai.Length, fmtTime(ai.CreatedAt), ai.PublishedBy)
	for label, d := range map[string]json.RawMessage{"Manifest": ai.Manifest, "Profile": ai.Config, "Container": ai.Container} {
		if len(d) > 0 {
			fmt.Fprintf(tw, "%s:\t%s\n", label, d)
		}
	}
	return tw.Flush()
}
