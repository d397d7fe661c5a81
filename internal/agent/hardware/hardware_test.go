package hardware

import (
	"encoding/json"
	"os"
	"path/filepath"
	"runtime"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestDetectFixtures(t *testing.T) {
	tests := []struct {
		root string
		want Profile
	}{
		{"testdata/x86-server", Profile{
			Model: "Dell Inc. PowerEdge R640", SoC: "Intel(R) Xeon(R) Gold 6230 CPU @ 2.10GHz", Arch: "amd64",
			MemoryBytes: 196608000 * 1024, CPUCores: 40, Accelerators: []string{NvidiaGPU},
			OS: "Debian GNU/Linux 12 (bookworm)", Kernel: "6.1.0-26-amd64",
		}},
		{"testdata/rpi-cm4", Profile{
			Model: "Raspberry Pi Compute Module 4 Rev 1.0", SoC: "brcm,bcm2711", Arch: "arm64",
			MemoryBytes: 8245628 * 1024, CPUCores: 4, Accelerators: []string{GoogleEdgeTPU},
			OS: "Debian GNU/Linux 12 (bookworm)", Kernel: "6.6.51+rpt-rpi-v8",
		}},
		{"testdata/jetson-orin", Profile{
			Model: "NVIDIA Jetson AGX Orin Developer Kit", SoC: "nvidia,tegra234", Arch: runtime.GOARCH,
			MemoryBytes: 63862460 * 1024, CPUCores: 12, Accelerators: []string{NvidiaGPU},
			OS: "Ubuntu 22.04.4 LTS", Kernel: "5.15.136-tegra",
		}},
	}
	for _, tt := range tests {
		t.Run(filepath.Base(tt.root), func(t *testing.T) {
			if diff := cmp.Diff(tt.want, Detect(tt.root)); diff != "" {
				t.Errorf("Detect(%s) mismatch (-want +got):\n%s", tt.root, diff)
			}
		})
	}
}

func TestDetectEmptyRootGivesEmptyFieldsNotNull(t *testing.T) {
	p := Detect(t.TempDir())
	b, err := json.Marshal(p)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"model", "soc", "arch", "memory_bytes", "cpu_cores", "accelerators", "os", "kernel"} {
		if _, ok := m[k]; !ok {
			t.Errorf("JSON %s lacks key %q", b, k)
		}
	}
	if m["accelerators"] == nil {
		t.Errorf("accelerators = null, want []")
	}
}

func TestDetectCPUCountFallsBackToCPUInfo(t *testing.T) {
	root := t.TempDir()
	if err := os.MkdirAll(filepath.Join(root, "proc"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "proc/cpuinfo"), []byte("processor : 0\nHardware : BCM2835\n\nprocessor : 1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	p := Detect(root)
	if p.CPUCores != 2 || p.SoC != "BCM2835" {
		t.Errorf("Detect() cores, soc = %d, %q; want 2, BCM2835", p.CPUCores, p.SoC)
	}
}

func TestDetectThisMachine(t *testing.T) {
	p := Detect("/")
	if p.Arch != runtime.GOARCH && p.Arch == "" {
		t.Errorf("Detect(/).Arch = %q", p.Arch)
	}
	if _, err := os.Stat("/proc/meminfo"); err == nil && p.MemoryBytes == 0 {
		t.Errorf("Detect(/).MemoryBytes = 0 with /proc/meminfo present")
	}
}

func TestParseCPURange(t *testing.T) {
	tests := []struct {
		in   string
		want uint32
		ok   bool
	}{
		{"0", 1, true}, {"0-3", 4, true}, {"0-3,6,8-9", 7, true},
		{"", 0, false}, {"3-1", 0, false}, {"a", 0, false}, {"0-99999", 0, false},
	}
	for _, tt := range tests {
		got, ok := ParseCPURange(tt.in)
		if got != tt.want || ok != tt.ok {
			t.Errorf("ParseCPURange(%q) = %d, %v; want %d, %v", tt.in, got, ok, tt.want, tt.ok)
		}
	}
}

func TestParseOSReleaseQuoting(t *testing.T) {
	m := ParseOSRelease([]byte("# c\nPRETTY_NAME=\"A \\\"B\\\" C\"\nNAME='x y'\nID=plain\nbroken\n"))
	want := map[string]string{"PRETTY_NAME": `A "B" C`, "NAME": "x y", "ID": "plain"}
	if diff := cmp.Diff(want, m); diff != "" {
		t.Errorf("ParseOSRelease mismatch (-want +got):\n%s", diff)
	}
}
