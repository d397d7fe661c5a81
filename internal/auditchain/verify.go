package auditchain

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
)

// Verifier checks a sequence of events link by link. The zero value expects
// the chain to start at seq 1 with GenesisHash; FromAnchor starts later.
// Not safe for concurrent use.
type Verifier struct {
	count    int64
	lastSeq  int64
	head     string
	anchored bool
}

// FromAnchor returns a verifier for a chain that continues after the event
// with sequence seq and hash head.
func FromAnchor(seq int64, head string) *Verifier {
	return &Verifier{lastSeq: seq, head: head, anchored: true}
}

// Add verifies e against the events added before it.
func (v *Verifier) Add(e Event) error {
	if !v.anchored {
		v.lastSeq, v.head, v.anchored = 0, GenesisHash, true
	}
	if e.Seq != v.lastSeq+1 {
		return fmt.Errorf("event seq %d: want seq %d (gap or reordering)", e.Seq, v.lastSeq+1)
	}
	if e.PrevHash != v.head {
		return fmt.Errorf("event seq %d: prev_hash does not match the previous event's hash", e.Seq)
	}
	h, err := Hash(e)
	if err != nil {
		return fmt.Errorf("event seq %d: %w", e.Seq, err)
	}
	if h != e.Hash {
		return fmt.Errorf("event seq %d: hash mismatch (event was changed)", e.Seq)
	}
	v.count++
	v.lastSeq, v.head = e.Seq, e.Hash
	return nil
}

// Count is the number of events verified so far.
func (v *Verifier) Count() int64 { return v.count }

// Head is the hash of the last verified event (GenesisHash before any).
func (v *Verifier) Head() string {
	if !v.anchored {
		return GenesisHash
	}
	return v.head
}

// Trailer is the last line of a JSONL export.
type Trailer struct {
	Count    int64  `json:"count"`
	Verified bool   `json:"verified"`
	HeadHash string `json:"head_hash"`
}

// ExportWriter writes events as JSONL and, on Close, the trailer. It
// verifies the chain as it goes; Verified in the trailer says whether every
// written event checked out.
type ExportWriter struct {
	w      *bufio.Writer
	v      Verifier
	broken error
	count  int64
	head   string
}

// NewExportWriter starts an export to w.
func NewExportWriter(w io.Writer) *ExportWriter {
	return &ExportWriter{w: bufio.NewWriter(w), head: GenesisHash}
}

// Write appends one event line.
func (x *ExportWriter) Write(e Event) error {
	if x.broken == nil {
		x.broken = x.v.Add(e)
	}
	b, err := json.Marshal(e)
	if err != nil {
		return fmt.Errorf("encode audit event: %w", err)
	}
	x.count++
	x.head = e.Hash
	b = append(b, '\n')
	_, err = x.w.Write(b)
	return err
}

// Err reports the first chain problem seen, if any.
func (x *ExportWriter) Err() error { return x.broken }

// Close writes the trailer and flushes.
func (x *ExportWriter) Close() error {
	b, err := json.Marshal(Trailer{Count: x.count, Verified: x.broken == nil, HeadHash: x.head})
	if err != nil {
		return err
	}
	if _, err := x.w.Write(append(b, '\n')); err != nil {
		return err
	}
	return x.w.Flush()
}

// MaxLineBytes bounds one JSONL line when reading an export.
const MaxLineBytes = 1 << 20

// VerifyExport reads a JSONL export (events then trailer), recomputes the
// chain from genesis and checks the trailer against it. It returns the
// recomputed trailer; err says what is wrong, if anything.
func VerifyExport(r io.Reader) (Trailer, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), MaxLineBytes)
	var v Verifier
	var last []byte
	line := 0
	var pending []byte // the previous line: an event unless it turns out to be the last
	pendingLine := 0
	flush := func() error {
		if pending == nil {
			return nil
		}
		var e Event
		if err := strictUnmarshal(pending, &e); err != nil {
			return fmt.Errorf("line %d: %w", pendingLine, err)
		}
		if err := v.Add(e); err != nil {
			return fmt.Errorf("line %d: %w", pendingLine, err)
		}
		return nil
	}
	for sc.Scan() {
		line++
		b := bytes.TrimSpace(sc.Bytes())
		if len(b) == 0 {
			continue
		}
		if err := flush(); err != nil {
			return Trailer{Count: v.Count(), HeadHash: v.Head()}, err
		}
		pending, pendingLine = append([]byte(nil), b...), line
		last = pending
	}
	if err := sc.Err(); err != nil {
		return Trailer{Count: v.Count(), HeadHash: v.Head()}, fmt.Errorf("read export: %w", err)
	}
	got := Trailer{Count: v.Count(), Verified: true, HeadHash: v.Head()}
	if last == nil {
		return Trailer{HeadHash: GenesisHash}, errors.New("empty export: no trailer line")
	}
	var t Trailer
	if err := strictUnmarshal(last, &t); err != nil {
		return got, fmt.Errorf("trailer: %w", err)
	}
	if t.Count != got.Count || t.HeadHash != got.HeadHash {
		return got, fmt.Errorf("trailer says %d events ending in %s, chain has %d ending in %s", t.Count, t.HeadHash, got.Count, got.HeadHash)
	}
	if !t.Verified {
		return got, errors.New("trailer says the server could not verify the chain")
	}
	return got, nil
}

func strictUnmarshal(b []byte, v any) error {
	d := json.NewDecoder(bytes.NewReader(b))
	d.DisallowUnknownFields()
	if err := d.Decode(v); err != nil {
		return err
	}
	if d.More() {
		return errors.New("trailing data")
	}
	return nil
}
