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
	"time"

	"github.com/meshanics/meshanics/internal/agent/execx"
	"github.com/meshanics/meshanics/internal/agent/tufclient"
	"github.com/meshanics/meshanics/internal/artifact"
	devicev1 "github.com/meshanics/meshanics/proto/meshanics/device/v1"
)

// fileFetcher streams a local file and hashes it, as the TUF client does
// with the network body.
type fileFetcher struct{ path string }

func (f fileFetcher) Fetch(_ context.Context, a *devicev1.Artifact, w io.Writer) (tufclient.Verified, error) {
	src, err := os.Open(f.path)
	if err != nil {
		return tufclient.Verified{}, err
	}
	defer src.Close()
	h := sha256.New()
	// 32 KiB chunks, as an HTTP body arrives through io.Copy.
	n, err := io.CopyBuffer(io.MultiWriter(w, h), struct{ io.Reader }{src}, make([]byte, 32<<10))
	if err != nil {
		return tufclient.Verified{}, err
	}
	return tufclient.Verified{Path: a.TargetPath, SHA256: hex.EncodeToString(h.Sum(nil)), Length: n,
		Custom: artifact.Custom{Kind: "model", Name: a.Name, Version: a.Version, Manifest: &artifact.ModelManifest{Framework: "onnx"}}}, nil
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
	f.Sync() // its dirty pages must not be flushed inside the timed part
	f.Close()
	sum := hex.EncodeToString(h.Sum(nil))
	e := newEnv(b)
	e.opts.Fetcher = fileFetcher{src}
	r, err := New(e.opts)
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(size)
	var ours, baseline time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		baseline += opensslCp(b, src, filepath.Join(dir, "copy.bin"))
		b.StartTimer()
		start := time.Now()
		v := strconv.Itoa(i)
		a := &devicev1.Artifact{Kind: "model", Name: "big", Version: v, TargetPath: artifact.TargetPath("model", "big", v, "model.bin"), Sha256: sum, Length: size}
		if err := r.Reconcile(context.Background(), []*devicev1.Assignment{apply("b"+v, a, nil)}); err != nil {
			b.Fatal(err)
		}
		if got := e.rep.last("b" + v); got != "healthy" {
			b.Fatalf("apply ended %q: %v", got, e.rep.got)
		}
		ours += time.Since(start)
	}
	b.StopTimer()
	if baseline > 0 {
		b.ReportMetric(baseline.Seconds()/ours.Seconds(), "x-openssl+cp-throughput")
	}
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	b.ReportMetric(float64(ru.Maxrss)/1024, "peak-RSS-MiB")
}

// opensslCp times `openssl dgst -sha256 src && cp src dst && sync` (the
// SPEC §12 yardstick, synced because the apply fsyncs), or 0 without openssl.
func opensslCp(b *testing.B, src, dst string) time.Duration {
	var bins [3]string
	for i, name := range []string{"openssl", "cp", "sync"} {
		p, err := execx.Find(name)
		if err != nil {
			return 0
		}
		bins[i] = p
	}
	start := time.Now()
	for _, c := range []execx.Cmd{{Path: bins[0], Args: []string{"dgst", "-sha256", src}}, {Path: bins[1], Args: []string{src, dst}}, {Path: bins[2]}} {
		c.Timeout = 10 * time.Minute
		if _, err := execx.Run(context.Background(), c); err != nil {
			b.Fatal(err)
		}
	}
	d := time.Since(start)
	os.Remove(dst)
	return d
}
