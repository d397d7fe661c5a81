package tufclient

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"io"
	"math/rand/v2"
	"testing"
	"testing/iotest"
)

func TestCopyHashedCopiesAndHashes(t *testing.T) {
	for _, size := range []int{0, 1, streamBufSize - 1, streamBufSize, 3*streamBufSize + 12345} {
		data := make([]byte, size)
		for i := range data {
			data[i] = byte(rand.IntN(256))
		}
		var out bytes.Buffer
		h := sha256.New()
		// Short reads, as a network body delivers them.
		n, err := copyHashed(&out, h, iotest.HalfReader(bytes.NewReader(data)))
		want := sha256.Sum256(data)
		if err != nil || n != int64(size) || !bytes.Equal(out.Bytes(), data) || !bytes.Equal(h.Sum(nil), want[:]) {
			t.Errorf("copyHashed(%d bytes) = %d, %v; copy equal %v, hash equal %v", size, n, err, bytes.Equal(out.Bytes(), data), bytes.Equal(h.Sum(nil), want[:]))
		}
	}
}

type failingWriter struct{ after int }

func (w *failingWriter) Write(p []byte) (int, error) {
	if w.after <= 0 {
		return 0, errors.New("disk full")
	}
	w.after--
	return len(p), nil
}

func TestCopyHashedStopsOnWriteError(t *testing.T) {
	src := io.LimitReader(zeros{}, 10*streamBufSize)
	n, err := copyHashed(&failingWriter{after: 2}, sha256.New(), src)
	if err == nil || err.Error() != "disk full" || n != 2*streamBufSize {
		t.Errorf("copyHashed into a failing writer = %d, %v; want %d, disk full", n, err, 2*streamBufSize)
	}
}

func TestCopyHashedReportsReadError(t *testing.T) {
	src := io.MultiReader(bytes.NewReader(make([]byte, streamBufSize+5)), iotest.ErrReader(errors.New("connection reset")))
	n, err := copyHashed(io.Discard, sha256.New(), src)
	if err == nil || err.Error() != "connection reset" || n != streamBufSize+5 {
		t.Errorf("copyHashed of a broken body = %d, %v; want %d, connection reset", n, err, streamBufSize+5)
	}
}

type zeros struct{}

func (zeros) Read(p []byte) (int, error) { clear(p); return len(p), nil }
