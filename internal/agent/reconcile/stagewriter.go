package reconcile

import (
	"errors"
	"fmt"
	"io"
	"os"
	"sync/atomic"
	"unsafe"

	"golang.org/x/sys/unix"
)

// stageWriter is a write-behind buffer for the staging file: Write copies
// into one of a few large buffers and a goroutine writes them out, so the
// fetcher's work (TLS, the TUF hash) and the write syscalls overlap. It
// does not hash: the fetcher hashed the stream once as it verified it
// (Fetcher). It holds at most stageBuffers × stageBufSize bytes: a model
// streams, never sits in memory. The buffers are aligned for direct I/O
// (lazyFile): every full buffer is a multiple of the block size at an
// aligned offset.
type stageWriter struct {
	cur     []byte
	n       int64
	writeCh chan []byte
	free    chan []byte
	wdone   chan struct{}
	failed  atomic.Bool
	// werr belongs to the writing goroutine until wdone is closed.
	werr error
}

const (
	stageBuffers = 4
	stageBufSize = 1 << 20
	// directAlign is the alignment direct I/O needs of buffers, lengths
	// and file offsets: the logical block size of any disk we meet is at
	// most 4 KiB.
	directAlign = 4096
)

func newStageWriter(dst io.Writer) *stageWriter {
	w := &stageWriter{writeCh: make(chan []byte, stageBuffers), free: make(chan []byte, stageBuffers), wdone: make(chan struct{})}
	for range stageBuffers {
		w.free <- alignedBuffer(stageBufSize)
	}
	go func() {
		defer close(w.wdone)
		for b := range w.writeCh {
			if w.werr == nil {
				if _, err := dst.Write(b); err != nil {
					w.werr = err
					w.failed.Store(true)
				}
			}
			w.free <- b[:0]
		}
	}()
	return w
}

// alignedBuffer returns an empty slice of capacity n whose first byte is
// directAlign-aligned.
func alignedBuffer(n int) []byte {
	b := make([]byte, n+directAlign)
	off := 0
	if r := int(uintptr(unsafe.Pointer(&b[0])) % directAlign); r != 0 {
		off = directAlign - r
	}
	return b[off : off : off+n]
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
		k := copy(w.cur[len(w.cur):cap(w.cur)], p)
		w.cur, p = w.cur[:len(w.cur)+k], p[k:]
		if len(w.cur) == cap(w.cur) {
			w.writeCh <- w.cur
			w.cur = nil
		}
	}
	w.n += int64(total)
	return total, nil
}

// Close writes what is buffered and waits for the writing goroutine; it
// returns the first write error, or the number of bytes written.
func (w *stageWriter) Close() (int64, error) {
	if len(w.cur) > 0 {
		w.writeCh <- w.cur
	}
	w.cur = nil
	close(w.writeCh)
	<-w.wdone
	if w.werr != nil {
		return 0, w.werr
	}
	return w.n, nil
}

// lazyFile is an io.Writer that opens its file on the first Write, so a
// download that fails before any byte arrives leaves nothing behind. Write
// runs on the stage writer's goroutine; file and close run after
// stageWriter.Close.
//
// It writes with direct I/O (O_DIRECT) while it can: the bytes go from the
// stage buffer to the disk without passing through the page cache, so
// staging a model neither costs the CPU of filling new page-cache pages
// nor evicts what the device's services have cached, and the fsync at the
// end has little left to flush (1 GiB on the project machine: 0.32–0.40 s
// and 0.05–0.1 s of CPU, against 0.27–1.0 s and as much CPU buffered,
// docs/benchmarks.md). The first write that direct I/O cannot take (the
// unaligned tail of the file, or a file system without direct I/O) turns
// it off for the rest of the file, which is then written through the page
// cache with writeback started as it goes. Durability always comes from
// the caller's fsync.
type lazyFile struct {
	open   func() (*os.File, error)
	f      *os.File
	err    error
	direct bool // O_DIRECT is set on f
	// written and started count bytes written and bytes whose writeback
	// has been started (or that direct I/O wrote).
	written, started int64
}

// writebackChunk: once direct I/O is off, every this many bytes the kernel
// is asked to start writing them out, so the fsync after the download
// flushes only the tail instead of the whole model (1 GiB: 0.64 s →
// 0.36 s for write + fsync on the project machine). A hint: durability
// still comes from the fsync.
const writebackChunk = 32 << 20

func (l *lazyFile) Write(p []byte) (int, error) {
	f, err := l.file()
	if err != nil {
		return 0, err
	}
	if l.direct {
		if len(p)%directAlign == 0 && uintptr(unsafe.Pointer(unsafe.SliceData(p)))%directAlign == 0 && l.written%directAlign == 0 {
			n, err := f.Write(p)
			l.written += int64(n)
			l.started = l.written
			if !errors.Is(err, unix.EINVAL) {
				return n, err
			}
			p = p[n:] // the file system refused direct I/O after all
		}
		if err := l.setDirect(false); err != nil {
			return 0, fmt.Errorf("turn off direct I/O: %w", err)
		}
	}
	n, err := f.Write(p)
	l.written += int64(n)
	if l.written-l.started >= writebackChunk {
		startWriteback(f, l.started, l.written-l.started)
		l.started = l.written
	}
	return n, err
}

// setDirect sets or clears O_DIRECT on the open file.
func (l *lazyFile) setDirect(on bool) error {
	rc, err := l.f.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	if err := rc.Control(func(fd uintptr) {
		var fl int
		if fl, serr = unix.FcntlInt(fd, unix.F_GETFL, 0); serr != nil {
			return
		}
		if on {
			fl |= unix.O_DIRECT
		} else {
			fl &^= unix.O_DIRECT
		}
		_, serr = unix.FcntlInt(fd, unix.F_SETFL, fl)
	}); err != nil {
		return err
	}
	if serr == nil {
		l.direct = on
	}
	return serr
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

// file returns the open file, opening it if no Write has yet, with direct
// I/O on where the file system allows it.
func (l *lazyFile) file() (*os.File, error) {
	if l.f == nil && l.err == nil {
		if l.f, l.err = l.open(); l.err == nil {
			_ = l.setDirect(true) // refused: stay buffered
		}
	}
	return l.f, l.err
}

func (l *lazyFile) close() {
	if l.f != nil {
		l.f.Close()
	}
}
