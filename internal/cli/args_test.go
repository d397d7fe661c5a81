package cli

import (
	"flag"
	"io"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestParseArgsFlagsAnywhere(t *testing.T) {
	tests := []struct {
		args      []string
		wantPos   []string
		wantSince string
		wantWait  bool
		wantTags  string
	}{
		{[]string{"dev1"}, []string{"dev1"}, "1h", false, ""},
		{[]string{"-since", "2h", "dev1"}, []string{"dev1"}, "2h", false, ""},
		{[]string{"dev1", "-since", "2h", "-wait"}, []string{"dev1"}, "2h", true, ""},
		{[]string{"dev1", "-wait", "-since=5m"}, []string{"dev1"}, "5m", true, ""},
		{[]string{"-tag", "a=b", "dev1", "--tag", "c=d"}, []string{"dev1"}, "1h", false, "a=b,c=d"},
		{[]string{"-wait", "--", "-odd-name"}, []string{"-odd-name"}, "1h", true, ""},
		{[]string{"-wait=false", "x", "y"}, []string{"x", "y"}, "1h", false, ""},
	}
	for _, tt := range tests {
		fs := flag.NewFlagSet("t", flag.ContinueOnError)
		fs.SetOutput(io.Discard)
		since := fs.String("since", "1h", "")
		wait := fs.Bool("wait", false, "")
		tags := tagsFlag{}
		fs.Var(tags, "tag", "")
		pos, err := parseArgs(fs, tt.args, 0, -1)
		if err != nil {
			t.Errorf("parseArgs(%q) error = %v", tt.args, err)
			continue
		}
		if diff := cmp.Diff(tt.wantPos, pos); diff != "" {
			t.Errorf("parseArgs(%q) positional mismatch (-want +got):\n%s", tt.args, diff)
		}
		if *since != tt.wantSince || *wait != tt.wantWait || tags.String() != tt.wantTags {
			t.Errorf("parseArgs(%q) = since %q wait %v tags %q, want %q %v %q", tt.args, *since, *wait, tags.String(), tt.wantSince, tt.wantWait, tt.wantTags)
		}
	}
}

func TestParseArgsErrorsAreUsageErrors(t *testing.T) {
	for _, args := range [][]string{
		{"-nope", "dev1"},       // unknown flag
		{"dev1", "dev2"},        // too many positionals
		{},                      // too few
		{"dev1", "-tag", "bad"}, // bad tag
		{"dev1", "-since"},      // missing value
	} {
		fs := flag.NewFlagSet("t", flag.ContinueOnError)
		fs.SetOutput(io.Discard)
		fs.String("since", "1h", "")
		fs.Var(tagsFlag{}, "tag", "")
		_, err := parseArgs(fs, args, 1, 1)
		var ue *usageError
		if !asUsage(err, &ue) {
			t.Errorf("parseArgs(%q) error = %v, want a usage error", args, err)
		}
	}
}

func asUsage(err error, ue **usageError) bool {
	u, ok := err.(*usageError)
	*ue = u
	return ok
}
