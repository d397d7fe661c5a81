package reconcile

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"

	"github.com/meshanics/meshanics/internal/artifact"
	devicev1 "github.com/meshanics/meshanics/proto/meshanics/device/v1"
)

// fileFetcher streams a local file and hashes it, as the TUF client does
// with the network body.
type fileFetcher struct{ path string }

func (f fileFetcher) Fetch(_ context.Context, a *devicev1.Artifact, w io.Writer) (artifact.Custom, error) {
	src, err := os.Open(f.path)
	if err != nil {
		return artifact.Custom{}, err
	}
	defer src.Close()
	h := sha256.New()
	if _, err := io.Copy(io.MultiWriter(w, h), src); err != nil {
		return artifact.Custom{}, err
	}
	return artifact.Custom{Kind: "model", Name: a.Name, Version: a.Version, Manifest: &artifact.ModelManifest{Framework: "onnx"}}, nil
}

// BenchmarkApplyModel stages, verifies and activates one model of
// MESHANICS_BENCH_MODEL_BYTES (default 64 MiB) per iteration and reports
// the peak RSS of the process: staging streams, so RSS must not grow with
// the model.
func BenchmarkApplyModel(b *testing.B) {
	size := int64(64 << 20)
	if s := os.Getenv("MESHANICS_BENCH_MODEL_BYTES"); s != "" {
		size, _ = strconv.ParseInt(s, 10, 64)
	}
	dir := b.TempDir()
	src := filepath.Join(dir, "model.bin")
	f, _ := os.Create(src)
	h := sha256.New()
	buf := make([]byte, 1<<20)
	for i := range buf {
		buf[i] = byte(i * 7)
	}
	for n := int64(0); n < size; n += int64(len(buf)) {
		f.Write(buf)
		h.Write(buf)
	}
	f.Close()
	sum := hex.EncodeToString(h.Sum(nil))
	e := newEnv(b)
	e.opts.Fetcher = fileFetcher{src}
	r, err := New(e.opts)
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(size)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		v := strconv.Itoa(i)
		a := &devicev1.Artifact{Kind: "model", Name: "big", Version: v, TargetPath: artifact.TargetPath("model", "big", v, "model.bin"), Sha256: sum, Length: size}
		if err := r.Reconcile(context.Background(), []*devicev1.Assignment{apply("b"+v, a, nil)}); err != nil {
			b.Fatal(err)
		}
		if got := e.rep.last("b" + v); got != "healthy" {
			b.Fatalf("apply ended %q: %v", got, e.rep.got)
		}
	}
	b.StopTimer()
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	b.ReportMetric(float64(ru.Maxrss)/1024, "peak-RSS-MiB")
}
