// Package auditchain defines the audit event of SPEC §10, its canonical JSON
// and hash chain, and the JSONL export format with its trailer. It is a
// stdlib-only leaf shared by the server's store (which appends and verifies)
// and meshctl (`audit verify FILE`), so both compute byte-identical hashes.
//
//	hash = hex(sha256(prev_hash || canonical JSON of the event without hash))
//
// Canonical JSON: object keys sorted, no insignificant whitespace, no HTML
// escaping, numbers kept as written, time as UTC RFC 3339 with exactly three
// fractional digits ("2026-11-27T03:33:27.120Z"). prev_hash is the previous
// event's hash as lower-case hex; the first event's is GenesisHash.
package auditchain

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

// GenesisHash is the prev_hash of the first event (seq 1).
const GenesisHash = "0000000000000000000000000000000000000000000000000000000000000000"

// TimeFormat is the canonical time layout.
const TimeFormat = "2006-01-02T15:04:05.000Z"

// MaxDataBytes bounds an event's data document.
const MaxDataBytes = 64 << 10

// Event is one audit record. Data is a JSON object (or null).
type Event struct {
	Seq      int64           `json:"seq"`
	Time     time.Time       `json:"time"`
	Actor    string          `json:"actor"`
	Type     string          `json:"type"`
	Subject  string          `json:"subject"`
	Data     json.RawMessage `json:"data"`
	PrevHash string          `json:"prev_hash"`
	Hash     string          `json:"hash"`
}

// eventJSON is the wire shape: time as canonical text.
type eventJSON struct {
	Seq      int64           `json:"seq"`
	Time     string          `json:"time"`
	Actor    string          `json:"actor"`
	Type     string          `json:"type"`
	Subject  string          `json:"subject"`
	Data     json.RawMessage `json:"data"`
	PrevHash string          `json:"prev_hash"`
	Hash     string          `json:"hash"`
}

// MarshalJSON writes the event with its time in TimeFormat.
func (e Event) MarshalJSON() ([]byte, error) {
	data := e.Data
	if len(data) == 0 {
		data = json.RawMessage("null")
	}
	return json.Marshal(eventJSON{e.Seq, FormatTime(e.Time), e.Actor, e.Type, e.Subject, data, e.PrevHash, e.Hash})
}

// UnmarshalJSON reads the wire shape.
func (e *Event) UnmarshalJSON(b []byte) error {
	var w eventJSON
	if err := json.Unmarshal(b, &w); err != nil {
		return err
	}
	t, err := time.Parse(time.RFC3339Nano, w.Time)
	if err != nil {
		return fmt.Errorf("event time: %w", err)
	}
	*e = Event{w.Seq, t.UTC(), w.Actor, w.Type, w.Subject, w.Data, w.PrevHash, w.Hash}
	return nil
}

// FormatTime renders t canonically (UTC, millisecond precision).
func FormatTime(t time.Time) string { return t.UTC().Truncate(time.Millisecond).Format(TimeFormat) }

// CanonicalData returns data in canonical form ("null" for empty). It fails
// on invalid or oversized JSON.
func CanonicalData(data json.RawMessage) ([]byte, error) {
	if len(bytes.TrimSpace(data)) == 0 {
		return []byte("null"), nil
	}
	if len(data) > MaxDataBytes {
		return nil, fmt.Errorf("audit data too large (%d bytes, max %d)", len(data), MaxDataBytes)
	}
	v, err := decode(data)
	if err != nil {
		return nil, fmt.Errorf("audit data: %w", err)
	}
	return encode(v)
}

// Canonical returns the canonical JSON of e without its hash field.
func Canonical(e Event) ([]byte, error) {
	data, err := CanonicalData(e.Data)
	if err != nil {
		return nil, err
	}
	m := map[string]any{
		"seq":       e.Seq,
		"time":      FormatTime(e.Time),
		"actor":     e.Actor,
		"type":      e.Type,
		"subject":   e.Subject,
		"data":      json.RawMessage(data),
		"prev_hash": e.PrevHash,
	}
	return encode(m)
}

// Hash computes e's hash from its prev_hash and canonical JSON.
func Hash(e Event) (string, error) {
	c, err := Canonical(e)
	if err != nil {
		return "", err
	}
	h := sha256.New()
	h.Write([]byte(e.PrevHash))
	h.Write(c)
	return hex.EncodeToString(h.Sum(nil)), nil
}

func decode(b []byte) (any, error) {
	d := json.NewDecoder(bytes.NewReader(b))
	d.UseNumber()
	var v any
	if err := d.Decode(&v); err != nil {
		return nil, err
	}
	if d.More() {
		return nil, errors.New("trailing data after JSON value")
	}
	return v, nil
}

// encode marshals with sorted keys (encoding/json sorts map keys) and
// without HTML escaping or a trailing newline.
func encode(v any) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n")), nil
}
