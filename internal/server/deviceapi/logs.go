package deviceapi

import (
	"bytes"
	"compress/gzip"
	"errors"
	"fmt"
	"io"

	"github.com/meshanics/meshanics/internal/errdefs"
	devicev1 "github.com/meshanics/meshanics/proto/meshanics/device/v1"
)

// Log upload bounds.
const (
	// MaxLogUpload is the gzip bytes of one log request, all chunks
	// together (SPEC §3).
	MaxLogUpload = 8 << 20
	// maxLogExpanded bounds the decompressed size checked by validGzip: a
	// journal excerpt compresses ~10×; a gzip bomb is refused.
	maxLogExpanded = 256 << 20
)

// UploadLogs implements DeviceService.UploadLogs: a stream of gzip chunks
// for one log request of the calling device, at most MaxLogUpload bytes in
// all. The bundle is stored only when the stream ends well; nothing is
// stored for a refused or broken upload.
func (s handlers) UploadLogs(stream devicev1.DeviceService_UploadLogsServer) error {
	ctx := stream.Context()
	dev, err := callerOf(ctx)
	if err != nil {
		return err
	}
	var (
		id  string
		buf bytes.Buffer
	)
	for {
		msg, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return fmt.Errorf("receive log chunk: %w", err)
		}
		switch {
		case id == "":
			if !idRE.MatchString(msg.GetRequestId()) {
				return errdefs.Invalid("the first chunk must carry a valid request_id")
			}
			id = msg.GetRequestId()
		case msg.GetRequestId() != "" && msg.GetRequestId() != id:
			return errdefs.Invalid("one upload carries one request_id")
		}
		if buf.Len()+len(msg.GetChunk()) > MaxLogUpload {
			return resourceExhausted(fmt.Sprintf("log upload exceeds %d bytes", MaxLogUpload))
		}
		buf.Write(msg.GetChunk())
	}
	if id == "" {
		return errdefs.Invalid("empty upload: no request_id")
	}
	if err := validGzip(buf.Bytes(), maxLogExpanded); err != nil {
		return err
	}
	if err := s.logs.CompleteLogRequest(ctx, dev.Name, id, buf.Bytes()); err != nil {
		return fmt.Errorf("store logs of %s for %s: %w", dev.Name, id, err)
	}
	s.pending.done(dev.Name, id)
	return stream.SendAndClose(&devicev1.UploadLogsResponse{ReceivedBytes: int64(buf.Len())})
}

// validGzip checks that b is a complete gzip stream (possibly several
// members) that expands to at most limit bytes, so the operator
// downloads what the agent meant to send and nothing that explodes.
func validGzip(b []byte, limit int64) error {
	if len(b) == 0 {
		return errdefs.Invalid("log bundle is empty")
	}
	zr, err := gzip.NewReader(bytes.NewReader(b))
	if err != nil {
		return errdefs.Invalid("log bundle is not gzip data")
	}
	n, err := io.Copy(io.Discard, io.LimitReader(zr, limit+1))
	if err != nil {
		return errdefs.Invalid("log bundle is not valid gzip data")
	}
	if n > limit {
		return errdefs.Invalid(fmt.Sprintf("log bundle expands to more than %d bytes", limit))
	}
	return nil
}
