// Package hardware detects the device's hardware profile (SPEC §4.2) from
// /proc, /sys, /etc/os-release and the device tree. Nothing is declared by
// an operator: every field is read from the running system.
//
// Detection reads files under a root prefix ("/" on a device, a fixture tree
// in tests) and never fails as a whole: a field that cannot be read stays
// empty. Imported by internal/agent and internal/agent/enroll.
package hardware

import (
	"bytes"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
)

// Profile is the hardware profile; its JSON shape is the one SPEC §4.2 fixes.
type Profile struct {
	Model        string   `json:"model"`
	SoC          string   `json:"soc"`
	Arch         string   `json:"arch"`
	MemoryBytes  uint64   `json:"memory_bytes"`
	CPUCores     uint32   `json:"cpu_cores"`
	Accelerators []string `json:"accelerators"`
	OS           string   `json:"os"`
	Kernel       string   `json:"kernel"`
}

// Accelerator names.
const (
	NvidiaGPU     = "nvidia-gpu"
	GoogleEdgeTPU = "google-edgetpu"
)

// maxFile bounds every read: these files are small, and a hostile or broken
// /proc entry must not make the agent allocate without limit.
const maxFile = 1 << 20

// Detect reads the profile of the system mounted at root.
func Detect(root string) Profile {
	r := reader{root: root}
	cpu := ParseCPUInfo(r.read("proc/cpuinfo"))
	dtModel := cleanDT(r.read("proc/device-tree/model"))
	compatible := ParseCompatible(r.read("proc/device-tree/compatible"))

	p := Profile{
		Model:        dtModel,
		Arch:         r.arch(),
		MemoryBytes:  ParseMemTotal(r.read("proc/meminfo")),
		Accelerators: r.accelerators(compatible),
		OS:           ParseOSRelease(r.readFirst("etc/os-release", "usr/lib/os-release"))["PRETTY_NAME"],
		Kernel:       strings.TrimSpace(string(r.read("proc/sys/kernel/osrelease"))),
	}
	if p.Model == "" {
		p.Model = r.dmiModel()
	}
	switch {
	case len(compatible) > 0:
		// The last compatible string names the SoC ("brcm,bcm2711",
		// "nvidia,tegra234"); the first names the board.
		p.SoC = compatible[len(compatible)-1]
	case cpu.Hardware != "":
		p.SoC = cpu.Hardware
	default:
		// No device tree (x86): the CPU model is the closest thing.
		p.SoC = cpu.ModelName
	}
	if n, ok := ParseCPURange(strings.TrimSpace(string(r.read("sys/devices/system/cpu/online")))); ok {
		p.CPUCores = n
	} else if cpu.Processors > 0 {
		p.CPUCores = cpu.Processors
	}
	if p.Accelerators == nil {
		p.Accelerators = []string{}
	}
	p.Model, p.SoC, p.OS, p.Kernel = bounded(p.Model), bounded(p.SoC), bounded(p.OS), bounded(p.Kernel)
	return p
}

type reader struct{ root string }

func (r reader) path(rel string) string { return filepath.Join(r.root, filepath.FromSlash(rel)) }

func (r reader) read(rel string) []byte {
	f, err := os.Open(r.path(rel))
	if err != nil {
		return nil
	}
	defer f.Close()
	b, _ := io.ReadAll(io.LimitReader(f, maxFile))
	return b
}

func (r reader) readFirst(rels ...string) []byte {
	for _, rel := range rels {
		if b := r.read(rel); b != nil {
			return b
		}
	}
	return nil
}

func (r reader) exists(rel string) bool {
	_, err := os.Lstat(r.path(rel))
	return err == nil
}

func (r reader) glob(pattern string) bool {
	m, _ := filepath.Glob(r.path(pattern))
	return len(m) > 0
}

// arch prefers the kernel's view (/proc/sys/kernel/arch) and falls back to
// the architecture this binary was built for.
func (r reader) arch() string {
	switch a := strings.TrimSpace(string(r.read("proc/sys/kernel/arch"))); a {
	case "x86_64":
		return "amd64"
	case "aarch64", "arm64":
		return "arm64"
	case "armv7l", "armv6l":
		return "arm"
	case "riscv64":
		return "riscv64"
	case "":
		return runtime.GOARCH
	default:
		return a
	}
}

// placeholders are what firmware vendors leave in DMI fields.
var placeholders = []string{"", "to be filled by o.e.m.", "default string", "system product name", "system manufacturer", "not specified", "none"}

func (r reader) dmiModel() string {
	clean := func(b []byte) string {
		s := strings.TrimSpace(string(b))
		if slices.Contains(placeholders, strings.ToLower(s)) {
			return ""
		}
		return s
	}
	vendor := clean(r.read("sys/class/dmi/id/sys_vendor"))
	product := clean(r.read("sys/class/dmi/id/product_name"))
	switch {
	case product == "":
		return ""
	case vendor == "" || strings.HasPrefix(strings.ToLower(product), strings.ToLower(vendor)):
		return product
	default:
		return vendor + " " + product
	}
}

func (r reader) accelerators(compatible []string) []string {
	var acc []string
	nvidia := r.glob("dev/nvidia[0-9]*") || r.exists("proc/driver/nvidia/gpus")
	for _, c := range compatible {
		// Jetson modules: the integrated GPU has no /dev/nvidiaN node.
		if strings.HasPrefix(c, "nvidia,tegra") {
			nvidia = true
		}
	}
	if nvidia {
		acc = append(acc, NvidiaGPU)
	}
	if r.glob("dev/apex_[0-9]*") || r.nonEmptyDir("sys/class/apex") {
		acc = append(acc, GoogleEdgeTPU)
	}
	return acc
}

func (r reader) nonEmptyDir(rel string) bool {
	entries, err := os.ReadDir(r.path(rel))
	return err == nil && len(entries) > 0
}

// cleanDT trims the NUL terminator and whitespace of a device-tree string.
func cleanDT(b []byte) string {
	b, _, _ = bytes.Cut(b, []byte{0})
	return strings.TrimSpace(string(b))
}
