package server

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/meshanics/meshanics/deploy"
)

// agentArchs are the agent builds /downloads serves (SPEC §1).
var agentArchs = []string{"amd64", "arm64"}

// pinger is what /readyz needs of the store.
type pinger interface {
	Ping(ctx context.Context) error
}

// installHandler serves the installer with the fleet CA and unit filled in.
func installHandler(caPEM []byte) (http.Handler, error) {
	script, err := deploy.InstallScript(caPEM)
	if err != nil {
		return nil, err
	}
	modTime := time.Now()
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		w.Header().Set("Content-Type", "text/x-shellscript; charset=utf-8")
		w.Header().Set("Cache-Control", "no-store")
		w.Header().Set("X-Content-Type-Options", "nosniff")
		http.ServeContent(w, r, "install.sh", modTime, bytes.NewReader(script))
	}), nil
}

// downloadsHandler serves meshanics-agent-linux-{amd64,arm64} from dir.
// Only those two names exist; nothing else of dir is reachable.
func downloadsHandler(dir string, log *slog.Logger) http.Handler {
	mux := http.NewServeMux()
	for _, arch := range agentArchs {
		name := "meshanics-agent-linux-" + arch
		mux.HandleFunc("GET /downloads/"+name, func(w http.ResponseWriter, r *http.Request) {
			if dir == "" {
				notFound(w, fmt.Sprintf("%s is not available: this server was started without -agent-dir (a directory holding the agent builds %s)", name, agentNames()))
				return
			}
			f, err := os.Open(filepath.Join(dir, name))
			if errors.Is(err, fs.ErrNotExist) {
				notFound(w, fmt.Sprintf("%s is not available: build it into the -agent-dir directory (CGO_ENABLED=0 GOARCH=%s go build -o %s ./cmd/meshanics-agent)", name, arch, name))
				return
			}
			if err != nil {
				log.Error("open agent build", "name", name, "err", err)
				http.Error(w, "internal error", http.StatusInternalServerError)
				return
			}
			defer f.Close()
			st, err := f.Stat()
			if err != nil || !st.Mode().IsRegular() {
				notFound(w, name+" is not a regular file in -agent-dir")
				return
			}
			w.Header().Set("Content-Type", "application/octet-stream")
			w.Header().Set("Content-Disposition", "attachment; filename="+name)
			w.Header().Set("X-Content-Type-Options", "nosniff")
			http.ServeContent(w, r, name, st.ModTime(), f)
		})
	}
	mux.HandleFunc("/downloads/", func(w http.ResponseWriter, r *http.Request) {
		notFound(w, "no such download; available: "+agentNames())
	})
	return mux
}

func agentNames() string {
	s := ""
	for i, a := range agentArchs {
		if i > 0 {
			s += ", "
		}
		s += "meshanics-agent-linux-" + a
	}
	return s
}

func notFound(w http.ResponseWriter, msg string) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(http.StatusNotFound)
	_, _ = fmt.Fprintln(w, msg)
}

func healthz(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	_, _ = fmt.Fprintln(w, "ok")
}

// readyz answers 200 when the database answers within a short deadline.
func readyz(db pinger, log *slog.Logger) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
		defer cancel()
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Header().Set("Cache-Control", "no-store")
		if err := db.Ping(ctx); err != nil {
			log.Warn("readiness check failed", "err", err)
			w.WriteHeader(http.StatusServiceUnavailable)
			_, _ = fmt.Fprintln(w, "database unreachable")
			return
		}
		_, _ = fmt.Fprintln(w, "ready")
	}
}

func metricsHandler(reg *prometheus.Registry) http.Handler {
	return promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg})
}
