package names

import (
	"strings"
	"testing"
)

func TestValidateDevice(t *testing.T) {
	for _, tc := range []struct {
		in string
		ok bool
	}{
		{"a", true},
		{"jetson-01", true},
		{"0", true},
		{strings.Repeat("a", 63), true},
		{strings.Repeat("a", 64), false},
		{"", false},
		{"-a", false},
		{"a-", false},
		{"Jetson", false},
		{"a_b", false},
		{"a.b", false},
		{"../etc", false},
		{"a\x00", false},
	} {
		if err := ValidateDevice(tc.in); (err == nil) != tc.ok {
			t.Errorf("ValidateDevice(%q) = %v, want ok=%v", tc.in, err, tc.ok)
		}
	}
}

func TestParseRef(t *testing.T) {
	for _, tc := range []struct {
		in, name, version string
		ok                bool
	}{
		{"detector@1.0.0", "detector", "1.0.0", true},
		{"a.b_c-d@V1+build.7", "a.b_c-d", "V1+build.7", true},
		{"detector", "", "", false},
		{"Detector@1", "", "", false},
		{"detector@", "", "", false},
		{"detector@-1", "", "", false},
		{"detector@1@2", "", "", false},
		{"@1", "", "", false},
	} {
		n, v, err := ParseRef(tc.in)
		if (err == nil) != tc.ok || n != tc.name || v != tc.version {
			t.Errorf("ParseRef(%q) = %q, %q, %v; want %q, %q, ok=%v", tc.in, n, v, err, tc.name, tc.version, tc.ok)
		}
	}
}

func TestDefaultDevice(t *testing.T) {
	if got := DefaultDevice(" Edge-Box-7.factory.example \n"); got != "edge-box-7" {
		t.Errorf("DefaultDevice = %q, want edge-box-7", got)
	}
}

func FuzzValidate(f *testing.F) {
	for _, s := range []string{"a", "jetson-01", "detector@1.0.0", "", "-", strings.Repeat("z", 70), "a@b@c"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if ValidateDevice(s) == nil {
			if len(s) > 63 || strings.ContainsAny(s, "/.\x00_ ") || s != strings.ToLower(s) {
				t.Fatalf("ValidateDevice accepted %q", s)
			}
		}
		if n, v, err := ParseRef(s); err == nil {
			if n+"@"+v != s || strings.Contains(v, "@") || strings.Contains(n, "/") {
				t.Fatalf("ParseRef(%q) = %q, %q", s, n, v)
			}
		}
		if err := ValidateDevice(s); err != nil && len(err.Error()) > 400 {
			t.Fatalf("error message unbounded: %d bytes", len(err.Error()))
		}
	})
}
