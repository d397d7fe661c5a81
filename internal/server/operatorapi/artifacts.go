package operatorapi

import (
	"context"
	"errors"
	"io"
	"mime"
	"net/http"
	"path"

	"github.com/meshanics/meshanics/internal/artifact"
	"github.com/meshanics/meshanics/internal/errdefs"
	"github.com/meshanics/meshanics/internal/server/artifacts"
	"github.com/meshanics/meshanics/internal/server/httpjson"
	"github.com/meshanics/meshanics/internal/server/store"
)

// ArtifactService publishes and lists artifacts (*artifacts.Service).
type ArtifactService interface {
	Publish(ctx context.Context, m artifacts.Metadata, file io.Reader, actor string) (artifacts.Artifact, error)
	Get(ctx context.Context, name, version string) (artifacts.Artifact, error)
	List(ctx context.Context, f store.ArtifactFilter, p store.Page) ([]artifacts.Artifact, int, error)
	MaxUpload() int64
}

// multipartOverhead is what a publish body may carry beyond the file.
const multipartOverhead = 1 << 20

func (a *API) registerArtifacts(mux *http.ServeMux) {
	a.handle(mux, "POST /api/v1/artifacts", ArtifactsWrite, a.publishArtifact)
	a.handle(mux, "GET /api/v1/artifacts", ArtifactsRead, a.listArtifacts)
	a.handle(mux, "GET /api/v1/artifacts/{name}/{version}", ArtifactsRead, a.getArtifact)
}

var errNoArtifacts = errorf(http.StatusServiceUnavailable, "artifact publishing is not configured on this server")

// publishArtifact takes multipart/form-data with a "metadata" part (JSON,
// first) and a "file" part (model, config), or a JSON body (container).
// The artifact is signed before the 201.
func (a *API) publishArtifact(w http.ResponseWriter, r *http.Request, p Principal) error {
	if a.artifacts == nil {
		return errNoArtifacts
	}
	mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if err != nil {
		return errorf(http.StatusUnsupportedMediaType, "send multipart/form-data (metadata + file) or application/json (container)")
	}
	var res artifacts.Artifact
	switch mt {
	case "application/json":
		var m artifacts.Metadata
		if err := decodeJSON(w, r, 0, &m); err != nil {
			return err
		}
		res, err = a.artifacts.Publish(r.Context(), m, nil, p.Actor())
	case "multipart/form-data":
		res, err = a.publishMultipart(w, r, p)
	default:
		return errorf(http.StatusUnsupportedMediaType, "send multipart/form-data (metadata + file) or application/json (container)")
	}
	if errors.Is(err, artifacts.ErrTooLarge) {
		return errorf(http.StatusRequestEntityTooLarge, "artifact file is larger than this server accepts")
	}
	if err != nil {
		return trustError(err)
	}
	httpjson.Write(w, http.StatusCreated, res)
	return nil
}

func (a *API) publishMultipart(w http.ResponseWriter, r *http.Request, p Principal) (artifacts.Artifact, error) {
	r.Body = http.MaxBytesReader(w, r.Body, a.artifacts.MaxUpload()+multipartOverhead)
	mr, err := r.MultipartReader()
	if err != nil {
		return artifacts.Artifact{}, errdefs.Invalid("malformed multipart body")
	}
	part, err := mr.NextPart()
	if err != nil || part.FormName() != "metadata" {
		return artifacts.Artifact{}, errdefs.Invalid("the first part must be \"metadata\" (JSON), followed by \"file\"")
	}
	raw, err := io.ReadAll(io.LimitReader(part, artifact.MaxDescriptorBytes+1))
	if err != nil {
		return artifacts.Artifact{}, errdefs.Invalid("malformed multipart body")
	}
	m, err := artifacts.ParseMetadata(raw)
	if err != nil {
		return artifacts.Artifact{}, err
	}
	file, err := mr.NextPart()
	if errors.Is(err, io.EOF) {
		return a.artifacts.Publish(r.Context(), m, nil, p.Actor())
	}
	if err != nil || file.FormName() != "file" {
		return artifacts.Artifact{}, errdefs.Invalid("the second part must be \"file\"")
	}
	if m.FileName == "" && file.FileName() != "" {
		if base := path.Base(file.FileName()); artifact.ValidateFileName(base) == nil {
			m.FileName = base
		}
	}
	return a.artifacts.Publish(r.Context(), m, file, p.Actor())
}

func (a *API) listArtifacts(w http.ResponseWriter, r *http.Request, _ Principal) error {
	if a.artifacts == nil {
		return errNoArtifacts
	}
	return writePage(w, r, func(p store.Page) ([]artifacts.Artifact, int, error) {
		q := r.URL.Query()
		f := store.ArtifactFilter{Name: q.Get("name"), Kind: q.Get("kind")}
		if f.Kind != "" && !artifact.ValidKind(f.Kind) {
			return nil, 0, errdefs.Invalid("kind must be model, config or container")
		}
		return a.artifacts.List(r.Context(), f, p)
	})
}

func (a *API) getArtifact(w http.ResponseWriter, r *http.Request, _ Principal) error {
	if a.artifacts == nil {
		return errNoArtifacts
	}
	res, err := a.artifacts.Get(r.Context(), r.PathValue("name"), r.PathValue("version"))
	if err != nil {
		return err
	}
	httpjson.Write(w, http.StatusOK, res)
	return nil
}
