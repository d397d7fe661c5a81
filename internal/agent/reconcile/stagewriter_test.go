package reconcile

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"math/rand/v2"
	"os"
	"testing"
)

func TestStageWriterHashesAndCounts(t *testing.T) {
	data := make([]byte, 3*stageBufSize+12345)
	for i := range data {
		data[i] = byte(rand.IntN(256))
	}
	var out bytes.Buffer
	w := newStageWriter(&out)
	for p := data; len(p) > 0; {
		k := min(len(p), 1+rand.IntN(70000))
		if _, err := w.Write(p[:k]); err != nil {
			t.Fatal(err)
		}
		p = p[k:]
	}
	n, sum, err := w.Close()
	want := sha256.Sum256(data)
	if err != nil || n != int64(len(data)) || sum != hex.EncodeToString(want[:]) || !bytes.Equal(out.Bytes(), data) {
		t.Errorf("Close() = %d, %s, %v; want %d bytes, %x", n, sum, err, len(data), want)
	}
}

type failWriter struct{}

func (failWriter) Write([]byte) (int, error) { return 0, errors.New("disk full") }

func TestStageWriterReportsWriteError(t *testing.T) {
	w := newStageWriter(failWriter{})
	buf := make([]byte, 64<<10)
	for i := 0; i < 4*stageBuffers*stageBufSize/len(buf); i++ {
		if _, err := w.Write(buf); err != nil {
			if !errors.Is(err, io.ErrShortWrite) {
				t.Fatalf("Write error = %v", err)
			}
			break
		}
	}
	if _, _, err := w.Close(); err == nil || err.Error() != "disk full" {
		t.Errorf("Close() error = %v, want disk full", err)
	}
}

func TestLazyFileStartsWritebackAndKeepsBytes(t *testing.T) {
	path := t.TempDir() + "/partial"
	l := &lazyFile{open: func() (*os.File, error) { return os.Create(path) }}
	chunk := make([]byte, 1<<20)
	h := sha256.New()
	for i := range 2*writebackChunk/len(chunk) + 3 {
		for j := range chunk {
			chunk[j] = byte(i + j)
		}
		h.Write(chunk)
		if _, err := l.Write(chunk); err != nil {
			t.Fatal(err)
		}
	}
	l.close()
	if l.started != 2*writebackChunk {
		t.Errorf("writeback started for %d bytes, want %d", l.started, 2*writebackChunk)
	}
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if sum := sha256.Sum256(got); !bytes.Equal(sum[:], h.Sum(nil)) {
		t.Error("file content differs from what was written")
	}
}
