// Package config parses and validates the agent's configuration (SPEC §4.1):
// every setting is a flag with an environment variable, the flag winning.
// Every error names the flag it is about, so the operator can fix the unit's
// environment file; the binary maps any *Error to exit 78 (EX_CONFIG).
//
// Imported by cmd/meshanics-agent and internal/agent only. There is no
// setting that skips verification, and none may be added.
package config

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
)

// ExitConfig is the exit status for configuration errors (sysexits EX_CONFIG).
const ExitConfig = 78

// Defaults of SPEC §4.1 and of the installer layout.
const (
	DefaultDataDir   = "/var/lib/meshanics"
	DefaultConfigDir = "/etc/meshanics"
	DefaultRuntime   = "auto"
)

// Error is a configuration error about one flag. Callers exit 78 on it.
type Error struct {
	Flag string // with its leading dash, e.g. "-server"
	Msg  string
}

func (e *Error) Error() string {
	if e.Flag == "" {
		return "configuration: " + e.Msg
	}
	return e.Flag + ": " + e.Msg
}

// IsError reports whether err is (or wraps) a configuration error.
func IsError(err error) bool {
	var ce *Error
	return errors.As(err, &ce)
}

func errf(flagName, format string, args ...any) error {
	return &Error{Flag: flagName, Msg: fmt.Sprintf(format, args...)}
}

// Allowlists are the device-side policy of SPEC §4.3; each starts empty,
// which denies everything.
type Allowlists struct {
	ExecProbe  []string // absolute binaries an exec probe may run
	ConfigDest []string // directories a config file may be placed under
	ReloadUnit []string // systemd units a reload may reload-or-restart
	ReloadExec []string // absolute binaries an exec reload may run
}

// Config is the validated configuration of `meshanics-agent` (run mode).
type Config struct {
	Server           string // device API host:port
	CertFile         string
	KeyFile          string
	CAFile           string
	ArtifactServer   string // https://host:port, "" when OTA is not configured
	TUFRoot          string // pinned root.json, "" when OTA is not configured
	DataDir          string
	ContainerRuntime string // auto | podman | docker | none | absolute path
	Tags             map[string]string
	Allow            Allowlists
	LogLevel         slog.Level
	ShowVersion      bool
}

// OTAConfigured reports whether updates can be applied (both the artifact
// server and the trust anchor are set; Parse guarantees both or neither).
func (c *Config) OTAConfigured() bool { return c.ArtifactServer != "" && c.TUFRoot != "" }

// ConfigDir is where the credentials live: the directory of the device
// certificate (the installer puts every credential in one directory).
func (c *Config) ConfigDir() string { return filepath.Dir(c.CertFile) }

