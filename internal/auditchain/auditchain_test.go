package auditchain

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"time"
)

func chain(t testing.TB, n int) []Event {
	t.Helper()
	var out []Event
	prev := GenesisHash
	for i := 1; i <= n; i++ {
		e := Event{Seq: int64(i), Time: time.Date(2026, 11, 27, 3, 0, i, 120e6, time.UTC), Actor: "user:alice",
			Type: "device.decommission", Subject: "edge-1", Data: json.RawMessage(`{"b": 1, "a": "<x>"}`), PrevHash: prev}
		h, err := Hash(e)
		if err != nil {
			t.Fatal(err)
		}
		e.Hash = h
		prev = h
		out = append(out, e)
	}
	return out
}

func TestCanonical(t *testing.T) {
	e := chain(t, 1)[0]
	got, err := Canonical(e)
	if err != nil {
		t.Fatal(err)
	}
	want := `{"actor":"user:alice","data":{"a":"<x>","b":1},"prev_hash":"` + GenesisHash +
		`","seq":1,"subject":"edge-1","time":"2026-11-27T03:00:01.120Z","type":"device.decommission"}`
	if string(got) != want {
		t.Errorf("Canonical = %s\nwant        %s", got, want)
	}
	// Key order and whitespace in data do not change the hash.
	e2 := e
	e2.Data = json.RawMessage("{\n \"a\": \"<x>\", \"b\": 1}")
	if h, _ := Hash(e2); h != e.Hash {
		t.Errorf("Hash changed with data formatting")
	}
}

func TestEventJSONRoundTrip(t *testing.T) {
	e := chain(t, 1)[0]
	b, err := json.Marshal(e)
	if err != nil {
		t.Fatal(err)
	}
	var back Event
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	if h, err := Hash(back); err != nil || h != e.Hash {
		t.Errorf("hash after JSON round trip = %s, %v; want %s", h, err, e.Hash)
	}
}

func export(t testing.TB, events []Event) []byte {
	t.Helper()
	var buf bytes.Buffer
	w := NewExportWriter(&buf)
	for _, e := range events {
		if err := w.Write(e); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func TestVerifyExport(t *testing.T) {
	events := chain(t, 4)
	good := export(t, events)
	tr, err := VerifyExport(bytes.NewReader(good))
	if err != nil || tr.Count != 4 || tr.HeadHash != events[3].Hash || !tr.Verified {
		t.Fatalf("VerifyExport(good) = %+v, %v", tr, err)
	}
	empty := export(t, nil)
	if tr, err := VerifyExport(bytes.NewReader(empty)); err != nil || tr.Count != 0 || tr.HeadHash != GenesisHash {
		t.Errorf("VerifyExport(empty log) = %+v, %v", tr, err)
	}
	lines := strings.Split(strings.TrimSpace(string(good)), "\n")
	bad := map[string]string{
		"changed subject":  strings.Join(append(append([]string{}, lines[:1]...), append([]string{strings.Replace(lines[1], `"edge-1"`, `"edge-2"`, 1)}, lines[2:]...)...), "\n"),
		"dropped event":    strings.Join(append(append([]string{}, lines[:1]...), lines[2:]...), "\n"),
		"no trailer":       strings.Join(lines[:4], "\n"),
		"truncated tail":   strings.Join(append(append([]string{}, lines[:3]...), lines[4]), "\n"),
		"swapped":          strings.Join([]string{lines[1], lines[0], lines[2], lines[3], lines[4]}, "\n"),
		"nothing":          "",
		"trailer not ok":   strings.Join(append(append([]string{}, lines[:4]...), strings.Replace(lines[4], `"verified":true`, `"verified":false`, 1)), "\n"),
		"garbage line":     strings.Join(append([]string{"not json"}, lines...), "\n"),
		"trailer mismatch": strings.Join(append(append([]string{}, lines[:4]...), strings.Replace(lines[4], `"count":4`, `"count":5`, 1)), "\n"),
	}
	for name, in := range bad {
		if _, err := VerifyExport(strings.NewReader(in)); err == nil {
			t.Errorf("VerifyExport(%s) succeeded, want error", name)
		}
	}
}

func TestExportWriterFlagsBrokenChain(t *testing.T) {
	events := chain(t, 3)
	events[1].Subject = "tampered"
	var buf bytes.Buffer
	w := NewExportWriter(&buf)
	for _, e := range events {
		_ = w.Write(e)
	}
	_ = w.Close()
	if w.Err() == nil || !strings.Contains(buf.String(), `"verified":false`) {
		t.Errorf("export of a broken chain: Err = %v, trailer %q; want verified false", w.Err(), buf.String())
	}
}

func TestCanonicalDataRejects(t *testing.T) {
	for _, in := range []string{`{`, `{"a":1} {"b":2}`, `"` + strings.Repeat("x", MaxDataBytes) + `"`} {
		if _, err := CanonicalData(json.RawMessage(in)); err == nil {
			t.Errorf("CanonicalData(%.20q) succeeded, want error", in)
		}
	}
}

func FuzzVerifyExport(f *testing.F) {
	f.Add(export(f, chain(f, 2)))
	f.Add([]byte(`{"count":0,"verified":true,"head_hash":"` + GenesisHash + `"}`))
	f.Add([]byte("{\"seq\":1}\n{}"))
	f.Fuzz(func(t *testing.T, b []byte) {
		tr, err := VerifyExport(bytes.NewReader(b))
		if err == nil && (!tr.Verified || len(tr.HeadHash) != 64) {
			t.Errorf("VerifyExport accepted %q with trailer %+v", b, tr)
		}
	})
}
