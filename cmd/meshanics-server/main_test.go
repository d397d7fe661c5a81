package main

import (
	"bytes"
	"context"
	"regexp"
	"strings"
	"testing"
)

func TestInitPrintsOnlyTheKeyAndRefusesTwice(t *testing.T) {
	dir := t.TempDir()
	var out, errOut bytes.Buffer
	if code := run(context.Background(), []string{"init", "-data-dir", dir, "-public-host", "127.0.0.1"}, &out, &errOut); code != 0 {
		t.Fatalf("init = %d, stderr:\n%s", code, errOut.String())
	}
	if !regexp.MustCompile(`^msk_[a-z2-7]+\n$`).MatchString(out.String()) {
		t.Errorf("init stdout = %q, want exactly one line msk_…", out.String())
	}
	if strings.Contains(errOut.String(), strings.TrimSpace(out.String())) {
		t.Error("the admin key also reached stderr (logs)")
	}
	out.Reset()
	errOut.Reset()
	if code := run(context.Background(), []string{"init", "-data-dir", dir}, &out, &errOut); code != 1 {
		t.Errorf("second init = %d, want 1", code)
	}
	if out.Len() != 0 || !strings.Contains(errOut.String(), "already initialised") {
		t.Errorf("second init stdout %q, stderr %q", out.String(), errOut.String())
	}
}

func TestUsageErrors(t *testing.T) {
	for _, args := range [][]string{{"-bogus"}, {"init", "-web-addr", ":1"}, {"-public-host", "a b"}} {
		var out, errOut bytes.Buffer
		if code := run(context.Background(), args, &out, &errOut); code != 2 {
			t.Errorf("run(%q) = %d, want 2", args, code)
		}
	}
	var out bytes.Buffer
	if code := run(context.Background(), []string{"-version"}, &out, &out); code != 0 || !strings.HasPrefix(out.String(), "meshanics-server ") {
		t.Errorf("-version = %d %q", code, out.String())
	}
}
