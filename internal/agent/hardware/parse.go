package hardware

import (
	"bufio"
	"bytes"
	"strconv"
	"strings"
)

// CPUInfo is what the profile needs from /proc/cpuinfo.
type CPUInfo struct {
	Processors uint32 // "processor" entries
	ModelName  string // x86 "model name"
	Hardware   string // older ARM kernels' "Hardware" line
}

// ParseCPUInfo reads /proc/cpuinfo.
func ParseCPUInfo(b []byte) CPUInfo {
	var ci CPUInfo
	s := bufio.NewScanner(bytes.NewReader(b))
	s.Buffer(make([]byte, 0, 4096), 64*1024)
	for s.Scan() {
		k, v, ok := strings.Cut(s.Text(), ":")
		if !ok {
			continue
		}
		k, v = strings.TrimSpace(k), strings.TrimSpace(v)
		switch k {
		case "processor":
			if _, err := strconv.Atoi(v); err == nil && ci.Processors < 1<<16 {
				ci.Processors++
			}
		case "model name":
			if ci.ModelName == "" {
				ci.ModelName = bounded(v)
			}
		case "Hardware":
			if ci.Hardware == "" {
				ci.Hardware = bounded(v)
			}
		}
	}
	return ci
}

// ParseMemTotal returns MemTotal from /proc/meminfo in bytes (0 if absent).
func ParseMemTotal(b []byte) uint64 {
	s := bufio.NewScanner(bytes.NewReader(b))
	for s.Scan() {
		rest, ok := strings.CutPrefix(s.Text(), "MemTotal:")
		if !ok {
			continue
		}
		f := strings.Fields(rest)
		if len(f) == 0 {
			return 0
		}
		n, err := strconv.ParseUint(f[0], 10, 64)
		if err != nil || n > 1<<50 {
			return 0
		}
		if len(f) > 1 && f[1] == "kB" {
			return n * 1024
		}
		return n
	}
	return 0
}

// ParseCPURange counts the CPUs in a list such as "0-3,6,8-9"
// (/sys/devices/system/cpu/online).
func ParseCPURange(s string) (uint32, bool) {
	if s == "" {
		return 0, false
	}
	var n uint64
	for _, part := range strings.Split(s, ",") {
		lo, hi, isRange := strings.Cut(part, "-")
		a, err := strconv.ParseUint(lo, 10, 16)
		if err != nil {
			return 0, false
		}
		b := a
		if isRange {
			if b, err = strconv.ParseUint(hi, 10, 16); err != nil || b < a {
				return 0, false
			}
		}
		n += b - a + 1
		if n > 1<<16 {
			return 0, false
		}
	}
	return uint32(n), true
}

// ParseCompatible splits the NUL-separated device-tree compatible list.
func ParseCompatible(b []byte) []string {
	var out []string
	for _, c := range bytes.Split(b, []byte{0}) {
		if s := strings.TrimSpace(string(c)); s != "" && len(out) < 32 {
			out = append(out, bounded(s))
		}
	}
	return out
}

// ParseOSRelease reads os-release(5): KEY=value lines, values optionally
// quoted with shell-style escapes.
func ParseOSRelease(b []byte) map[string]string {
	m := map[string]string{}
	s := bufio.NewScanner(bytes.NewReader(b))
	for s.Scan() && len(m) < 128 {
		line := strings.TrimSpace(s.Text())
		if line == "" || line[0] == '#' {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok || k == "" {
			continue
		}
		m[k] = bounded(unquote(v))
	}
	return m
}

func unquote(v string) string {
	if len(v) >= 2 && (v[0] == '"' || v[0] == '\'') && v[len(v)-1] == v[0] {
		q := v[0]
		v = v[1 : len(v)-1]
		if q == '"' {
			var b strings.Builder
			for i := 0; i < len(v); i++ {
				if v[i] == '\\' && i+1 < len(v) && strings.IndexByte("\"\\$`", v[i+1]) >= 0 {
					i++
				}
				b.WriteByte(v[i])
			}
			return b.String()
		}
	}
	return v
}

// bounded keeps profile strings short: they travel to the server and into
// the operator's tables.
func bounded(s string) string {
	const max = 256
	if len(s) > max {
		s = s[:max]
	}
	// Profile strings travel in protobuf strings, which must be UTF-8.
	return strings.ToValidUTF8(s, "")
}
