package main

import (
	"bytes"
	"context"
	"path/filepath"
	"strings"
	"testing"

	"github.com/meshanics/meshanics/internal/buildinfo"
)

func noEnv(string) string { return "" }

func TestVersionExits0(t *testing.T) {
	var out, errb bytes.Buffer
	if code := run(context.Background(), []string{"-version"}, &out, &errb, noEnv); code != 0 {
		t.Fatalf("run(-version) = %d, want 0 (stderr %q)", code, errb.String())
	}
	if got := strings.TrimSpace(out.String()); got != buildinfo.String("meshanics-agent") {
		t.Errorf("run(-version) printed %q", got)
	}
}

func TestConfigErrorsExit78NamingTheFlag(t *testing.T) {
	dir := t.TempDir()
	creds := []string{"-cert", filepath.Join(dir, "device.crt"), "-key", filepath.Join(dir, "device.key"), "-ca", filepath.Join(dir, "ca.pem")}
	tests := []struct {
		name string
		args []string
		flag string
	}{
		{"no server", creds, "-server"},
		{"artifact server without root", append([]string{"-server", "h:9443", "-artifact-server", "https://h:9444"}, creds...), "-tuf-root"},
		{"unknown flag", []string{"-insecure"}, "-insecure"},
		{"no credentials on disk", append([]string{"-server", "127.0.0.1:9443", "-data-dir", dir}, creds...), "-key"},
		{"enroll without token", []string{"enroll", "-url", "https://h:8443", "-ca-pin", "sha256:00"}, "-token"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out, errb bytes.Buffer
			code := run(context.Background(), tt.args, &out, &errb, noEnv)
			if code != 78 {
				t.Errorf("run(%q) = %d, want 78; stderr %q", tt.args, code, errb.String())
			}
			if !strings.Contains(errb.String(), tt.flag) {
				t.Errorf("run(%q) stderr = %q, want it to name %s", tt.args, errb.String(), tt.flag)
			}
		})
	}
}

func TestHelpListsFlagsAndExits0(t *testing.T) {
	for _, args := range [][]string{{"-h"}, {"enroll", "-h"}} {
		var out, errb bytes.Buffer
		if code := run(context.Background(), args, &out, &errb, noEnv); code != 0 {
			t.Errorf("run(%q) = %d, want 0", args, code)
		}
		if !strings.Contains(out.String(), "-tag") || !strings.Contains(out.String(), "-allow-config-dest") {
			t.Errorf("run(%q) printed %q, want the flag list", args, out.String())
		}
	}
}
