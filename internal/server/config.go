package server

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/meshanics/meshanics/internal/server/ca"
)

// Config is the configuration of meshanics-server (SPEC §1, §11). Every
// field is a flag; see ParseFlags.
type Config struct {
	DataDir     string
	Database    string // "" = SQLite in DataDir; postgres://… = PostgreSQL
	Dev         bool
	WebAddr     string
	DeviceAddr  string
	RepoAddr    string
	PublicHosts []string
	// Fleet is the trust domain, used only when the CA is created; later
	// starts read it from the CA certificate.
	Fleet             string
	HeartbeatInterval time.Duration
	// HeartbeatBudget is the heartbeats per second this replica aims to
	// stay under by widening the interval it hands out (0 = never widen).
	HeartbeatBudget float64
	DeviceCertTTL   time.Duration
	AgentDir        string
	LogLevel        string
	// PprofAddr, when set, serves net/http/pprof there (loopback only).
	PprofAddr string
	// ShutdownTimeout bounds the graceful stop of the listeners.
	ShutdownTimeout time.Duration
	// Now is the clock of every part (TLS verification, tokens,
	// certificates). nil = time.Now. Not a flag.
	Now func() time.Time

	// publicHostDefaulted: no -public-host was given (only localhost).
	publicHostDefaulted bool
}

// Defaults.
const (
	DefaultDataDir           = "./meshanics-data"
	DefaultWebAddr           = ":8443"
	DefaultDeviceAddr        = ":9443"
	DefaultRepoAddr          = ":9444"
	DefaultHeartbeatInterval = 30 * time.Second
	defaultFleet             = "meshanics.local"
)

// ErrHelp is returned by ParseFlags for -h; the usage has been printed.
var ErrHelp = flag.ErrHelp

type multiFlag []string

func (m *multiFlag) String() string { return strings.Join(*m, ",") }
func (m *multiFlag) Set(v string) error {
	for _, s := range strings.Split(v, ",") {
		if s = strings.TrimSpace(s); s != "" {
			*m = append(*m, s)
		}
	}
	return nil
}

