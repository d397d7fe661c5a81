package config

import (
	"errors"
	"log/slog"
	"testing"

	"github.com/google/go-cmp/cmp"
)

var base = []string{"-server", "cp.example:9443", "-cert", "/etc/meshanics/device.crt", "-key", "/etc/meshanics/device.key", "-ca", "/etc/meshanics/ca.pem"}

func env(m map[string]string) func(string) string {
	return func(k string) string { return m[k] }
}

func TestParseErrorsNameTheFlag(t *testing.T) {
	tests := []struct {
		name     string
		args     []string
		env      map[string]string
		wantFlag string
	}{
		{"missing server", []string{"-cert", "/c", "-key", "/k", "-ca", "/a"}, nil, "-server"},
		{"server without port", append(append([]string{}, base...), "-server", "cp.example"), nil, "-server"},
		{"server bad port", append(append([]string{}, base...), "-server", "cp.example:99999"), nil, "-server"},
		{"missing cert", []string{"-server", "h:1", "-key", "/k", "-ca", "/a"}, nil, "-cert"},
		{"missing key", []string{"-server", "h:1", "-cert", "/c", "-ca", "/a"}, nil, "-key"},
		{"missing ca", []string{"-server", "h:1", "-cert", "/c", "-key", "/k"}, nil, "-ca"},
		{"artifact server alone", append(append([]string{}, base...), "-artifact-server", "https://h:9444"), nil, "-tuf-root"},
		{"tuf root alone", append(append([]string{}, base...), "-tuf-root", "/etc/meshanics/root.json"), nil, "-artifact-server"},
		{"tuf root alone from env", base, map[string]string{"MESHANICS_TUF_ROOT": "/r.json"}, "-artifact-server"},
		{"artifact server http", append(append([]string{}, base...), "-artifact-server", "http://h:9444", "-tuf-root", "/r"), nil, "-artifact-server"},
		{"bad runtime", append(append([]string{}, base...), "-container-runtime", "rkt"), nil, "-container-runtime"},
		{"relative runtime path", append(append([]string{}, base...), "-container-runtime", "bin/podman"), nil, "-container-runtime"},
		{"tag without =", append(append([]string{}, base...), "-tag", "site"), nil, "-tag"},
		{"tag bad key", append(append([]string{}, base...), "-tag", "-x=1"), nil, "-tag"},
		{"tag twice", append(append([]string{}, base...), "-tag", "a=1", "-tag", "a=2"), nil, "-tag"},
		{"tag from env bad", base, map[string]string{"MESHANICS_TAGS": "site=a,broken"}, "-tag"},
		{"exec probe relative", append(append([]string{}, base...), "-allow-exec-probe", "bin/check"), nil, "-allow-exec-probe"},
		{"exec probe unclean", append(append([]string{}, base...), "-allow-exec-probe", "/usr/../bin/check"), nil, "-allow-exec-probe"},
		{"config dest root", append(append([]string{}, base...), "-allow-config-dest", "/"), nil, "-allow-config-dest"},
		{"config dest env relative", base, map[string]string{"MESHANICS_ALLOW_CONFIG_DEST": "/etc/app,etc/x"}, "-allow-config-dest"},
		{"reload unit bad", append(append([]string{}, base...), "-allow-reload-unit", "../evil"), nil, "-allow-reload-unit"},
		{"reload exec relative", append(append([]string{}, base...), "-allow-reload-exec", "nginx"), nil, "-allow-reload-exec"},
		{"log level", append(append([]string{}, base...), "-log-level", "loud"), nil, "-log-level"},
		{"unknown flag", append(append([]string{}, base...), "-insecure"), nil, "-insecure"},
		{"empty data dir", append(append([]string{}, base...), "-data-dir", ""), nil, "-data-dir"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse(tt.args, env(tt.env))
			var ce *Error
			if !errors.As(err, &ce) {
				t.Fatalf("Parse(%q) error = %v, want *config.Error", tt.args, err)
			}
			if ce.Flag != tt.wantFlag {
				t.Errorf("Parse(%q) error flag = %q (%v), want %q", tt.args, ce.Flag, err, tt.wantFlag)
			}
		})
	}
}

