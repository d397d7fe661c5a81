package containertest

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/meshanics/meshanics/internal/agent/execx"
)

// healthServer answers /healthz with 200, or 500 when HEALTH=fail.
const healthServer = `package main

import (
	"net/http"
	"os"
)

func main() {
	http.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) {
		if os.Getenv("HEALTH") == "fail" {
			http.Error(w, "unhealthy", 500)
			return
		}
		w.Write([]byte(os.Getenv("GREETING")))
	})
	http.ListenAndServe(":8080", nil)
}
`

// Docker returns the docker binary when an engine answers.
func Docker() (string, bool) {
	bin, err := execx.Find("docker")
	if err != nil {
		return "", false
	}
	_, err = execx.Run(context.Background(), execx.Cmd{Path: bin, Args: []string{"version", "--format", "{{.Server.Version}}"}, Timeout: 20 * time.Second})
	return bin, err == nil
}

// HealthServer compiles the health server as a static linux binary.
func HealthServer(t testing.TB) []byte {
	t.Helper()
	goBin := filepath.Join(runtime.GOROOT(), "bin", "go")
	dir := t.TempDir()
	src := filepath.Join(dir, "main.go")
	if err := os.WriteFile(src, []byte(healthServer), 0o644); err != nil {
		t.Fatal(err)
	}
	cache, _ := os.UserCacheDir()
	gocache := os.Getenv("GOCACHE")
	if gocache == "" {
		gocache = filepath.Join(cache, "go-build")
	}
	out := filepath.Join(dir, "app")
	_, err := execx.Run(context.Background(), execx.Cmd{Path: goBin, Args: []string{"build", "-trimpath", "-ldflags=-s -w", "-o", out, src},
		Env:     []string{"CGO_ENABLED=0", "GOOS=linux", "GOCACHE=" + gocache, "HOME=" + os.Getenv("HOME"), "GOTOOLCHAIN=local", "GOFLAGS=", "GO111MODULE=off"},
		Timeout: 5 * time.Minute})
	if err != nil {
		t.Fatalf("build health server: %v", err)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// HealthImage pushes a FROM-scratch image running bin with HEALTH=health
// baked into its config (so each health value is a different digest).
func (r *Registry) HealthImage(t testing.TB, repo string, bin []byte, health string) string {
	t.Helper()
	return r.HealthImageSalted(t, repo, bin, health, "")
}

// HealthImageSalted is HealthImage with salt written into the image's
// history, so tests running in parallel get images of their own (one
// test's cleanup never removes another's) that still share the layer.
func (r *Registry) HealthImageSalted(t testing.TB, repo string, bin []byte, health, salt string) string {
	t.Helper()
	var raw bytes.Buffer
	tw := tar.NewWriter(&raw)
	tw.WriteHeader(&tar.Header{Name: "app", Mode: 0o755, Size: int64(len(bin)), Typeflag: tar.TypeReg, ModTime: time.Unix(0, 0)})
	tw.Write(bin)
	tw.Close()
	var gz bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&gz, gzip.NoCompression) // fast under -race; still valid gzip
	zw.Write(raw.Bytes())
	zw.Close()
	config, _ := json.Marshal(map[string]any{
		"architecture": runtime.GOARCH, "os": "linux",
		"config": map[string]any{"Entrypoint": []string{"/app"}, "Env": []string{"HEALTH=" + health},
			"ExposedPorts": map[string]any{"8080/tcp": map[string]any{}}},
		"rootfs":  map[string]any{"type": "layers", "diff_ids": []string{digest(raw.Bytes())}},
		"history": []map[string]string{{"created_by": strings.TrimSpace("meshanics containertest " + strings.ToLower(health) + " " + salt)}},
	})
	return r.Push(repo, gz.Bytes(), config)
}
