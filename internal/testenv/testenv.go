// Package testenv lets tests that need something a machine may lack (root,
// docker, systemd, PostgreSQL) skip with a reason, or fail when
// MESHANICS_TEST_REQUIRE_ALL=1 (CI sets it) so nothing is silently skipped.
package testenv

import (
	"os"
	"testing"
)

// RequireAll reports whether CI demands every dependency.
func RequireAll() bool { return os.Getenv("MESHANICS_TEST_REQUIRE_ALL") == "1" }

// Need skips t (or fails it under RequireAll) when ok is false.
func Need(t testing.TB, ok bool, what string) {
	t.Helper()
	if ok {
		return
	}
	if RequireAll() {
		t.Fatalf("%s is required (MESHANICS_TEST_REQUIRE_ALL=1) but not available", what)
	}
	t.Skipf("skipping: %s not available", what)
}

// PostgresDSN returns the DSN of the test PostgreSQL server from
// MESHANICS_TEST_POSTGRES, skipping or failing t when it is unset.
func PostgresDSN(t testing.TB) string {
	t.Helper()
	dsn := os.Getenv("MESHANICS_TEST_POSTGRES")
	Need(t, dsn != "", "PostgreSQL (set MESHANICS_TEST_POSTGRES)")
	return dsn
}
