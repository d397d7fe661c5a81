package cli

import (
	"errors"
	"flag"
	"fmt"
	"sort"
	"strings"
)

// parseArgs parses fs from args where flags may come before, between or
// after the positional arguments (flag.FlagSet stops at the first
// positional). "--" ends the flags. It returns the positional arguments and
// checks their count is within [minPos, maxPos] (maxPos < 0: unbounded).
func parseArgs(fs *flag.FlagSet, args []string, minPos, maxPos int) ([]string, error) {
	var flags, pos []string
	for i := 0; i < len(args); i++ {
		arg := args[i]
		if arg == "--" {
			pos = append(pos, args[i+1:]...)
			break
		}
		if len(arg) < 2 || arg[0] != '-' {
			pos = append(pos, arg)
			continue
		}
		flags = append(flags, arg)
		name := strings.TrimLeft(arg, "-")
		if strings.Contains(name, "=") {
			continue
		}
		f := fs.Lookup(name)
		if f == nil || isBoolFlag(f) {
			continue // unknown flags are reported by fs.Parse
		}
		if i+1 < len(args) {
			flags = append(flags, args[i+1])
			i++
		}
	}
	if err := fs.Parse(flags); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil, err
		}
		return nil, &usageError{} // the flag package already printed why
	}
	pos = append(pos, fs.Args()...)
	if len(pos) < minPos || (maxPos >= 0 && len(pos) > maxPos) {
		want := fmt.Sprintf("%d", minPos)
		switch {
		case maxPos < 0:
			want = fmt.Sprintf("at least %d", minPos)
		case maxPos != minPos:
			want = fmt.Sprintf("%d to %d", minPos, maxPos)
		}
		return nil, usagef("%s: want %s argument(s), got %d (run '%s -h')", fs.Name(), want, len(pos), fs.Name())
	}
	return pos, nil
}

func isBoolFlag(f *flag.Flag) bool {
	b, ok := f.Value.(interface{ IsBoolFlag() bool })
	return ok && b.IsBoolFlag()
}

// tagsFlag collects repeatable -tag key=value flags.
type tagsFlag map[string]string

func (t tagsFlag) String() string {
	keys := make([]string, 0, len(t))
	for k := range t {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = k + "=" + t[k]
	}
	return strings.Join(parts, ",")
}

func (t tagsFlag) Set(s string) error {
	k, v, ok := strings.Cut(s, "=")
	if !ok || k == "" {
		return fmt.Errorf("want key=value, got %q", s)
	}
	t[k] = v
	return nil
}
