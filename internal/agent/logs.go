package agent

import (
	"bytes"
	"compress/gzip"
	"context"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/meshanics/meshanics/internal/agent/execx"
	devicev1 "github.com/meshanics/meshanics/proto/meshanics/device/v1"
)

// Log pull bounds (SPEC §3, §4.5).
const (
	maxUploadGzip   = 8 << 20  // the server's limit for one request, all chunks
	maxJournalBytes = 16 << 20 // raw journal text read at most
	uploadChunk     = 256 << 10
	defaultLogLines = 1000
	maxLogLines     = 100000
	journalTimeout  = 60 * time.Second
	uploadTimeout   = 5 * time.Minute
	maxRequestID    = 128
	maxQueuedPulls  = 16
)

// JournalUnit is the only unit whose journal the agent reads.
const JournalUnit = "meshanics-agent.service"

// JournalReader returns the agent's own log lines since (zero: no bound),
// at most maxLines of the newest.
type JournalReader func(ctx context.Context, since time.Time, maxLines int) ([]byte, error)

// JournalctlArgs is the fixed argument list of SPEC §4.5: the request
// chooses only the time bound and the line count, never the source.
func JournalctlArgs(since time.Time, maxLines int) []string {
	args := []string{"--unit=" + JournalUnit, "--no-pager", "--output=short-iso-precise"}
	if !since.IsZero() {
		args = append(args, "--since=@"+strconv.FormatInt(since.Unix(), 10))
	}
	return append(args, "--lines="+strconv.Itoa(maxLines))
}

// journalctl reads the journal through the one exec helper.
func journalctl(ctx context.Context, since time.Time, maxLines int) ([]byte, error) {
	path, err := execx.Find("journalctl")
	if err != nil {
		return nil, err
	}
	res, err := execx.Run(ctx, execx.Cmd{Path: path, Args: JournalctlArgs(since, maxLines), Timeout: journalTimeout, MaxOutput: maxJournalBytes})
	if err != nil {
		return nil, err
	}
	return res.Stdout, nil
}

// logPuller answers log requests one at a time, each once per process.
type logPuller struct {
	a     *Agent
	queue chan *devicev1.LogRequest

	mu   sync.Mutex // guards seen
	seen map[string]bool
}

func newLogPuller(a *Agent) *logPuller {
	return &logPuller{a: a, queue: make(chan *devicev1.LogRequest, maxQueuedPulls), seen: map[string]bool{}}
}

// offer queues a request unless it was already taken (the server repeats a
// pending request on every heartbeat until the upload lands).
func (p *logPuller) offer(lr *devicev1.LogRequest) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if id := lr.GetRequestId(); id == "" || len(id) > maxRequestID || p.seen[id] {
		return
	}
	select {
	case p.queue <- lr:
		if len(p.seen) > 1024 {
			clear(p.seen)
		}
		p.seen[lr.GetRequestId()] = true
	default: // full: the next heartbeat offers it again
	}
}

// forget lets a failed request be taken again from a later heartbeat.
func (p *logPuller) forget(id string) {
	p.mu.Lock()
	delete(p.seen, id)
	p.mu.Unlock()
}

func (p *logPuller) run(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case lr := <-p.queue:
			if err := p.answer(ctx, lr); err != nil {
				p.a.log.Warn("log upload failed; will retry when asked again", "request", lr.GetRequestId(), "err", err)
				p.forget(lr.GetRequestId())
			} else {
				p.a.log.Info("log upload done", "request", lr.GetRequestId())
			}
		}
	}
}

func (p *logPuller) answer(ctx context.Context, lr *devicev1.LogRequest) error {
	var since time.Time
	if lr.GetSinceUnix() > 0 {
		since = time.Unix(lr.GetSinceUnix(), 0)
	}
	lines := int(lr.GetMaxLines())
	if lines <= 0 {
		lines = defaultLogLines
	}
	lines = min(lines, maxLogLines)
	raw := p.read(ctx, since, lines)
	gz, err := gzipCapped(raw, maxUploadGzip)
	if err != nil {
		return err
	}
	return p.upload(ctx, lr.GetRequestId(), gz)
}

// read returns the journal under systemd, the in-memory ring otherwise (or
// when the journal cannot be read, with a line saying why).
func (p *logPuller) read(ctx context.Context, since time.Time, lines int) []byte {
	a := p.a
	reader := a.d.Journal
	if reader == nil && a.d.Getenv("INVOCATION_ID") != "" {
		reader = journalctl
	}
	var prefix []byte
	if reader != nil {
		out, err := reader(ctx, since, lines)
		if err == nil {
			return out
		}
		prefix = fmt.Appendf(nil, "meshanics-agent: journal unavailable (%v); sending the in-memory log instead\n", err)
	}
	if a.d.Ring == nil {
		return append(prefix, "meshanics-agent: no in-memory log kept\n"...)
	}
	return append(prefix, a.d.Ring.Snapshot(since, lines)...)
}

// gzipCapped compresses raw; when the result exceeds limit it keeps the
// newest half of the lines and tries again.
func gzipCapped(raw []byte, limit int) ([]byte, error) {
	for {
		var buf bytes.Buffer
		zw := gzip.NewWriter(&buf)
		if _, err := zw.Write(raw); err != nil {
			return nil, err
		}
		if err := zw.Close(); err != nil {
			return nil, err
		}
		if buf.Len() <= limit || len(raw) == 0 {
			return buf.Bytes(), nil
		}
		half := raw[len(raw)/2:]
		if i := bytes.IndexByte(half, '\n'); i >= 0 {
			half = half[i+1:]
		}
		raw = half
	}
}

func (p *logPuller) upload(ctx context.Context, id string, gz []byte) error {
	ctx, cancel := context.WithTimeout(ctx, uploadTimeout)
	defer cancel()
	stream, err := p.a.currentClient().UploadLogs(ctx)
	if err != nil {
		return err
	}
	for off := 0; off == 0 || off < len(gz); off += uploadChunk {
		chunk := gz[off:min(off+uploadChunk, len(gz))]
		if err := stream.Send(&devicev1.UploadLogsRequest{RequestId: id, Chunk: chunk}); err != nil {
			_, rerr := stream.CloseAndRecv() // the server's reason, if any
			if rerr != nil {
				return rerr
			}
			return err
		}
	}
	_, err = stream.CloseAndRecv()
	return err
}
