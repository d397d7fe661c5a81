// Package docs holds the user documentation. Its tests keep the documents
// honest: the API reference lists exactly the routes the server registers
// (with their permissions), and every meshctl, meshanics-server,
// meshanics-agent and install.sh command written in README.md and the
// guides exists with the flags it is written with.
package docs

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/meshanics/meshanics/internal/agent/config"
	"github.com/meshanics/meshanics/internal/cli"
	"github.com/meshanics/meshanics/internal/server"
)

// userDocs are the documents whose commands must exist.
var userDocs = []string{"../README.md", "operator-guide.md", "security-model.md", "agent-reference.md", "api-reference.md"}

func read(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

var (
	handleRE = regexp.MustCompile(`a\.(handle|handleAuthed)\(mux,\s*"([A-Z]+ /[^"]*)"(?:,\s*(\w+))?`)
	muxRE    = regexp.MustCompile(`mux\.Handle(?:Func)?\("([A-Z]+ /[^"]*)"`)
	permRE   = regexp.MustCompile(`(\w+)\s+Permission\s*=\s*"([^"]+)"`)
	rowRE    = regexp.MustCompile("(?m)^\\| `([^`]+)` \\| ([^|]+) \\|")
	webRE    = regexp.MustCompile(`mux\.Handle(?:Func)?\("(?:[A-Z]+ )?(/[^"]*)"`)
)

// registeredRoutes parses the operator API's route registrations: pattern →
// permission ("any" for authenticated-only routes, "none" for /login and
// /logout).
func registeredRoutes(t *testing.T) map[string]string {
	t.Helper()
	dir := "../internal/server/operatorapi"
	files, err := filepath.Glob(filepath.Join(dir, "*.go"))
	if err != nil {
		t.Fatal(err)
	}
	perms := map[string]string{}
	var src []string
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		s := read(t, f)
		src = append(src, s)
		for _, m := range permRE.FindAllStringSubmatch(s, -1) {
			perms[m[1]] = m[2]
		}
	}
	routes := map[string]string{}
	for _, s := range src {
		for _, m := range handleRE.FindAllStringSubmatch(s, -1) {
			switch {
			case m[1] == "handleAuthed":
				routes[m[2]] = "any"
			case perms[m[3]] != "":
				routes[m[2]] = perms[m[3]]
			default:
				t.Errorf("route %s: permission %q not found in operatorapi", m[2], m[3])
			}
		}
		for _, m := range muxRE.FindAllStringSubmatch(s, -1) {
			if _, ok := routes[m[1]]; !ok {
				routes[m[1]] = "none"
			}
		}
	}
	if len(routes) < 10 {
		t.Fatalf("found only %d routes in %s; has the registration style changed?", len(routes), dir)
	}
	return routes
}

// documentedRoutes parses the route tables of api-reference.md: the section
// "Operator routes" gives pattern → permission, the section on the web
// listener gives paths.
func documentedRoutes(t *testing.T) (operator map[string]string, web []string) {
	t.Helper()
	doc := read(t, "api-reference.md")
	opStart := strings.Index(doc, "## Operator routes")
	webStart := strings.Index(doc, "## Web listener routes")
	if opStart < 0 || webStart < opStart {
		t.Fatal("api-reference.md needs the sections \"## Operator routes\" and then \"## Web listener routes\"")
	}
	operator = map[string]string{}
	for _, m := range rowRE.FindAllStringSubmatch(doc[opStart:webStart], -1) {
		perm := strings.Trim(strings.TrimSpace(m[2]), "`")
		if _, dup := operator[m[1]]; dup {
			t.Errorf("api-reference.md lists %s twice", m[1])
		}
		operator[m[1]] = perm
	}
	rest := doc[webStart:]
	if i := strings.Index(rest[2:], "\n## "); i >= 0 {
		rest = rest[:i+2]
	}
	for _, m := range rowRE.FindAllStringSubmatch(rest, -1) {
		web = append(web, m[1])
	}
	sort.Strings(web)
	return operator, web
}

func TestAPIReferenceMatchesRoutes(t *testing.T) {
	got, _ := documentedRoutes(t)
	want := registeredRoutes(t)
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("api-reference.md operator routes differ from internal/server/operatorapi (-registered +documented):\n%s", diff)
	}
}

