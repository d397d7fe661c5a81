package tufclient

import (
	"crypto/rand"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/meshanics/meshanics/internal/artifact"
	"github.com/meshanics/meshanics/internal/server/updaterepo"
	devicev1 "github.com/meshanics/meshanics/proto/meshanics/device/v1"
)

// BenchmarkFetchVerify measures end-to-end fetch + verify (TUF refresh,
// mutual TLS download, streaming sha256, fsync, rename into the artifact
// area) of one target. Size: MESHANICS_BENCH_FETCH_BYTES (default 64 MiB;
// the figure uses 1 GiB). The blob path is logged so the same file
// can be hashed with openssl for the ratio.
func BenchmarkFetchVerify(b *testing.B) {
	size := int64(64 << 20)
	if s := os.Getenv("MESHANICS_BENCH_FETCH_BYTES"); s != "" {
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			b.Fatal(err)
		}
		size = n
	}
	e := newEnv(b)
	src := filepath.Join(b.TempDir(), "payload")
	f, err := os.Create(src)
	if err != nil {
		b.Fatal(err)
	}
	if _, err := io.CopyN(f, rand.Reader, size); err != nil {
		b.Fatal(err)
	}
	f.Close()
	in, _ := os.Open(src)
	sum, n, err := e.blobs.Put(in, size)
	in.Close()
	if err != nil {
		b.Fatal(err)
	}
	path := artifact.TargetPath("model", "big", "1", "model.bin")
	custom, _ := artifact.EncodeTargetCustom(artifact.Custom{Kind: "model", Name: "big", Version: "1", Manifest: &artifact.ModelManifest{Framework: "onnx"}})
	if err := e.repo.AddTarget(e.ctx, updaterepo.Target{Path: path, SHA256: sum, Length: n, Custom: custom}, nil); err != nil {
		b.Fatal(err)
	}
	blob := filepath.Join(e.dataDir, "blobs", "sha256", sum[:2], sum)
	// The reference: openssl dgst -sha256 on the same file, same run.
	var opensslSecs float64
	if bin, err := exec.LookPath("openssl"); err == nil {
		start := time.Now()
		if out, err := exec.Command(bin, "dgst", "-sha256", blob).CombinedOutput(); err != nil {
			b.Fatalf("openssl: %v %s", err, out)
		}
		opensslSecs = time.Since(start).Seconds()
	}
	a := &devicev1.Artifact{Kind: "model", Name: "big", Version: "1", TargetPath: path, Sha256: sum, Length: n}
	b.SetBytes(n)
	b.ResetTimer()
	start := time.Now()
	for i := 0; i < b.N; i++ {
		dst := filepath.Join(e.artDir, "model-"+strconv.Itoa(i))
		if os.Getenv("MESHANICS_BENCH_FETCH_DISCARD") == "1" { // network + verify only
			if _, err := e.client.Fetch(e.ctx, a, io.Discard); err != nil {
				b.Fatal(err)
			}
		} else if _, err := e.client.FetchFile(e.ctx, a, dst); err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		os.Remove(dst)
		b.StartTimer()
	}
	if opensslSecs > 0 {
		perOp := time.Since(start).Seconds() / float64(b.N) // includes the untimed removes; conservative
		b.ReportMetric(opensslSecs/perOp, "x-openssl-throughput")
		b.Logf("fetch+verify %.0f MB/s, openssl dgst -sha256 %.0f MB/s", float64(n)/perOp/1e6, float64(n)/opensslSecs/1e6)
	}
}
