package tufclient

import (
	"errors"
	"hash"
	"io"
)

// Streaming: the body is read (and, over TLS, decrypted) on its own
// goroutine into a few large buffers while this goroutine hashes them and
// hands them to the writer, so reading, hashing and the caller's write
// overlap on a multi-core device instead of running one after the other.
// Memory stays at streamBuffers × streamBufSize whatever the target size.
const (
	streamBuffers = 4
	streamBufSize = 1 << 20
)

type streamChunk struct {
	b   []byte
	err error // terminal: io.EOF at the end of src, or the read error
}

// copyHashed copies src to w and into h until src ends, returning the
// bytes copied. A write error stops the copy (the reader goroutine exits
// once its current read returns; the caller closes src).
func copyHashed(w io.Writer, h hash.Hash, src io.Reader) (int64, error) {
	free := make(chan []byte, streamBuffers)
	for range streamBuffers {
		free <- make([]byte, streamBufSize)
	}
	full := make(chan streamChunk, streamBuffers)
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		for {
			var b []byte
			select {
			case b = <-free:
			case <-stop:
				return
			}
			n, err := io.ReadFull(src, b)
			if errors.Is(err, io.ErrUnexpectedEOF) {
				err = io.EOF // a short last buffer
			}
			if n > 0 {
				select {
				case full <- streamChunk{b: b[:n]}:
				case <-stop:
					return
				}
			}
			if err != nil {
				select {
				case full <- streamChunk{err: err}:
				case <-stop:
				}
				return
			}
		}
	}()
	var total int64
	for c := range full {
		if c.err != nil {
			if errors.Is(c.err, io.EOF) {
				return total, nil
			}
			return total, c.err
		}
		h.Write(c.b)
		if _, err := w.Write(c.b); err != nil {
			return total, err
		}
		total += int64(len(c.b))
		free <- c.b[:cap(c.b)]
	}
	return total, nil // not reached: the reader always ends with an error chunk
}