func TestAPIReferenceMatchesWebRoutes(t *testing.T) {
	_, got := documentedRoutes(t)
	var want []string
	for _, m := range webRE.FindAllStringSubmatch(read(t, "../internal/server/server.go"), -1) {
		switch m[1] {
		case "/", "/api/", "/login", "/logout": // the operator API and the catch-all
			continue
		}
		want = append(want, m[1])
	}
	sort.Strings(want)
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("api-reference.md web routes differ from internal/server/server.go (-registered +documented):\n%s", diff)
	}
}

// TestREADMEFirstBlock keeps the README's promise to CI (.ci/run runs the
// second line of the first code block).
func TestREADMEFirstBlock(t *testing.T) {
	readme := read(t, "../README.md")
	m := regexp.MustCompile("(?s)```[a-z]*\n(.*?)```").FindStringSubmatch(readme)
	if m == nil {
		t.Fatal("README.md has no code block")
	}
	want := "go run ./cmd/meshctl demo\ngo test -race -timeout 60m ./...\n"
	if m[1] != want {
		t.Errorf("README.md first code block = %q, want %q", m[1], want)
	}
}

// A docCommand is one command line found in a document.
type docCommand struct {
	doc  string
	bin  string // meshctl, meshanics-server, meshanics-agent
	args []string
}

var (
	fenceRE  = regexp.MustCompile("(?s)```[a-z]*\n(.*?)```")
	inlineRE = regexp.MustCompile("`([^`]+)`")
)

// commands extracts the commands of a document: from code blocks (with
// backslash continuations joined) and from inline code.
func commands(doc, text string) []docCommand {
	var chunks []string
	for _, m := range fenceRE.FindAllStringSubmatch(text, -1) {
		chunks = append(chunks, strings.Split(strings.ReplaceAll(m[1], "\\\n", " "), "\n")...)
	}
	for _, m := range inlineRE.FindAllStringSubmatch(fenceRE.ReplaceAllString(text, ""), -1) {
		chunks = append(chunks, strings.ReplaceAll(m[1], "\n", " "))
	}
	var out []docCommand
	for _, c := range chunks {
		toks := strings.Fields(c)
		for i, tok := range toks {
			base := filepath.Base(tok)
			if base != "meshctl" && base != "meshanics-server" && base != "meshanics-agent" {
				continue
			}
			if i > 0 && (strings.HasSuffix(toks[i-1], "=") || toks[i-1] == "-o") {
				continue // a path in a flag value or an output file
			}
			var args []string
			for _, a := range toks[i+1:] {
				if strings.ContainsAny(a[:1], "|>;#&)<") || a == "&&" {
					break
				}
				args = append(args, strings.TrimRight(a, ");"))
				if strings.HasSuffix(a, ")") || strings.HasSuffix(a, ";") {
					break
				}
			}
			out = append(out, docCommand{doc: doc, bin: base, args: args})
		}
	}
	return out
}

// flagsOf returns the names of the flags among args (values skipped only
// when they do not start with '-').
func flagsOf(args []string) []string {
	var fl []string
	for _, a := range args {
		if len(a) > 1 && a[0] == '-' && a != "--" {
			name, _, _ := strings.Cut(strings.TrimLeft(a, "-"), "=")
			fl = append(fl, name)
		}
	}
	return fl
}

// hasFlag reports whether a flag package usage text declares -name.
func hasFlag(usage, name string) bool {
	return regexp.MustCompile(`(?m)^\s+-` + regexp.QuoteMeta(name) + `(\s|$)`).MatchString(usage)
}

func meshctl(args ...string) (stdout, stderr string, code int) {
	var o, e bytes.Buffer
	code = cli.Main(context.Background(), args, &o, &e)
	return o.String(), e.String(), code
}

var meshctlGlobals = map[string]bool{"o": true, "server": true, "ca": true, "ca-pin": true, "api-key": true}

