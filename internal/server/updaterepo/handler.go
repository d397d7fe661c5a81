package updaterepo

import (
	"errors"
	"net/http"
	"regexp"
	"strconv"
	"strings"

	"github.com/meshanics/meshanics/internal/artifact"
	"github.com/meshanics/meshanics/internal/ceremony"
	"github.com/meshanics/meshanics/internal/errdefs"
)

// Handler serves the repository on the repo listener (the server wires it
// behind mutual TLS that admits device certificates only):
//
//	GET /metadata/timestamp.json
//	GET /metadata/<N>.<root|targets|publisher|snapshot>.json
//	GET /targets/artifacts/<kind>/<name>/<version>/<sha256>.<file>
//
// Devices verify everything they fetch; the handler only refuses what can
// never be valid.
func (r *Repository) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /metadata/{file}", r.serveMetadata)
	mux.HandleFunc("GET /targets/{path...}", r.serveTarget)
	return mux
}

var metaFileRE = regexp.MustCompile(`^([1-9][0-9]{0,17})\.(root|targets|publisher|snapshot)\.json$`)

func (r *Repository) serveMetadata(w http.ResponseWriter, req *http.Request) {
	file := req.PathValue("file")
	role, version := ceremony.RoleTimestamp, int64(0)
	if file != "timestamp.json" {
		m := metaFileRE.FindStringSubmatch(file)
		if m == nil {
			http.NotFound(w, req)
			return
		}
		role = m[2]
		version, _ = strconv.ParseInt(m[1], 10, 64)
	}
	body, ok := r.cache.get(role, version)
	if !ok || version == 0 {
		d, err := r.db.TUFDoc(req.Context(), role, version)
		switch {
		case errors.Is(err, errdefs.ErrNotFound):
			http.NotFound(w, req)
			return
		case err != nil:
			r.log.Error("serve metadata", "file", file, "err", err)
			http.Error(w, "repository unavailable", http.StatusServiceUnavailable)
			return
		}
		body = d.Body
		r.cache.put(role, version, body)
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	if role == ceremony.RoleTimestamp {
		w.Header().Set("Cache-Control", "no-store")
	}
	_, _ = w.Write(body)
}

var hashPrefixRE = regexp.MustCompile(`^([0-9a-f]{64})\.(.+)$`)

func (r *Repository) serveTarget(w http.ResponseWriter, req *http.Request) {
	p := req.PathValue("path")
	dir, base, ok := cutLast(p)
	m := hashPrefixRE.FindStringSubmatch(base)
	if !ok || m == nil {
		http.NotFound(w, req)
		return
	}
	if _, _, _, _, err := artifact.ParseTargetPath(dir + "/" + m[2]); err != nil {
		http.NotFound(w, req)
		return
	}
	f, err := r.blobs.Open(m[1])
	if err != nil {
		http.NotFound(w, req)
		return
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		http.Error(w, "repository unavailable", http.StatusServiceUnavailable)
		return
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	http.ServeContent(w, req, "", st.ModTime(), f)
}

func cutLast(p string) (dir, base string, ok bool) {
	i := strings.LastIndexByte(p, '/')
	if i < 0 {
		return "", "", false
	}
	return p[:i], p[i+1:], true
}
