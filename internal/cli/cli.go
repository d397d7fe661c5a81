// Package cli is meshctl: the operator's command line over the REST API of
// SPEC §8/§9. Main parses the global flags, picks a command group and runs
// it; each group lives in its own file and is listed once in commands.go.
// Only cmd/meshctl imports this package.
package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"
)

// Exit codes (SPEC §9).
const (
	exitOK    = 0
	exitAPI   = 1
	exitUsage = 2
)

// Main runs meshctl with args (without the program name) and returns the
// process exit code.
func Main(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	return run(ctx, args, os.Stdin, stdout, stderr, os.LookupEnv)
}

// app is what every command sees: the global options, the output streams
// and the REST client (built on first use, so offline commands never need a
// server).
type app struct {
	server string
	caFile string
	caPin  string
	apiKey string
	output string

	stdin          io.Reader
	stdout, stderr io.Writer
	client         *client
	pollEvery      time.Duration
}

// jsonOut reports -o json.
func (a *app) jsonOut() bool { return a.output == "json" }

// pollEvery is how often waiting commands poll the server.
var pollEvery = 2 * time.Second

func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer, lookupEnv func(string) (string, bool)) int {
	env := func(k string) string { v, _ := lookupEnv(k); return v }
	a := &app{stdin: stdin, stdout: stdout, stderr: stderr, pollEvery: pollEvery}
	fs := flag.NewFlagSet("meshctl", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&a.server, "server", env("MESHCTL_SERVER"), "control plane `URL` https://host:8443 (env MESHCTL_SERVER)")
	fs.StringVar(&a.caFile, "ca", env("MESHCTL_CA"), "fleet CA bundle `FILE` to verify the server with (env MESHCTL_CA)")
	fs.StringVar(&a.caPin, "ca-pin", env("MESHCTL_CA_PIN"), "pin the fleet CA by fingerprint `sha256:HEX` instead of -ca (env MESHCTL_CA_PIN)")
	// The key's default is filled in after parsing, not here: a flag's
	// default is printed by -h, and a secret must not be.
	fs.StringVar(&a.apiKey, "api-key", "", "operator API `key` msk_… (env MESHCTL_API_KEY)")
	fs.StringVar(&a.output, "o", "table", "output `format`: table or json (json prints the REST response body unchanged)")
	fs.Usage = func() { printUsage(stderr, fs) }
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return exitOK
		}
		return exitUsage
	}
	if a.apiKey == "" {
		a.apiKey = env("MESHCTL_API_KEY")
	}
	if a.output != "table" && a.output != "json" {
		fmt.Fprintf(stderr, "meshctl: -o %q: want table or json\n", a.output)
		return exitUsage
	}
	rest := fs.Args()
	if len(rest) == 0 {
		printUsage(stderr, fs)
		return exitUsage
	}
	if rest[0] == "help" {
		if len(rest) > 1 {
			if g := findGroup(rest[1]); g != nil {
				g.usage(stdout)
				return exitOK
			}
		}
		fs.SetOutput(stdout)
		printUsage(stdout, fs)
		return exitOK
	}
	g := findGroup(rest[0])
	if g == nil {
		fmt.Fprintf(stderr, "meshctl: unknown command %q (run 'meshctl help' for the list)\n", rest[0])
		return exitUsage
	}
	return exitCode(stderr, g.run(ctx, a, rest[1:]))
}

// exitCode prints err (if any) and maps it to an exit code.
func exitCode(stderr io.Writer, err error) int {
	var ue *usageError
	switch {
	case err == nil:
		return exitOK
	case errors.Is(err, flag.ErrHelp):
		return exitOK
	case errors.As(err, &ue):
		if ue.msg != "" {
			fmt.Fprintf(stderr, "meshctl: %s\n", ue.msg)
		}
		return exitUsage
	}
	fmt.Fprintf(stderr, "meshctl: %v\n", err)
	return exitAPI
}

// usageError is a mistake on the command line (exit 2).
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error {
	return &usageError{msg: fmt.Sprintf(format, args...)}
}

func printUsage(w io.Writer, fs *flag.FlagSet) {
	fmt.Fprintf(w, "usage: meshctl [global flags] COMMAND [SUBCOMMAND] [flags] [args]\n\nCommands:\n")
	for _, g := range groups() {
		fmt.Fprintf(w, "  %-12s %s\n", g.name, g.summary)
	}
	fmt.Fprintf(w, "\nGlobal flags (before the command):\n")
	fs.SetOutput(w)
	fs.PrintDefaults()
	fmt.Fprintf(w, "\nRun 'meshctl help COMMAND' for a command's subcommands.\n")
}

// group is one top-level command with its subcommands.
type group struct {
	name    string
	summary string
	cmds    []*command
}

// command is one subcommand. run gets the arguments after the subcommand
// name; it declares its flags on fs (already named and wired to stderr) and
// calls parseArgs.
type command struct {
	name    string
	args    string // positional arguments for the usage line, e.g. "NAME"
	summary string
	run     func(ctx context.Context, a *app, fs *flag.FlagSet, args []string) error
}

func (g *group) usage(w io.Writer) {
	fmt.Fprintf(w, "usage: meshctl %s SUBCOMMAND [flags] [args]\n\n%s\n\nSubcommands:\n", g.name, g.summary)
	for _, c := range g.cmds {
		fmt.Fprintf(w, "  %-32s %s\n", strings.TrimSpace(c.name+" "+c.args), c.summary)
	}
	fmt.Fprintf(w, "\nRun 'meshctl %s SUBCOMMAND -h' for its flags.\n", g.name)
}

func (g *group) run(ctx context.Context, a *app, args []string) error {
	if len(g.cmds) == 1 && g.cmds[0].name == "" {
		return g.runCmd(ctx, a, g.cmds[0], args) // a group that is a single command
	}
	if len(args) == 0 {
		g.usage(a.stderr)
		return &usageError{}
	}
	if args[0] == "-h" || args[0] == "-help" || args[0] == "--help" || args[0] == "help" {
		g.usage(a.stdout)
		return nil
	}
	for _, c := range g.cmds {
		if c.name == args[0] {
			return g.runCmd(ctx, a, c, args[1:])
		}
	}
	return usagef("%s: unknown subcommand %q (run 'meshctl help %s')", g.name, args[0], g.name)
}

func findGroup(name string) *group {
	for _, g := range groups() {
		if g.name == name {
			return g
		}
	}
	return nil
}

func (g *group) runCmd(ctx context.Context, a *app, c *command, args []string) error {
	name := strings.TrimSpace(g.name + " " + c.name)
	fs := flag.NewFlagSet("meshctl "+name, flag.ContinueOnError)
	fs.SetOutput(a.stderr)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "usage: meshctl %s [flags] %s\n\n%s\n\nFlags (before or after the arguments):\n", name, c.args, c.summary)
		fs.PrintDefaults()
	}
	return c.run(ctx, a, fs, args)
}