func checkMeshctl(t *testing.T, c docCommand) {
	args := c.args
	for len(args) > 0 && strings.HasPrefix(args[0], "-") {
		name := strings.TrimLeft(args[0], "-")
		if !meshctlGlobals[name] {
			t.Errorf("%s: meshctl %s: unknown global flag -%s", c.doc, strings.Join(c.args, " "), name)
			return
		}
		args = args[min(2, len(args)):]
	}
	if len(args) == 0 || args[0] == "help" || strings.Contains(args[0], "…") {
		return
	}
	group := args[0]
	out, errOut, code := meshctl(group, "-h")
	if code != 0 {
		t.Errorf("%s: meshctl %s: no such command (exit %d: %s)", c.doc, group, code, strings.TrimSpace(errOut))
		return
	}
	usage := errOut
	rest := args[1:]
	if strings.Contains(out, "Subcommands:") {
		if len(rest) == 0 || strings.Contains(rest[0], "…") {
			return // the group named in prose
		}
		sub := rest[0]
		_, errOut, code := meshctl(group, sub, "-h")
		if code != 0 {
			t.Errorf("%s: meshctl %s %s: no such subcommand (exit %d: %s)", c.doc, group, sub, code, strings.TrimSpace(errOut))
			return
		}
		usage, rest = errOut, rest[1:]
	}
	for _, f := range flagsOf(rest) {
		if f != "h" && !hasFlag(usage, f) {
			t.Errorf("%s: meshctl %s: flag -%s does not exist", c.doc, strings.Join(c.args, " "), f)
		}
	}
}

func checkServer(t *testing.T, c docCommand) {
	mode, args := "serve", c.args
	if len(args) > 0 && args[0] == "init" {
		mode, args = "init", args[1:]
	}
	var usage bytes.Buffer
	if _, err := server.ParseFlags(mode, []string{"-h"}, &usage); !errors.Is(err, server.ErrHelp) {
		t.Fatalf("server.ParseFlags(%s, -h) = %v, want ErrHelp", mode, err)
	}
	for _, f := range flagsOf(args) {
		if (mode == "serve" && f == "version") || f == "h" {
			continue
		}
		if !hasFlag(usage.String(), f) {
			t.Errorf("%s: meshanics-server %s: flag -%s does not exist", c.doc, strings.Join(c.args, " "), f)
		}
	}
}

func checkAgent(t *testing.T, c docCommand) {
	args := c.args
	var err error
	if len(args) > 0 && args[0] == "enroll" {
		_, err = config.ParseEnroll([]string{"-h"}, "host")
		args = args[1:]
	} else if len(args) > 0 && args[0] == "csr" {
		_, err = config.ParseCSR([]string{"-h"}, "host")
		args = args[1:]
	} else {
		_, err = config.Parse([]string{"-h"}, func(string) string { return "" })
	}
	var h *config.Help
	if !errors.As(err, &h) {
		t.Fatalf("agent -h = %v, want *config.Help", err)
	}
	for _, f := range flagsOf(args) {
		if f != "h" && !hasFlag(h.Usage, f) {
			t.Errorf("%s: meshanics-agent %s: flag -%s does not exist", c.doc, strings.Join(c.args, " "), f)
		}
	}
}

func TestDocumentedCommandsExist(t *testing.T) {
	n := 0
	for _, doc := range userDocs {
		for _, c := range commands(filepath.Base(doc), read(t, doc)) {
			n++
			switch c.bin {
			case "meshctl":
				checkMeshctl(t, c)
			case "meshanics-server":
				checkServer(t, c)
			case "meshanics-agent":
				checkAgent(t, c)
			}
		}
	}
	if n < 40 {
		t.Errorf("found only %d commands in the documents; is the extraction broken?", n)
	}
}

// TestDocumentedInstallerOptionsExist checks every --option given to the
// installer (after `sh -s --`) against deploy/install.sh.
func TestDocumentedInstallerOptionsExist(t *testing.T) {
	script := read(t, "../deploy/install.sh")
	n := 0
	for _, doc := range userDocs {
		text := strings.ReplaceAll(read(t, doc), "\\\n", " ")
		for _, line := range strings.Split(text, "\n") {
			_, after, ok := strings.Cut(line, "sh -s --")
			if !ok {
				continue
			}
			for _, tok := range strings.Fields(after) {
				if strings.HasPrefix(tok, "--") && len(tok) > 2 {
					n++
					if !strings.Contains(script, "\n\t\t"+tok+")") && !strings.Contains(script, tok+")") {
						t.Errorf("%s: install.sh option %s does not exist", filepath.Base(doc), tok)
					}
				}
			}
		}
	}
	if n == 0 {
		t.Error("no installer options found in the documents")
	}
}

