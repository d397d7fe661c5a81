package healthprobe

import (
	"encoding/json"
	"strings"
	"testing"
)

func TestValidate(t *testing.T) {
	for _, tc := range []struct {
		name string
		spec Spec
		ok   bool
	}{
		{"http localhost", Spec{Type: "http", Target: "http://localhost:8080/healthz"}, true},
		{"http 127.0.0.2", Spec{Type: "http", Target: "http://127.0.0.2/"}, true},
		{"http ipv6 loopback", Spec{Type: "http", Target: "http://[::1]:9/"}, true},
		{"http remote", Spec{Type: "http", Target: "http://10.0.0.1/"}, false},
		{"http name", Spec{Type: "http", Target: "http://localhost.evil.example/"}, false},
		{"http credentials", Spec{Type: "http", Target: "http://u:p@localhost/"}, false},
		{"http scheme", Spec{Type: "http", Target: "file:///etc/passwd"}, false},
		{"file abs", Spec{Type: "file", Target: "/var/lib/app/ready"}, true},
		{"file relative", Spec{Type: "file", Target: "ready"}, false},
		{"file unclean", Spec{Type: "file", Target: "/var/../etc/shadow"}, false},
		{"exec abs", Spec{Type: "exec", Target: "/usr/bin/true", Args: []string{"x"}}, true},
		{"exec relative", Spec{Type: "exec", Target: "true"}, false},
		{"unknown type", Spec{Type: "tcp", Target: "x"}, false},
		{"timeout too big", Spec{Type: "file", Target: "/a", TimeoutSeconds: 301}, false},
		{"attempts too many", Spec{Type: "file", Target: "/a", Attempts: 11}, false},
		{"delay max", Spec{Type: "file", Target: "/a", InitialDelaySeconds: 600}, true},
		{"delay negative", Spec{Type: "file", Target: "/a", InitialDelaySeconds: -1}, false},
		{"interval too big", Spec{Type: "file", Target: "/a", IntervalSeconds: 301}, false},
		{"empty target", Spec{Type: "file"}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := tc.spec.Validate(); (err == nil) != tc.ok {
				t.Errorf("Validate(%+v) = %v, want ok=%v", tc.spec, err, tc.ok)
			}
		})
	}
}

func TestWithDefaults(t *testing.T) {
	got := Spec{Type: "file", Target: "/a"}.WithDefaults()
	if got.TimeoutSeconds != 10 || got.Attempts != 3 || got.IntervalSeconds != 5 || got.InitialDelaySeconds != 0 {
		t.Errorf("WithDefaults() = %+v, want timeout 10, attempts 3, interval 5, delay 0", got)
	}
}

func FuzzSpec(f *testing.F) {
	f.Add([]byte(`{"type":"http","target":"http://localhost:8080/healthz"}`))
	f.Add([]byte(`{"type":"exec","target":"/bin/true","args":["a"],"attempts":10}`))
	f.Add([]byte(`{"type":"file","target":"/x","timeout_seconds":300}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		var s Spec
		if json.Unmarshal(data, &s) != nil {
			return
		}
		if s.Validate() != nil {
			return
		}
		d := s.WithDefaults()
		if d.TimeoutSeconds < 1 || d.TimeoutSeconds > 300 || d.Attempts < 1 || d.Attempts > 10 {
			t.Fatalf("accepted out-of-bounds spec %+v", d)
		}
		if s.Type == TypeHTTP && !strings.HasPrefix(s.Target, "http") {
			t.Fatalf("accepted http probe with target %q", s.Target)
		}
	})
}
