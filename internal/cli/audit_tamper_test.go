package cli

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/meshanics/meshanics/internal/server/store"
)

// TestAuditExportAndVerifyDetectAChangedRow edits one stored audit row
// directly in the database (SPEC §10: changing any stored row is detected):
// the export's trailer says "verified":false and `meshctl audit verify`
// fails naming the first broken event, though a later row was changed too.
func TestAuditExportAndVerifyDetectAChangedRow(t *testing.T) {
	s := newServer(t)
	for _, d := range []string{"dev1", "dev2", "dev3"} {
		s.enroll(d)
	}
	file := filepath.Join(t.TempDir(), "audit.jsonl")
	if r := s.as(s.admin, "audit", "export", "-out", file); r.code != 0 {
		t.Fatalf("audit export = %d %q", r.code, r.stderr)
	}
	if r := runCLI(t, nil, "", "audit", "verify", file); r.code != 0 {
		t.Fatalf("audit verify of an untouched log = %d %q", r.code, r.stderr)
	}
	b, _ := os.ReadFile(file)
	if n := strings.Count(string(b), "\n"); n < 5 {
		t.Fatalf("export has %d lines, want at least 4 events and the trailer", n)
	}

	ctx := context.Background()
	err := s.db.Tx(ctx, func(tx *store.Tx) error {
		for _, q := range []string{
			"UPDATE audit_events SET subject = 'someone-else' WHERE seq = 3",
			"UPDATE audit_events SET actor = 'system' WHERE seq = 4",
		} {
			if _, err := tx.Exec(ctx, q); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if r := s.as(s.admin, "audit", "export", "-out", file); r.code != 0 {
		t.Fatalf("audit export after the edit = %d %q", r.code, r.stderr)
	}
	b, _ = os.ReadFile(file)
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if trailer := lines[len(lines)-1]; !strings.Contains(trailer, `"verified":false`) {
		t.Errorf("trailer after a changed row = %s, want verified false", trailer)
	}
	r := runCLI(t, nil, "", "audit", "verify", file)
	if r.code != 1 || !strings.Contains(r.stderr, "event seq 3:") || strings.Contains(r.stderr, "seq 4") {
		t.Errorf("audit verify after a changed row = %d %q %q; want exit 1 naming event seq 3 (the first broken one)", r.code, r.stdout, r.stderr)
	}
}