// TestExtraction pins the command extraction on a known snippet, so that a
// broken parser cannot make the checks above pass vacuously.
func TestExtraction(t *testing.T) {
	text := "Run `meshctl -o json devices show cam-1`.\n\n```sh\nbin/meshanics-server init -data-dir D \\\n  -public-host h > key\nmeshctl tokens create -uses 5 | tee x\n```\n"
	got := commands("x.md", text)
	want := []docCommand{
		{doc: "x.md", bin: "meshanics-server", args: []string{"init", "-data-dir", "D", "-public-host", "h"}},
		{doc: "x.md", bin: "meshctl", args: []string{"tokens", "create", "-uses", "5"}},
		{doc: "x.md", bin: "meshctl", args: []string{"-o", "json", "devices", "show", "cam-1"}},
	}
	if diff := cmp.Diff(want, got, cmp.AllowUnexported(docCommand{})); diff != "" {
		t.Errorf("commands() mismatch (-want +got):\n%s", diff)
	}
}

// declaredFlags lists the flag names in a flag package usage text.
func declaredFlags(usage string) []string {
	var out []string
	for _, m := range regexp.MustCompile(`(?m)^\s+-([a-z][a-z0-9-]*)`).FindAllStringSubmatch(usage, -1) {
		out = append(out, m[1])
	}
	sort.Strings(out)
	return out
}

// tableFlags lists the flags named in the first column of the table under
// heading in doc.
func tableFlags(t *testing.T, doc, heading string) []string {
	t.Helper()
	i := strings.Index(doc, heading)
	if i < 0 {
		t.Fatalf("no section %q", heading)
	}
	sec := doc[i+len(heading):]
	if j := strings.Index(sec, "\n## "); j >= 0 {
		sec = sec[:j]
	}
	var out []string
	for _, line := range strings.Split(sec, "\n") {
		if !strings.HasPrefix(line, "| `-") {
			continue
		}
		cell := strings.Split(line, "|")[1]
		for _, m := range regexp.MustCompile("`-([a-z][a-z0-9-]*)").FindAllStringSubmatch(cell, -1) {
			out = append(out, m[1])
		}
	}
	sort.Strings(out)
	return out
}

// TestAgentReferenceFlagsComplete checks the agent reference's flag tables
// against the agent's real flag sets, both ways.
func TestAgentReferenceFlagsComplete(t *testing.T) {
	doc := read(t, "agent-reference.md")
	_, err := config.Parse([]string{"-h"}, func(string) string { return "" })
	var run *config.Help
	if !errors.As(err, &run) {
		t.Fatalf("config.Parse(-h) = %v", err)
	}
	if diff := cmp.Diff(declaredFlags(run.Usage), tableFlags(t, doc, "## Run mode flags")); diff != "" {
		t.Errorf("agent-reference.md run mode flags differ from meshanics-agent's (-real +documented):\n%s", diff)
	}
	_, err = config.ParseEnroll([]string{"-h"}, "host")
	var enroll *config.Help
	if !errors.As(err, &enroll) {
		t.Fatalf("config.ParseEnroll(-h) = %v", err)
	}
	if diff := cmp.Diff(declaredFlags(enroll.Usage), tableFlags(t, doc, "## Enroll flags")); diff != "" {
		t.Errorf("agent-reference.md enroll flags differ from meshanics-agent enroll's (-real +documented):\n%s", diff)
	}
}

// TestOperatorGuideServerFlagsComplete checks the server flag table of the
// operator guide against meshanics-server's flag set, both ways.
func TestOperatorGuideServerFlagsComplete(t *testing.T) {
	var usage bytes.Buffer
	if _, err := server.ParseFlags("serve", []string{"-h"}, &usage); !errors.Is(err, server.ErrHelp) {
		t.Fatalf("server.ParseFlags(-h) = %v", err)
	}
	got := tableFlags(t, read(t, "operator-guide.md"), "## Install the control plane")
	if diff := cmp.Diff(declaredFlags(usage.String()), got); diff != "" {
		t.Errorf("operator-guide.md server flags differ from meshanics-server's (-real +documented):\n%s", diff)
	}
}
