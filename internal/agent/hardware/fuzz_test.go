package hardware

import (
	"os"
	"testing"
	"unicode/utf8"
)

func seed(f *testing.F, paths ...string) {
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
}

func FuzzParseCPUInfo(f *testing.F) {
	seed(f, "testdata/x86-server/proc/cpuinfo", "testdata/rpi-cm4/proc/cpuinfo", "testdata/jetson-orin/proc/cpuinfo")
	f.Fuzz(func(t *testing.T, b []byte) {
		ci := ParseCPUInfo(b)
		if len(ci.ModelName) > 256 || len(ci.Hardware) > 256 || !utf8.ValidString(ci.ModelName) {
			t.Errorf("ParseCPUInfo returned an unbounded or invalid string: %+v", ci)
		}
	})
}

func FuzzParseMemTotal(f *testing.F) {
	seed(f, "testdata/x86-server/proc/meminfo", "testdata/rpi-cm4/proc/meminfo")
	f.Add([]byte("MemTotal: 18446744073709551615 kB\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		if n := ParseMemTotal(b); n > 1<<60 {
			t.Errorf("ParseMemTotal = %d, overflowed", n)
		}
	})
}

func FuzzParseOSRelease(f *testing.F) {
	seed(f, "testdata/x86-server/etc/os-release", "testdata/jetson-orin/usr/lib/os-release")
	f.Fuzz(func(t *testing.T, b []byte) {
		for k, v := range ParseOSRelease(b) {
			if len(v) > 256 || !utf8.ValidString(v) || k == "" {
				t.Errorf("ParseOSRelease: bad entry %q=%q", k, v)
			}
		}
	})
}

func FuzzParseCompatible(f *testing.F) {
	seed(f, "testdata/rpi-cm4/proc/device-tree/compatible", "testdata/jetson-orin/proc/device-tree/compatible")
	f.Fuzz(func(t *testing.T, b []byte) {
		if got := ParseCompatible(b); len(got) > 32 {
			t.Errorf("ParseCompatible returned %d entries", len(got))
		}
	})
}

func FuzzParseCPURange(f *testing.F) {
	for _, s := range []string{"0-3", "0-3,6,8-9", "0", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if n, ok := ParseCPURange(s); ok && (n == 0 || n > 1<<16) {
			t.Errorf("ParseCPURange(%q) = %d", s, n)
		}
	})
}