// Parse reads args (without the program name) and the environment through
// getenv. A flag given on the command line wins over its env var; for a
// repeatable flag, any command-line occurrence replaces the env list.
func Parse(args []string, getenv func(string) string) (*Config, error) {
	fs := flag.NewFlagSet("meshanics-agent", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	e := envFlags{fs: fs, getenv: getenv}

	c := &Config{}
	var logLevel string
	var tagList listFlag
	e.str(&c.Server, "server", "MESHANICS_SERVER", "", "device API host:port (required)")
	e.str(&c.CertFile, "cert", "MESHANICS_CERT", "", "device certificate PEM (required)")
	e.str(&c.KeyFile, "key", "MESHANICS_KEY", "", "device private key PEM (required)")
	e.str(&c.CAFile, "ca", "MESHANICS_CA", "", "fleet CA bundle PEM (required)")
	e.str(&c.ArtifactServer, "artifact-server", "MESHANICS_ARTIFACT_SERVER", "", "https://host:port of the update repository")
	e.str(&c.TUFRoot, "tuf-root", "MESHANICS_TUF_ROOT", "", "pinned TUF trust anchor (root.json)")
	e.str(&c.DataDir, "data-dir", "MESHANICS_DATA_DIR", DefaultDataDir, "artifacts, metadata cache, update state")
	e.str(&c.ContainerRuntime, "container-runtime", "MESHANICS_CONTAINER_RUNTIME", DefaultRuntime, "auto, podman, docker, none or an absolute path")
	e.list(&tagList, "tag", "MESHANICS_TAGS", "device tag key=value (repeatable)")
	var allow allowFlags
	allow.register(&e)
	e.str(&logLevel, "log-level", "MESHANICS_LOG_LEVEL", "info", "debug, info, warn or error")
	fs.BoolVar(&c.ShowVersion, "version", false, "print the version and exit")

	if err := fs.Parse(args); err != nil {
		return nil, parseError(fs, err)
	}
	if fs.NArg() > 0 {
		return nil, errf("", "unexpected argument %q", truncate(fs.Arg(0)))
	}
	if c.ShowVersion {
		return c, nil
	}
	var err error
	if c.Tags, err = ParseTags("-tag", tagList.vals); err != nil {
		return nil, err
	}
	if c.Allow, err = allow.validate(); err != nil {
		return nil, err
	}
	if c.LogLevel, err = ParseLogLevel(logLevel); err != nil {
		return nil, err
	}
	if err := c.validate(); err != nil {
		return nil, err
	}
	return c, nil
}

func (c *Config) validate() error {
	if err := ValidateHostPort("-server", c.Server); err != nil {
		return err
	}
	for _, f := range []struct{ name, val string }{{"-cert", c.CertFile}, {"-key", c.KeyFile}, {"-ca", c.CAFile}} {
		if err := ValidatePath(f.name, f.val); err != nil {
			return err
		}
	}
	switch {
	case c.ArtifactServer != "" && c.TUFRoot == "":
		return errf("-tuf-root", "required when -artifact-server is set (they come together or not at all)")
	case c.TUFRoot != "" && c.ArtifactServer == "":
		return errf("-artifact-server", "required when -tuf-root is set (they come together or not at all)")
	case c.ArtifactServer != "":
		if err := ValidateHTTPSURL("-artifact-server", c.ArtifactServer); err != nil {
			return err
		}
		if err := ValidatePath("-tuf-root", c.TUFRoot); err != nil {
			return err
		}
	}
	if err := ValidatePath("-data-dir", c.DataDir); err != nil {
		return err
	}
	return ValidateRuntime("-container-runtime", c.ContainerRuntime)
}

// ValidateHostPort checks a host:port with a numeric port.
func ValidateHostPort(flagName, s string) error {
	if s == "" {
		return errf(flagName, "required (host:port)")
	}
	host, port, err := net.SplitHostPort(s)
	if err != nil || host == "" || strings.ContainsAny(host, "/@ \t") {
		return errf(flagName, "%q is not host:port", truncate(s))
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		return errf(flagName, "%q has no valid port (1-65535)", truncate(s))
	}
	return nil
}

// ValidateHTTPSURL checks an https://host[:port] URL without credentials,
// query or fragment.
func ValidateHTTPSURL(flagName, s string) error {
	u, err := url.Parse(s)
	if err != nil || u.Scheme != "https" || u.Host == "" || u.User != nil || u.RawQuery != "" || u.Fragment != "" {
		return errf(flagName, "%q is not an https://host:port URL", truncate(s))
	}
	if p := u.Port(); p != "" {
		if n, err := strconv.Atoi(p); err != nil || n < 1 || n > 65535 {
			return errf(flagName, "%q has no valid port (1-65535)", truncate(s))
		}
	}
	return nil
}

// ValidatePath checks a required file or directory path.
func ValidatePath(flagName, s string) error {
	if s == "" {
		return errf(flagName, "required (a path)")
	}
	if strings.ContainsRune(s, 0) || len(s) > 4096 {
		return errf(flagName, "not a usable path")
	}
	return nil
}

// ValidateRuntime checks the -container-runtime choice.
func ValidateRuntime(flagName, s string) error {
	switch s {
	case "auto", "podman", "docker", "none":
		return nil
	}
	if isAbsClean(s) && s != "/" {
		return nil
	}
	return errf(flagName, "%q: want auto, podman, docker, none or an absolute path", truncate(s))
}

// ParseLogLevel maps -log-level to a slog level.
func ParseLogLevel(s string) (slog.Level, error) {
	switch strings.ToLower(s) {
	case "debug":
		return slog.LevelDebug, nil
	case "info", "":
		return slog.LevelInfo, nil
	case "warn", "warning":
		return slog.LevelWarn, nil
	case "error":
		return slog.LevelError, nil
	}
	return 0, errf("-log-level", "%q: want debug, info, warn or error", truncate(s))
}

const maxTags = 64

var (
	tagKeyRE   = regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9._/-]{0,61}[A-Za-z0-9])?$`)
	tagValueRE = regexp.MustCompile(`^[A-Za-z0-9._:/@+-]{0,128}$`)
)

// ParseTags turns key=value items into a map; keys are unique.
func ParseTags(flagName string, items []string) (map[string]string, error) {
	if len(items) > maxTags {
		return nil, errf(flagName, "at most %d tags", maxTags)
	}
	tags := make(map[string]string, len(items))
	for _, it := range items {
		k, v, ok := strings.Cut(it, "=")
		if !ok {
			return nil, errf(flagName, "%q: want key=value", truncate(it))
		}
		if !tagKeyRE.MatchString(k) {
			return nil, errf(flagName, "%q: key must be 1-63 of [A-Za-z0-9._/-], starting and ending alphanumeric", truncate(it))
		}
		if !tagValueRE.MatchString(v) {
			return nil, errf(flagName, "%q: value must be at most 128 of [A-Za-z0-9._:/@+-]", truncate(it))
		}
		if _, dup := tags[k]; dup {
			return nil, errf(flagName, "tag %q given twice", k)
		}
		tags[k] = v
	}
	return tags, nil
}

// Help is returned for -h/-help; it wraps flag.ErrHelp and carries the
// flag list.
type Help struct{ Usage string }

func (h *Help) Error() string { return "help requested" }
func (h *Help) Unwrap() error { return flag.ErrHelp }

func parseError(fs *flag.FlagSet, err error) error {
	if errors.Is(err, flag.ErrHelp) {
		var b strings.Builder
		fs.SetOutput(&b)
		fs.PrintDefaults()
		fs.SetOutput(io.Discard)
		return &Help{Usage: b.String()}
	}
	msg := err.Error()
	// The flag package says "flag provided but not defined: -x" or
	// "invalid value "v" for flag -x: …"; name the flag when we can.
	if i := strings.LastIndex(msg, " -"); i >= 0 {
		name := strings.TrimRight(strings.Fields(msg[i+1:])[0], ":")
		return errf(name, "%s", msg)
	}
	return errf("", "%s", msg)
}

func isAbsClean(p string) bool {
	return filepath.IsAbs(p) && filepath.Clean(p) == p && !strings.ContainsRune(p, 0)
}

func truncate(s string) string {
	const max = 80
	if len(s) > max {
		return s[:max] + "…"
	}
	return s
}
