package reconcile

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"io"
	"math/rand/v2"
	"os"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"
)

func TestStageWriterCopiesAndCounts(t *testing.T) {
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
	n, err := w.Close()
	if err != nil || n != int64(len(data)) || !bytes.Equal(out.Bytes(), data) {
		t.Errorf("Close() = %d, %v; want %d bytes, the same bytes written", n, err, len(data))
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
	if _, err := w.Close(); err == nil || err.Error() != "disk full" {
		t.Errorf("Close() error = %v, want disk full", err)
	}
}

// fill returns n pseudo-random bytes (seeded by i) at an address that is
// aligned for direct I/O when aligned is true and misaligned otherwise.
func fill(n, i int, aligned bool) []byte {
	b := alignedBuffer(n + 1)[:n+1]
	if !aligned {
		b = b[1:]
	}
	b = b[:n]
	for j := range b {
		b[j] = byte(i*31 + j*7)
	}
	return b
}

// directIOWorks tells whether the file system under dir takes O_DIRECT.
func directIOWorks(t *testing.T, dir string) bool {
	f, err := os.OpenFile(dir+"/probe", os.O_WRONLY|os.O_CREATE|unix.O_DIRECT, 0o600)
	if err != nil {
		t.Logf("%s refuses direct I/O (%v): only the buffered path is exercised", dir, err)
		return false
	}
	f.Close()
	return true
}

// Aligned stage buffers go to the disk with direct I/O; the tail of the
// file, which is not a whole number of blocks, turns it off, and the file
// holds exactly the bytes written.
func TestLazyFileWritesDirectThenTail(t *testing.T) {
	dir := t.TempDir()
	path := dir + "/partial"
	l := &lazyFile{open: func() (*os.File, error) { return os.Create(path) }}
	h := sha256.New()
	for i := range 5 {
		b := fill(stageBufSize, i, true)
		h.Write(b)
		if _, err := l.Write(b); err != nil {
			t.Fatal(err)
		}
	}
	if works := directIOWorks(t, dir); l.direct != works {
		t.Errorf("after aligned writes direct = %v, want %v", l.direct, works)
	}
	tail := fill(12345, 9, true)
	h.Write(tail)
	if _, err := l.Write(tail); err != nil {
		t.Fatal(err)
	}
	if l.direct {
		t.Error("direct I/O still on after the unaligned tail")
	}
	if err := l.f.Sync(); err != nil {
		t.Fatal(err)
	}
	l.close()
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if sum := sha256.Sum256(got); len(got) != 5*stageBufSize+12345 || !bytes.Equal(sum[:], h.Sum(nil)) {
		t.Errorf("file holds %d bytes that differ from the %d written", len(got), 5*stageBufSize+12345)
	}
}

// Once direct I/O is off (here: the first buffer is misaligned), the file
// is written through the page cache and writeback is started every
// writebackChunk bytes.
func TestLazyFileBufferedStartsWritebackAndKeepsBytes(t *testing.T) {
	path := t.TempDir() + "/partial"
	l := &lazyFile{open: func() (*os.File, error) { return os.Create(path) }}
	h := sha256.New()
	for i := range 2*writebackChunk/(1<<20) + 3 {
		chunk := fill(1<<20, i, false)
		h.Write(chunk)
		if _, err := l.Write(chunk); err != nil {
			t.Fatal(err)
		}
	}
	l.close()
	if l.direct || l.started != 2*writebackChunk {
		t.Errorf("direct = %v, writeback started for %d bytes; want buffered and %d", l.direct, l.started, 2*writebackChunk)
	}
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if sum := sha256.Sum256(got); !bytes.Equal(sum[:], h.Sum(nil)) {
		t.Error("file content differs from what was written")
	}
}

func TestAlignedBuffer(t *testing.T) {
	for _, n := range []int{1, directAlign, stageBufSize} {
		b := alignedBuffer(n)
		if len(b) != 0 || cap(b) != n || uintptr(unsafe.Pointer(unsafe.SliceData(b[:1])))%directAlign != 0 {
			t.Errorf("alignedBuffer(%d): len %d cap %d, address not aligned or wrong size", n, len(b), cap(b))
		}
	}
}
