package artifact

import (
	"fmt"
	"path/filepath"
	"regexp"
	"strings"
	"unicode/utf8"
)

// ModelManifest describes a model file (SPEC §6).
type ModelManifest struct {
	Framework      string             `json:"framework"`
	Input          any                `json:"input,omitempty"`
	Metrics        map[string]float64 `json:"metrics,omitempty"`
	TargetHardware string             `json:"target_hardware,omitempty"`
	License        string             `json:"license,omitempty"`
}

var frameworkRE = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,31}$`)

// Validate checks the manifest.
func (m ModelManifest) Validate() error {
	if !frameworkRE.MatchString(m.Framework) {
		return fmt.Errorf("manifest framework must be a short lower-case word such as onnx, tensorrt or tflite")
	}
	if len(m.Metrics) > 64 {
		return fmt.Errorf("manifest has more than 64 metrics")
	}
	for k := range m.Metrics {
		if k == "" || len(k) > 64 {
			return fmt.Errorf("manifest metric names must be 1-64 bytes")
		}
	}
	if len(m.TargetHardware) > 128 || len(m.License) > 128 {
		return fmt.Errorf("manifest target_hardware and license must be at most 128 bytes")
	}
	return nil
}

// ConfigProfile is the delivery profile of a config artifact (SPEC §4.3).
type ConfigProfile struct {
	Activator   string  `json:"activator"`
	Destination string  `json:"destination"`
	Mode        string  `json:"mode"` // octal string, e.g. "0644"
	Reload      *Reload `json:"reload,omitempty"`
}

// Reload is one of: a systemd unit to reload-or-restart, or a fixed argv.
type Reload struct {
	SystemdUnit string   `json:"systemd_unit,omitempty"`
	Exec        []string `json:"exec,omitempty"`
}

var unitRE = regexp.MustCompile(`^[A-Za-z0-9:_.@-]{1,200}\.(service|socket|target|timer|path)$`)

// ParseMode parses an octal mode limited to permission bits (0000-0777).
func ParseMode(s string) (uint32, error) {
	if len(s) < 3 || len(s) > 4 {
		return 0, fmt.Errorf("mode %q must be 3-4 octal digits, at most 0777", s)
	}
	var m uint32
	for _, c := range s {
		if c < '0' || c > '7' {
			return 0, fmt.Errorf("mode %q must be octal", s)
		}
		m = m*8 + uint32(c-'0')
	}
	if m > 0o777 {
		return 0, fmt.Errorf("mode %q may only use permission bits (no setuid, setgid or sticky)", s)
	}
	return m, nil
}

// Validate checks the profile's shape; allowlists are the device's business.
func (p ConfigProfile) Validate() error {
	if p.Activator != "place-file" {
		return fmt.Errorf("config activator must be place-file, not %q", p.Activator)
	}
	d := p.Destination
	if len(d) == 0 || len(d) > 1024 || !utf8.ValidString(d) || strings.ContainsRune(d, 0) {
		return fmt.Errorf("config destination must be 1-1024 bytes of UTF-8")
	}
	if !filepath.IsAbs(d) || filepath.Clean(d) != d || d == "/" {
		return fmt.Errorf("config destination %q must be an absolute clean file path", d)
	}
	if _, err := ParseMode(p.Mode); err != nil {
		return err
	}
	if p.Reload != nil {
		return p.Reload.Validate()
	}
	return nil
}

// Validate checks the reload shape.
func (r Reload) Validate() error {
	switch {
	case r.SystemdUnit != "" && len(r.Exec) > 0:
		return fmt.Errorf("reload takes either systemd_unit or exec, not both")
	case r.SystemdUnit != "":
		if !unitRE.MatchString(r.SystemdUnit) {
			return fmt.Errorf("reload systemd_unit %q is not a unit name", r.SystemdUnit)
		}
	case len(r.Exec) > 0:
		if len(r.Exec) > 32 {
			return fmt.Errorf("reload exec takes at most 32 arguments")
		}
		if !filepath.IsAbs(r.Exec[0]) || filepath.Clean(r.Exec[0]) != r.Exec[0] {
			return fmt.Errorf("reload exec binary must be an absolute clean path")
		}
		for _, a := range r.Exec {
			if len(a) > 1024 || strings.ContainsRune(a, 0) {
				return fmt.Errorf("reload exec arguments must be at most 1024 bytes without NUL")
			}
		}
	}
	return nil
}

// ContainerSpec is the container descriptor (SPEC §4.3, §6).
type ContainerSpec struct {
	Image   string            `json:"image"` // repo@sha256:<64 hex>
	Name    string            `json:"name,omitempty"`
	Env     map[string]string `json:"env,omitempty"`
	Ports   []PortMapping     `json:"ports,omitempty"`
	Restart string            `json:"restart,omitempty"` // default unless-stopped
	Args    []string          `json:"args,omitempty"`
}

// PortMapping publishes a container port on a host loopback port.
type PortMapping struct {
	Host      int    `json:"host"`
	Container int    `json:"container"`
	Protocol  string `json:"protocol,omitempty"` // tcp (default) or udp
}

var (
	imageRE   = regexp.MustCompile(`^[a-z0-9]([a-z0-9._:/-]{0,250}[a-z0-9])?@sha256:[0-9a-f]{64}$`)
	envKeyRE  = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]{0,127}$`)
	restartOK = map[string]bool{"": true, "no": true, "always": true, "unless-stopped": true, "on-failure": true}
)

// Validate checks the descriptor: digest-pinned image, bounded env, loopback
// ports and a known restart policy. There is no field for privileged mode
// or host mounts, so a descriptor cannot ask for them.
func (c ContainerSpec) Validate() error {
	if !imageRE.MatchString(c.Image) {
		return fmt.Errorf("container image %q must be pinned by digest: repo@sha256:<64 hex>", c.Image)
	}
	if c.Name != "" {
		if err := validSuffix(c.Name); err != nil {
			return err
		}
	}
	if len(c.Env) > 128 {
		return fmt.Errorf("container env has more than 128 entries")
	}
	for k, v := range c.Env {
		if !envKeyRE.MatchString(k) || len(v) > 4096 || strings.ContainsRune(v, 0) {
			return fmt.Errorf("container env %q: names like FOO_BAR, values at most 4096 bytes", k)
		}
	}
	if len(c.Ports) > 32 {
		return fmt.Errorf("container has more than 32 ports")
	}
	for _, p := range c.Ports {
		if p.Host < 1 || p.Host > 65535 || p.Container < 1 || p.Container > 65535 {
			return fmt.Errorf("container ports must be in 1-65535")
		}
		if p.Protocol != "" && p.Protocol != "tcp" && p.Protocol != "udp" {
			return fmt.Errorf("container port protocol must be tcp or udp")
		}
	}
	if !restartOK[c.Restart] {
		return fmt.Errorf("container restart policy %q unknown (no, always, unless-stopped, on-failure)", c.Restart)
	}
	if len(c.Args) > 64 {
		return fmt.Errorf("container takes at most 64 args")
	}
	for _, a := range c.Args {
		if len(a) > 4096 || strings.ContainsRune(a, 0) {
			return fmt.Errorf("container args must be at most 4096 bytes without NUL")
		}
	}
	return nil
}

var suffixRE = regexp.MustCompile(`^[a-z0-9][a-z0-9_.-]{0,62}$`)

func validSuffix(s string) error {
	if !suffixRE.MatchString(s) {
		return fmt.Errorf("container name %q must match [a-z0-9][a-z0-9_.-]{0,62}", s)
	}
	return nil
}
