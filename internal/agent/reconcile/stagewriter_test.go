package reconcile

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"math/rand/v2"
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
