package store

import "testing"

func TestRebindDollar(t *testing.T) {
	tests := map[string]string{
		"SELECT 1":                         "SELECT 1",
		"a = ? AND b = ?":                  "a = $1 AND b = $2",
		"x = '?' AND y = ?":                "x = '?' AND y = $1",
		"x = 'it''s ?' AND y IN (?, ?, ?)": "x = 'it''s ?' AND y IN ($1, $2, $3)",
	}
	for in, want := range tests {
		if got := rebindDollar(in); got != want {
			t.Errorf("rebindDollar(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestSplitStatements(t *testing.T) {
	src := "-- header\nCREATE TABLE a (x BIGINT);\n\n-- only a comment;\nCREATE INDEX i\n  ON a (x);\n"
	got := splitStatements(src)
	if len(got) != 2 {
		t.Fatalf("splitStatements = %q, want 2 statements", got)
	}
}
