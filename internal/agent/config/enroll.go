package config

import (
	"encoding/hex"
	"flag"
	"io"
	"net/url"
	"path/filepath"
	"strings"

	"github.com/meshanics/meshanics/internal/names"
)

// Enroll is the validated configuration of `meshanics-agent enroll`.
type Enroll struct {
	URL        string // https://host:port of the control plane's web listener
	Token      string // mst_…; a secret: never logged
	CAPin      [32]byte
	CAFile     string // optional: a copy of the fleet CA the caller holds; must match CAPin
	Name       string
	Tags       map[string]string
	ConfigDir  string
	DataDir    string
	Runtime    string
	Allow      Allowlists
	LogLevel   string
	Containers string // base of the podman trust dirs (/etc/containers/certs.d)
	Docker     string // base of the docker trust dirs (/etc/docker/certs.d)
}

// Default bases of the container runtimes' per-registry trust directories.
const (
	DefaultContainersCertsDir = "/etc/containers/certs.d"
	DefaultDockerCertsDir     = "/etc/docker/certs.d"
)

// ParseEnroll reads the enroll subcommand's flags. hostname supplies the
// default device name.
func ParseEnroll(args []string, hostname string) (*Enroll, error) {
	fs := flag.NewFlagSet("meshanics-agent enroll", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	// The enroll command takes flags only: the environment belongs to run
	// mode, and an installer re-run must not pick up a stale unit env.
	e := envFlags{fs: fs, getenv: func(string) string { return "" }, noEnv: true}
	c := &Enroll{}
	var pin string
	var tagList listFlag
	var allow allowFlags
	fs.StringVar(&c.URL, "url", "", "https://host:port of the control plane (required)")
	fs.StringVar(&c.Token, "token", "", "enrollment token mst_… (required)")
	fs.StringVar(&pin, "ca-pin", "", "sha256:<hex of the fleet CA certificate's DER> (required)")
	fs.StringVar(&c.CAFile, "ca-file", "", "optional PEM copy of the fleet CA (checked against -ca-pin)")
	fs.StringVar(&c.Name, "name", names.DefaultDevice(hostname), "device name (default: the host name)")
	e.list(&tagList, "tag", "MESHANICS_TAGS", "device tag key=value (repeatable)")
	fs.StringVar(&c.ConfigDir, "config-dir", DefaultConfigDir, "where credentials and agent.env are written")
	fs.StringVar(&c.DataDir, "data-dir", DefaultDataDir, "agent data dir written into agent.env")
	fs.StringVar(&c.Runtime, "container-runtime", DefaultRuntime, "container runtime written into agent.env")
	fs.StringVar(&c.LogLevel, "log-level", "info", "log level written into agent.env")
	fs.StringVar(&c.Containers, "containers-certs-dir", DefaultContainersCertsDir, "podman/CRI-O per-registry trust dir base")
	fs.StringVar(&c.Docker, "docker-certs-dir", DefaultDockerCertsDir, "docker per-registry trust dir base")
	allow.register(&e)
	if err := fs.Parse(args); err != nil {
		return nil, parseError(fs, err)
	}
	if fs.NArg() > 0 {
		return nil, errf("", "unexpected argument %q", truncate(fs.Arg(0)))
	}
	if err := ValidateHTTPSURL("-url", c.URL); err != nil {
		return nil, err
	}
	if u, _ := url.Parse(c.URL); u.Path != "" && u.Path != "/" {
		return nil, errf("-url", "%q: want https://host:port without a path", truncate(c.URL))
	}
	c.URL = strings.TrimSuffix(c.URL, "/")
	if !strings.HasPrefix(c.Token, "mst_") || len(c.Token) > 256 || strings.ContainsAny(c.Token, " \t\r\n") {
		return nil, errf("-token", "want an enrollment token mst_…")
	}
	var err error
	if c.CAPin, err = ParsePin(pin); err != nil {
		return nil, err
	}
	if c.CAFile != "" && !filepath.IsAbs(c.CAFile) {
		return nil, errf("-ca-file", "%q must be an absolute path", truncate(c.CAFile))
	}
	if err := names.ValidateDevice(c.Name); err != nil {
		return nil, errf("-name", "%v", err)
	}
	if c.Tags, err = ParseTags("-tag", tagList.vals); err != nil {
		return nil, err
	}
	if c.Allow, err = allow.validate(); err != nil {
		return nil, err
	}
	if _, err := ParseLogLevel(c.LogLevel); err != nil {
		return nil, err
	}
	if err := ValidateRuntime("-container-runtime", c.Runtime); err != nil {
		return nil, err
	}
	for _, f := range []struct{ name, val string }{
		{"-config-dir", c.ConfigDir}, {"-data-dir", c.DataDir},
		{"-containers-certs-dir", c.Containers}, {"-docker-certs-dir", c.Docker},
	} {
		if !isAbsClean(f.val) {
			return nil, errf(f.name, "%q must be an absolute clean path", truncate(f.val))
		}
		// agent.env is a systemd environment file: keep its values plain.
		if strings.ContainsAny(f.val, " \t\r\n\"'\\$,") {
			return nil, errf(f.name, "%q: no whitespace, quotes, '\\', '$' or ','", truncate(f.val))
		}
	}
	return c, nil
}

// ParsePin parses "sha256:<64 hex>".
func ParsePin(s string) ([32]byte, error) {
	var pin [32]byte
	h, ok := strings.CutPrefix(s, "sha256:")
	if !ok || len(h) != 64 {
		return pin, errf("-ca-pin", "want sha256:<64 hex digits of the CA certificate's DER>")
	}
	if _, err := hex.Decode(pin[:], []byte(strings.ToLower(h))); err != nil {
		return pin, errf("-ca-pin", "want sha256:<64 hex digits of the CA certificate's DER>")
	}
	return pin, nil
}
