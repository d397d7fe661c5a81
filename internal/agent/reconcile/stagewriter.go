package reconcile

import (
	"crypto/sha256"
	"encoding/hex"
	"hash"
	"io"
	"os"
	"sync/atomic"

	"golang.org/x/sys/unix"
)

// stageWriter writes a download to the staging file while hashing it on
// two more goroutines (one writes, one hashes), so the fetcher's own work
// (TLS, TUF hashing), our hash and the write syscalls overlap. It holds at
// most stageBuffers × stageBufSize bytes: a model streams, never sits in
// memory.
type stageWriter struct {
	cur     *chunk
	n       int64
	writeCh chan *chunk
	hashCh  chan *chunk
	free    chan *chunk
	wdone   chan struct{}
	hdone   chan struct{}
	failed  atomic.Bool
	// werr belongs to the writing goroutine and h to the hashing one
	// until their done channels are closed.
	werr error
	h    hash.Hash
}

// chunk is one buffer in flight; it returns to the free list when both
// the writer and the hasher are through with it.
type chunk struct {
	b       []byte
	pending atomic.Int32
}

const (
	stageBuffers = 8
	stageBufSize = 256 << 10
)

func newStageWriter(dst io.Writer) *stageWriter {
	w := &stageWriter{
		writeCh: make(chan *chunk, stageBuffers), hashCh: make(chan *chunk, stageBuffers), free: make(chan *chunk, stageBuffers),
		wdone: make(chan struct{}), hdone: make(chan struct{}), h: sha256.New(),
	}
	for range stageBuffers {
		w.free <- &chunk{b: make([]byte, 0, stageBufSize)}
	}
	go func() {
		defer close(w.wdone)
		for c := range w.writeCh {
			if w.werr == nil {
				if _, err := dst.Write(c.b); err != nil {
					w.werr = err
					w.failed.Store(true)
				}
			}
			w.release(c)
		}
	}()
	go func() {
		defer close(w.hdone)
		for c := range w.hashCh {
			w.h.Write(c.b)
			w.release(c)
		}
	}()
	return w
}

func (w *stageWriter) release(c *chunk) {
	if c.pending.Add(-1) == 0 {
		c.b = c.b[:0]
		w.free <- c
	}
}

func (w *stageWriter) send(c *chunk) {
	c.pending.Store(2)
	w.writeCh <- c
	w.hashCh <- c
}

func (w *stageWriter) Write(p []byte) (int, error) {
	if w.failed.Load() {
		return 0, io.ErrShortWrite // the real error comes from Close
	}
	total := len(p)
	for len(p) > 0 {
		if w.cur == nil {
			w.cur = <-w.free
		}
		b := w.cur.b
		k := copy(b[len(b):cap(b)], p)
		w.cur.b, p = b[:len(b)+k], p[k:]
		if len(w.cur.b) == cap(w.cur.b) {
			w.send(w.cur)
			w.cur = nil
		}
	}
	w.n += int64(total)
	return total, nil
}

// Close writes what is buffered and waits for both goroutines; it returns
// the first write error, or the byte count and hex sha256 of what was
// written.
func (w *stageWriter) Close() (n int64, sum string, err error) {
	if w.cur != nil && len(w.cur.b) > 0 {
		w.send(w.cur)
	}
	w.cur = nil
	close(w.writeCh)
	close(w.hashCh)
	<-w.wdone
	<-w.hdone
	if w.werr != nil {
		return 0, "", w.werr
	}
	return w.n, hex.EncodeToString(w.h.Sum(nil)), nil
}

// lazyFile is an io.Writer that opens its file on the first Write, so a
// download that fails before any byte arrives leaves nothing behind. Write
// runs on the stage writer's goroutine; file and close run after
// stageWriter.Close.
type lazyFile struct {
	open func() (*os.File, error)
	f    *os.File
	err  error
	// written and started count bytes written and bytes whose writeback
	// has been started.
	written, started int64
}

// writebackChunk: every this many bytes the kernel is asked to start
// writing them out, so the fsync after the download flushes only the tail
// instead of the whole model (1 GiB: 0.64 s → 0.36 s for write + fsync on
// the project machine, docs/benchmarks.md). A hint: durability still comes
// from the fsync.
const writebackChunk = 32 << 20

func (l *lazyFile) Write(p []byte) (int, error) {
	f, err := l.file()
	if err != nil {
		return 0, err
	}
	n, err := f.Write(p)
	l.written += int64(n)
	if l.written-l.started >= writebackChunk {
		startWriteback(f, l.started, l.written-l.started)
		l.started = l.written
	}
	return n, err
}

// startWriteback asks the kernel to begin writing [off, off+n) of f to disk
// without waiting (sync_file_range SYNC_FILE_RANGE_WRITE); errors are
// ignored: the fsync that follows reports what matters.
func startWriteback(f *os.File, off, n int64) {
	rc, err := f.SyscallConn()
	if err != nil {
		return
	}
	_ = rc.Control(func(fd uintptr) {
		_ = unix.SyncFileRange(int(fd), off, n, unix.SYNC_FILE_RANGE_WRITE)
	})
}

// file returns the open file, opening it if no Write has yet.
func (l *lazyFile) file() (*os.File, error) {
	if l.f == nil && l.err == nil {
		l.f, l.err = l.open()
	}
	return l.f, l.err
}

func (l *lazyFile) close() {
	if l.f != nil {
		l.f.Close()
	}
}
