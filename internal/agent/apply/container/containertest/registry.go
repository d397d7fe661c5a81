// Package containertest serves tiny images, built here FROM scratch around
// a static Go health server, from an in-process registry on 127.0.0.1 (which
// docker treats as an insecure registry), so container tests pull by digest
// as a device does. Test-only: imported by _test files.
package containertest

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
)

const (
	mediaManifest = "application/vnd.docker.distribution.manifest.v2+json"
	mediaConfig   = "application/vnd.docker.container.image.v1+json"
	mediaLayer    = "application/vnd.docker.image.rootfs.diff.tar.gzip"
)

// Registry is a read-only OCI distribution endpoint holding pushed images.
type Registry struct {
	srv *httptest.Server
	mu  sync.Mutex
	// blobs and manifests by digest; manifests also by repo:tag.
	blobs     map[string][]byte
	manifests map[string][]byte
}

// NewRegistry starts a registry on 127.0.0.1 for the life of t.
func NewRegistry(t testing.TB) *Registry {
	r := &Registry{blobs: map[string][]byte{}, manifests: map[string][]byte{}}
	r.srv = httptest.NewServer(http.HandlerFunc(r.serve))
	t.Cleanup(r.srv.Close)
	return r
}

// Host is host:port of the registry.
func (r *Registry) Host() string { return strings.TrimPrefix(r.srv.URL, "http://") }

func digest(b []byte) string {
	s := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(s[:])
}

// Push stores an image of one gzip layer and returns host/repo@digest.
func (r *Registry) Push(repo string, layerGz, config []byte) string {
	type desc struct {
		MediaType string `json:"mediaType"`
		Size      int    `json:"size"`
		Digest    string `json:"digest"`
	}
	m, _ := json.Marshal(struct {
		SchemaVersion int    `json:"schemaVersion"`
		MediaType     string `json:"mediaType"`
		Config        desc   `json:"config"`
		Layers        []desc `json:"layers"`
	}{2, mediaManifest, desc{mediaConfig, len(config), digest(config)}, []desc{{mediaLayer, len(layerGz), digest(layerGz)}}})
	r.mu.Lock()
	defer r.mu.Unlock()
	r.blobs[digest(layerGz)] = layerGz
	r.blobs[digest(config)] = config
	r.manifests[digest(m)] = m
	return fmt.Sprintf("%s/%s@%s", r.Host(), repo, digest(m))
}

func (r *Registry) serve(w http.ResponseWriter, req *http.Request) {
	w.Header().Set("Docker-Distribution-API-Version", "registry/2.0")
	if req.Method != http.MethodGet && req.Method != http.MethodHead {
		http.Error(w, "read-only", http.StatusMethodNotAllowed)
		return
	}
	p := req.URL.Path
	if p == "/v2/" || p == "/v2" {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	var body []byte
	var ctype string
	if i := strings.LastIndex(p, "/manifests/"); i >= 0 {
		body, ctype = r.manifests[p[i+len("/manifests/"):]], mediaManifest
	} else if i := strings.LastIndex(p, "/blobs/"); i >= 0 {
		body, ctype = r.blobs[p[i+len("/blobs/"):]], "application/octet-stream"
	}
	if body == nil {
		http.Error(w, `{"errors":[{"code":"MANIFEST_UNKNOWN"}]}`, http.StatusNotFound)
		return
	}
	w.Header().Set("Content-Type", ctype)
	w.Header().Set("Docker-Content-Digest", digest(body))
	w.Header().Set("Content-Length", fmt.Sprint(len(body)))
	if req.Method == http.MethodGet {
		bytes.NewReader(body).WriteTo(w)
	}
}