// ParseFlags parses the flags of `meshanics-server` (serve) or
// `meshanics-server init` (name "init"), writing usage to out.
func ParseFlags(name string, args []string, out io.Writer) (Config, error) {
	fs := flag.NewFlagSet("meshanics-server "+name, flag.ContinueOnError)
	fs.SetOutput(out)
	c := Config{}
	var hosts multiFlag
	fs.StringVar(&c.DataDir, "data-dir", DefaultDataDir, "data `directory`: SQLite database, pki/, blobs")
	fs.StringVar(&c.Database, "database", "", "database `DSN`: empty for SQLite in -data-dir, or postgres://…")
	fs.BoolVar(&c.Dev, "dev", false, "development mode: the server runs the TUF signing ceremony itself (keys on this machine; never for production)")
	fs.Var(&hosts, "public-host", "`host` name or IP devices and operators reach this server by (repeatable; the first is used in install commands); default localhost")
	fs.StringVar(&c.Fleet, "fleet", "", "fleet name (trust domain) when the CA is created; default the first public DNS name, else "+defaultFleet)
	fs.StringVar(&c.LogLevel, "log-level", "info", "log `level`: debug, info, warn, error")
	if name != "init" {
		fs.StringVar(&c.WebAddr, "web-addr", DefaultWebAddr, "`address` of the web listener (console, REST, enrollment, installer, downloads)")
		fs.StringVar(&c.DeviceAddr, "device-addr", DefaultDeviceAddr, "`address` of the device gRPC listener (mutual TLS)")
		fs.StringVar(&c.RepoAddr, "repo-addr", DefaultRepoAddr, "`address` of the update repository listener (mutual TLS)")
		fs.DurationVar(&c.HeartbeatInterval, "heartbeat-interval", DefaultHeartbeatInterval, "base heartbeat `interval` handed to devices")
		fs.Float64Var(&c.HeartbeatBudget, "heartbeat-budget", 0, "heartbeats per `second` this replica aims to stay under: the interval handed out widens as the fleet grows (never below -heartbeat-interval); 0 = off")
		fs.DurationVar(&c.DeviceCertTTL, "device-cert-ttl", ca.DefaultDeviceTTL, "validity of device certificates")
		fs.StringVar(&c.AgentDir, "agent-dir", "", "`directory` holding meshanics-agent-linux-{amd64,arm64} for /downloads")
		fs.StringVar(&c.PprofAddr, "pprof-addr", "", "loopback `address` to serve Go profiles (net/http/pprof) on; empty = off")
		fs.DurationVar(&c.ShutdownTimeout, "shutdown-timeout", 15*time.Second, "how long a graceful stop may take")
	}
	if err := fs.Parse(args); err != nil {
		return Config{}, err
	}
	if fs.NArg() > 0 {
		return Config{}, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	c.PublicHosts = hosts
	if name == "init" {
		c.WebAddr, c.DeviceAddr, c.RepoAddr = DefaultWebAddr, DefaultDeviceAddr, DefaultRepoAddr
		c.HeartbeatInterval, c.DeviceCertTTL = DefaultHeartbeatInterval, ca.DefaultDeviceTTL
	}
	return c, c.validate()
}

func (c *Config) validate() error {
	if c.DataDir == "" {
		return errors.New("-data-dir must not be empty")
	}
	if len(c.PublicHosts) == 0 {
		c.PublicHosts = []string{"localhost"}
		c.publicHostDefaulted = true
	}
	if _, err := ca.ParseHosts(c.PublicHosts); err != nil {
		return fmt.Errorf("-public-host: %w", err)
	}
	if c.Fleet == "" {
		c.Fleet = defaultFleetFor(c.PublicHosts)
	}
	if err := ca.ValidateFleet(c.Fleet); err != nil {
		return fmt.Errorf("-fleet: %w", err)
	}
	if c.Database != "" && !strings.HasPrefix(c.Database, "postgres://") && !strings.HasPrefix(c.Database, "postgresql://") {
		return errors.New("-database: want postgres://… (or nothing for SQLite in -data-dir)")
	}
	for _, a := range []struct{ flag, addr string }{{"-web-addr", c.WebAddr}, {"-device-addr", c.DeviceAddr}, {"-repo-addr", c.RepoAddr}} {
		if _, _, err := net.SplitHostPort(a.addr); err != nil {
			return fmt.Errorf("%s: %q is not host:port", a.flag, a.addr)
		}
	}
	if c.HeartbeatInterval < time.Second || c.HeartbeatInterval > time.Hour {
		return errors.New("-heartbeat-interval must be between 1s and 1h")
	}
	if err := validatePprofAddr(c.PprofAddr); err != nil {
		return err
	}
	if c.HeartbeatBudget < 0 || c.HeartbeatBudget > 1e6 || c.HeartbeatBudget != c.HeartbeatBudget {
		return errors.New("-heartbeat-budget must be between 0 (off) and 1000000 heartbeats/s")
	}
	if c.DeviceCertTTL < ca.MinDeviceTTL || c.DeviceCertTTL > ca.MaxDeviceTTL {
		return fmt.Errorf("-device-cert-ttl must be between %v and %v", ca.MinDeviceTTL, ca.MaxDeviceTTL)
	}
	switch c.LogLevel {
	case "debug", "info", "warn", "error":
	default:
		return errors.New("-log-level must be debug, info, warn or error")
	}
	return nil
}

// defaultFleetFor derives the fleet name from the first public DNS name
// (not "localhost"), so that a server at cp.example.com speaks for the
// fleet cp.example.com unless told otherwise.
func defaultFleetFor(hosts []string) string {
	for _, h := range hosts {
		h = strings.ToLower(strings.TrimSuffix(h, "."))
		if net.ParseIP(strings.Trim(h, "[]")) == nil && h != "localhost" && ca.ValidateFleet(h) == nil {
			return h
		}
	}
	return defaultFleet
}

// publicHostPort joins the first public host with the port of addr (the
// port actually bound, for ":0").
func publicHostPort(host string, addr net.Addr) string {
	port := 0
	if ta, ok := addr.(*net.TCPAddr); ok {
		port = ta.Port
	}
	return net.JoinHostPort(strings.Trim(host, "[]"), strconv.Itoa(port))
}