func TestParseFlagWinsOverEnv(t *testing.T) {
	e := env(map[string]string{
		"MESHANICS_SERVER":            "env.example:9443",
		"MESHANICS_CERT":              "/env/device.crt",
		"MESHANICS_KEY":               "/env/device.key",
		"MESHANICS_CA":                "/env/ca.pem",
		"MESHANICS_TAGS":              "site=env, rack=r1",
		"MESHANICS_ALLOW_EXEC_PROBE":  "/usr/bin/true,/usr/bin/false",
		"MESHANICS_ALLOW_RELOAD_UNIT": "nginx.service",
		"MESHANICS_LOG_LEVEL":         "debug",
		"MESHANICS_ARTIFACT_SERVER":   "https://cp.example:9444",
		"MESHANICS_TUF_ROOT":          "/env/root.json",
	})
	c, err := Parse([]string{"-server", "flag.example:1", "-tag", "site=flag", "-allow-exec-probe", "/opt/check"}, e)
	if err != nil {
		t.Fatal(err)
	}
	want := &Config{
		Server: "flag.example:1", CertFile: "/env/device.crt", KeyFile: "/env/device.key", CAFile: "/env/ca.pem",
		ArtifactServer: "https://cp.example:9444", TUFRoot: "/env/root.json",
		DataDir: DefaultDataDir, ContainerRuntime: "auto",
		Tags:     map[string]string{"site": "flag"},
		Allow:    Allowlists{ExecProbe: []string{"/opt/check"}, ReloadUnit: []string{"nginx.service"}},
		LogLevel: slog.LevelDebug,
	}
	if diff := cmp.Diff(want, c); diff != "" {
		t.Errorf("Parse() mismatch (-want +got):\n%s", diff)
	}
	if !c.OTAConfigured() {
		t.Error("OTAConfigured() = false, want true")
	}
}

func TestParseEnvOnly(t *testing.T) {
	c, err := Parse(nil, env(map[string]string{
		"MESHANICS_SERVER": "h:9443", "MESHANICS_CERT": "/c", "MESHANICS_KEY": "/k", "MESHANICS_CA": "/a",
		"MESHANICS_TAGS": "a=1,b=2", "MESHANICS_CONTAINER_RUNTIME": "/usr/local/bin/podman",
	}))
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(map[string]string{"a": "1", "b": "2"}, c.Tags); diff != "" {
		t.Errorf("tags (-want +got):\n%s", diff)
	}
	if c.OTAConfigured() {
		t.Error("OTAConfigured() = true without artifact server")
	}
	if c.ContainerRuntime != "/usr/local/bin/podman" {
		t.Errorf("ContainerRuntime = %q", c.ContainerRuntime)
	}
}

func TestParseVersionNeedsNothingElse(t *testing.T) {
	c, err := Parse([]string{"-version"}, env(nil))
	if err != nil || !c.ShowVersion {
		t.Fatalf("Parse(-version) = %+v, %v; want ShowVersion", c, err)
	}
}

func TestNoFlagSkipsVerification(t *testing.T) {
	for _, f := range []string{"-insecure", "-skip-verify", "-insecure-skip-verify", "-no-verify", "-skip-tuf"} {
		if _, err := Parse(append(append([]string{}, base...), f), env(nil)); !IsError(err) {
			t.Errorf("Parse(%s) error = %v, want a configuration error", f, err)
		}
	}
}

func TestParseEnrollErrorsNameTheFlag(t *testing.T) {
	pin := "sha256:" + "ab01ab01ab01ab01ab01ab01ab01ab01ab01ab01ab01ab01ab01ab01ab01ab01"
	ok := []string{"-url", "https://cp.example:8443", "-token", "mst_ABC", "-ca-pin", pin}
	tests := []struct {
		name     string
		args     []string
		wantFlag string
	}{
		{"no url", []string{"-token", "mst_x", "-ca-pin", pin}, "-url"},
		{"http url", []string{"-url", "http://h:8443", "-token", "mst_x", "-ca-pin", pin}, "-url"},
		{"url with path", []string{"-url", "https://h:8443/x", "-token", "mst_x", "-ca-pin", pin}, "-url"},
		{"bad token", []string{"-url", "https://h:8443", "-token", "abc", "-ca-pin", pin}, "-token"},
		{"no pin", []string{"-url", "https://h:8443", "-token", "mst_x"}, "-ca-pin"},
		{"short pin", []string{"-url", "https://h:8443", "-token", "mst_x", "-ca-pin", "sha256:abcd"}, "-ca-pin"},
		{"bad name", append(append([]string{}, ok...), "-name", "Bad_Name"), "-name"},
		{"bad tag", append(append([]string{}, ok...), "-tag", "x"), "-tag"},
		{"relative config dir", append(append([]string{}, ok...), "-config-dir", "etc"), "-config-dir"},
		{"config dir with space", append(append([]string{}, ok...), "-config-dir", "/etc/a b"), "-config-dir"},
		{"bad allow", append(append([]string{}, ok...), "-allow-reload-exec", "x"), "-allow-reload-exec"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseEnroll(tt.args, "host")
			var ce *Error
			if !errors.As(err, &ce) || ce.Flag != tt.wantFlag {
				t.Errorf("ParseEnroll(%q) error = %v, want one naming %s", tt.args, err, tt.wantFlag)
			}
		})
	}
	c, err := ParseEnroll(append(append([]string{}, ok...), "-tag", "site=lab"), "Edge-01.lan")
	if err != nil {
		t.Fatal(err)
	}
	if c.Name != "edge-01" || c.Tags["site"] != "lab" || c.CAPin[0] != 0xab {
		t.Errorf("ParseEnroll() = %+v", c)
	}
}
