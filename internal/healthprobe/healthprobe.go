// Package healthprobe defines the health probe a rollout carries (SPEC §4.4)
// and its bounds. The server validates it at rollout creation; the agent
// validates it again before running it. Stdlib-only leaf.
package healthprobe

import (
	"fmt"
	"net"
	"net/url"
	"path/filepath"
	"strings"
)

// Spec is the JSON shape of SPEC §4.4.
type Spec struct {
	Type                string   `json:"type"`
	Target              string   `json:"target"`
	Args                []string `json:"args,omitempty"`
	TimeoutSeconds      int      `json:"timeout_seconds,omitempty"`
	Attempts            int      `json:"attempts,omitempty"`
	InitialDelaySeconds int      `json:"initial_delay_seconds,omitempty"`
	IntervalSeconds     int      `json:"interval_seconds,omitempty"`
}

const (
	TypeHTTP = "http"
	TypeFile = "file"
	TypeExec = "exec"

	maxArgs      = 32
	maxArgLen    = 1024
	maxTargetLen = 2048
)

// WithDefaults fills zero values with the defaults of SPEC §4.4.
func (s Spec) WithDefaults() Spec {
	if s.TimeoutSeconds == 0 {
		s.TimeoutSeconds = 10
	}
	if s.Attempts == 0 {
		s.Attempts = 3
	}
	if s.IntervalSeconds == 0 {
		s.IntervalSeconds = 5
	}
	return s
}

// Validate checks shape and bounds after defaults are applied. It does not
// check device-side allowlists; the agent does that.
func (s Spec) Validate() error {
	s = s.WithDefaults()
	if len(s.Target) == 0 || len(s.Target) > maxTargetLen {
		return fmt.Errorf("probe target must be 1-%d bytes", maxTargetLen)
	}
	switch s.Type {
	case TypeHTTP:
		if len(s.Args) > 0 {
			return fmt.Errorf("http probe takes no args")
		}
		if err := LoopbackURL(s.Target); err != nil {
			return err
		}
	case TypeFile:
		if len(s.Args) > 0 {
			return fmt.Errorf("file probe takes no args")
		}
		if !filepath.IsAbs(s.Target) || filepath.Clean(s.Target) != s.Target {
			return fmt.Errorf("file probe target must be an absolute clean path")
		}
	case TypeExec:
		if !filepath.IsAbs(s.Target) || filepath.Clean(s.Target) != s.Target {
			return fmt.Errorf("exec probe target must be an absolute clean path")
		}
		if len(s.Args) > maxArgs {
			return fmt.Errorf("exec probe takes at most %d args", maxArgs)
		}
		for _, a := range s.Args {
			if len(a) > maxArgLen || strings.ContainsRune(a, 0) {
				return fmt.Errorf("exec probe args must be at most %d bytes without NUL", maxArgLen)
			}
		}
	default:
		return fmt.Errorf("probe type must be http, file or exec, not %q", s.Type)
	}
	if err := inRange("timeout_seconds", s.TimeoutSeconds, 1, 300); err != nil {
		return err
	}
	if err := inRange("attempts", s.Attempts, 1, 10); err != nil {
		return err
	}
	if err := inRange("initial_delay_seconds", s.InitialDelaySeconds, 0, 600); err != nil {
		return err
	}
	return inRange("interval_seconds", s.IntervalSeconds, 1, 300)
}

func inRange(name string, v, lo, hi int) error {
	if v < lo || v > hi {
		return fmt.Errorf("probe %s must be in [%d, %d], got %d", name, lo, hi, v)
	}
	return nil
}

// LoopbackURL checks that target is an http(s) URL whose host is loopback:
// a probe is never a way to reach into the device's network.
func LoopbackURL(target string) error {
	u, err := url.Parse(target)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("http probe target must be an http(s) URL")
	}
	if u.User != nil {
		return fmt.Errorf("http probe target must not carry credentials")
	}
	host := u.Hostname()
	if host == "localhost" {
		return nil
	}
	ip := net.ParseIP(host)
	if ip == nil || !ip.IsLoopback() {
		return fmt.Errorf("http probe host must be loopback (localhost, 127.0.0.0/8, ::1), not %q", host)
	}
	return nil
}
