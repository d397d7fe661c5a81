package e2e

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/meshanics/meshanics/internal/testenv"
)

// The systemd test image: a minimal Debian root filesystem made with
// debootstrap from the Debian mirror this machine's apt already uses,
// imported into Docker with `docker import` (no registry is involved). It is
// tagged by a content key (suite, mirror, package set, arch, recipe
// version), so a rerun on the same machine reuses it.
const (
	sysdImageRepo     = "meshanics-systemd-test"
	sysdImageRecipe   = "v1"
	sysdImageInclude  = "systemd,systemd-sysv,dbus,ca-certificates,curl,sudo"
	sysdContainerWait = 90 * time.Second
)

// debianSource is the first plain (not -security, -updates or -backports)
// Debian suite in apt's sources, or MESHANICS_TEST_DEBIAN_MIRROR /
// MESHANICS_TEST_DEBIAN_SUITE when set.
func debianSource() (mirror, suite string, err error) {
	mirror, suite = os.Getenv("MESHANICS_TEST_DEBIAN_MIRROR"), os.Getenv("MESHANICS_TEST_DEBIAN_SUITE")
	if mirror != "" && suite != "" {
		return mirror, suite, nil
	}
	files, _ := filepath.Glob("/etc/apt/sources.list.d/*")
	files = append([]string{"/etc/apt/sources.list"}, files...)
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		m, s := parseAptSources(string(b), strings.HasSuffix(f, ".sources"))
		if m != "" && s != "" {
			if mirror == "" {
				mirror = m
			}
			if suite == "" {
				suite = s
			}
			return mirror, suite, nil
		}
	}
	return "", "", fmt.Errorf("no Debian mirror in /etc/apt/sources.list*: set MESHANICS_TEST_DEBIAN_MIRROR and MESHANICS_TEST_DEBIAN_SUITE")
}

// parseAptSources reads one-line ("deb URI SUITE COMP…") or deb822
// (Types:/URIs:/Suites:) sources and returns a Debian mirror and its base
// suite, judged by the archive keyring and the path ending in /debian.
func parseAptSources(text string, deb822 bool) (mirror, suite string) {
	plainSuite := func(s string) bool {
		return s != "" && !strings.ContainsAny(s, "-/") && !strings.Contains(s, "security")
	}
	debianURI := func(u string) bool {
		u = strings.TrimSuffix(u, "/")
		return (strings.HasPrefix(u, "http://") || strings.HasPrefix(u, "https://")) && strings.HasSuffix(u, "/debian")
	}
	if !deb822 {
		sc := bufio.NewScanner(strings.NewReader(text))
		for sc.Scan() {
			f := strings.Fields(sc.Text())
			if len(f) < 3 || f[0] != "deb" {
				continue
			}
			i := 1
			if strings.HasPrefix(f[i], "[") { // [options]
				for i < len(f) && !strings.HasSuffix(f[i], "]") {
					i++
				}
				i++
			}
			if i+1 < len(f) && debianURI(f[i]) && plainSuite(f[i+1]) {
				return f[i], f[i+1]
			}
		}
		return "", ""
	}
	for _, stanza := range strings.Split(text, "\n\n") {
		var types, uris, suites []string
		sc := bufio.NewScanner(strings.NewReader(stanza))
		for sc.Scan() {
			k, v, ok := strings.Cut(sc.Text(), ":")
			if !ok || strings.HasPrefix(k, "#") {
				continue
			}
			switch strings.TrimSpace(k) {
			case "Types":
				types = strings.Fields(v)
			case "URIs":
				uris = strings.Fields(v)
			case "Suites":
				suites = strings.Fields(v)
			}
		}
		if !slices.Contains(types, "deb") {
			continue
		}
		for _, u := range uris {
			if !debianURI(u) {
				continue
			}
			for _, s := range suites {
				if plainSuite(s) {
					return u, s
				}
			}
		}
	}
	return "", ""
}

// docker runs the docker CLI with a deadline and returns stdout; stderr is
// part of the error.
func docker(ctx context.Context, stdin []byte, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "docker", args...)
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		return out.String(), fmt.Errorf("docker %s: %v: %s%s", strings.Join(args[:min(len(args), 3)], " "), err, errb.String(), lastLines(out.String(), 20))
	}
	return out.String(), nil
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// systemdImage returns the tag of the systemd test image, building it
// (debootstrap + docker import, about 2 minutes) when this machine lacks
// it. It skips (fails under MESHANICS_TEST_REQUIRE_ALL=1) without Docker,
// debootstrap or root.
func systemdImage(t *testing.T) string {
	t.Helper()
	_, err := exec.LookPath("docker")
	testenv.Need(t, err == nil, "docker CLI (systemd test image)")
	_, err = docker(context.Background(), nil, "version", "--format", "{{.Server.Version}}")
	testenv.Need(t, err == nil, fmt.Sprintf("a running Docker engine (systemd test image): %v", err))
	mirror, suite, err := debianSource()
	testenv.Need(t, err == nil, fmt.Sprintf("a Debian mirror for debootstrap: %v", err))
	key := sha256.Sum256([]byte(strings.Join([]string{sysdImageRecipe, suite, mirror, "minbase", sysdImageInclude, runtime.GOARCH}, "\n")))
	tag := sysdImageRepo + ":" + hex.EncodeToString(key[:6])
	if _, err := docker(context.Background(), nil, "image", "inspect", "--format", "{{.Id}}", tag); err == nil {
		t.Logf("systemd image %s (cached; %s %s)", tag, suite, mirror)
		return tag
	}

	debootstrap, err := exec.LookPath("debootstrap")
	if err != nil {
		debootstrap, err = exec.LookPath("/usr/sbin/debootstrap")
	}
	testenv.Need(t, err == nil, "debootstrap (apt-get install debootstrap) to build the systemd test image")
	testenv.Need(t, os.Geteuid() == 0, "root to run debootstrap for the systemd test image")
	start := time.Now()
	dir, err := os.MkdirTemp("", "meshanics-sysd-rootfs-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	root := filepath.Join(dir, "root")
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, debootstrap, "--variant=minbase", "--include="+sysdImageInclude, suite, root, mirror)
	var logBuf bytes.Buffer
	cmd.Stdout, cmd.Stderr = &logBuf, &logBuf
	if err := cmd.Run(); err != nil {
		t.Fatalf("debootstrap %s %s: %v\n%s", suite, mirror, err, lastLines(logBuf.String(), 40))
	}
	// Apt caches are not needed in the image.
	for _, p := range []string{"var/cache/apt/archives", "var/lib/apt/lists"} {
		ents, _ := os.ReadDir(filepath.Join(root, p))
		for _, e := range ents {
			if e.Type().IsRegular() {
				os.Remove(filepath.Join(root, p, e.Name()))
			}
		}
	}
	tar := exec.CommandContext(ctx, "tar", "-C", root, "--numeric-owner", "-c", ".")
	imp := exec.CommandContext(ctx, "docker", "import", "--change", `CMD ["/sbin/init"]`, "-", tag)
	pipe, err := tar.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	imp.Stdin = pipe
	var impOut bytes.Buffer
	imp.Stdout, imp.Stderr = &impOut, &impOut
	var tarErr bytes.Buffer
	tar.Stderr = &tarErr
	if err := tar.Start(); err != nil {
		t.Fatal(err)
	}
	if err := imp.Run(); err != nil {
		t.Fatalf("docker import: %v\n%s", err, impOut.String())
	}
	if err := tar.Wait(); err != nil {
		t.Fatalf("tar of the root filesystem: %v\n%s", err, tarErr.String())
	}
	t.Logf("built systemd image %s from %s %s in %s", tag, suite, mirror, time.Since(start).Round(time.Second))
	return tag
}

// sysdContainer is a running container with systemd as PID 1 and no
// network but its own loopback: the server, meshctl and the agent all
// talk over 127.0.0.1 inside it.
type sysdContainer struct {
	name string
}

// startSystemdContainer boots image with the flags systemd needs in a
// container (cgroup tree, tmpfs /run, SIGRTMIN+3 to stop) and mounts
// hostDir read-only at /mt. It waits until the system is up.
func startSystemdContainer(t *testing.T, image, hostDir string) *sysdContainer {
	t.Helper()
	removeStaleContainers(t)
	var b [6]byte
	_, _ = rand.Read(b[:])
	c := &sysdContainer{name: "meshanics-sysd-" + hex.EncodeToString(b[:])}
	args := []string{"run", "-d", "--name", c.name, "--hostname", "sd-host",
		"--label", "meshanics-test=systemd",
		"--network", "none",
		// systemd needs to mount (sandboxing namespaces, /run); --privileged
		// is not needed and fails where the engine lacks some capability.
		"--cap-add", "SYS_ADMIN",
		"--security-opt", "seccomp=unconfined", "--security-opt", "apparmor=unconfined",
		"--cgroupns=host", "-v", "/sys/fs/cgroup:/sys/fs/cgroup:rw",
		"--tmpfs", "/run:exec,mode=755", "--tmpfs", "/run/lock",
		"--stop-signal", "SIGRTMIN+3", "-e", "container=docker",
		"-v", hostDir + ":/mt:ro",
		image, "/sbin/init"}
	if _, err := docker(context.Background(), nil, args...); err != nil {
		t.Fatalf("start systemd container: %v", err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			out, _ := c.exec(context.Background(), "journalctl", "--no-pager", "-n", "150")
			t.Logf("container journal (last lines):\n%s", out)
		}
		_, _ = docker(context.Background(), nil, "rm", "-f", "-v", c.name)
	})
	deadline := time.Now().Add(sysdContainerWait)
	var last string
	for time.Now().Before(deadline) {
		out, _ := c.exec(context.Background(), "systemctl", "is-system-running", "--wait")
		last = strings.TrimSpace(out)
		if last == "running" || last == "degraded" {
			if last == "degraded" {
				failed, _ := c.exec(context.Background(), "systemctl", "--failed", "--no-legend")
				t.Logf("systemd is up, degraded: %s", failed)
			}
			return c
		}
		time.Sleep(300 * time.Millisecond)
	}
	logs, _ := docker(context.Background(), nil, "logs", c.name)
	t.Fatalf("systemd did not come up in the container (last state %q)\n%s", last, lastLines(logs, 30))
	return nil
}

// exec runs argv in the container (no shell unless argv is one) and
// returns combined output.
func (c *sysdContainer) exec(ctx context.Context, argv ...string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "docker", append([]string{"exec", c.name}, argv...)...)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// stdout runs argv in the container and returns its standard output only,
// failing the test (with stderr) on a non-zero exit.
func (c *sysdContainer) stdout(t *testing.T, argv ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "docker", append([]string{"exec", c.name}, argv...)...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		t.Fatalf("in container: %s: %v\n%s%s", strings.Join(argv, " "), err, errb.String(), out.String())
	}
	return out.String()
}

// must runs argv and fails the test on a non-zero exit.
func (c *sysdContainer) must(t *testing.T, argv ...string) string {
	t.Helper()
	out, err := c.exec(context.Background(), argv...)
	if err != nil {
		t.Fatalf("in container: %s: %v\n%s", strings.Join(argv, " "), err, out)
	}
	return out
}

// show returns `systemctl show -p …` of unit as a map.
func (c *sysdContainer) show(t *testing.T, unit string, props ...string) map[string]string {
	t.Helper()
	out := c.must(t, "systemctl", "show", unit, "-p", strings.Join(props, ","))
	m := map[string]string{}
	for _, line := range strings.Split(out, "\n") {
		if k, v, ok := strings.Cut(line, "="); ok {
			m[k] = v
		}
	}
	return m
}

// buildStatic builds pkg as a static linux binary (the image has its own
// libc) with the version stamped.
func buildStatic(t *testing.T, dir, pkg, out, version string) string {
	t.Helper()
	root, err := moduleRoot()
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, out)
	cmd := exec.Command("go", "build", "-trimpath",
		"-ldflags", "-X github.com/meshanics/meshanics/internal/buildinfo.Version="+version, "-o", path, pkg)
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build %s: %v\n%s", pkg, err, b)
	}
	return path
}

// removeStaleContainers removes systemd test containers left behind by a
// test binary that was killed (its cleanup never ran): those of this test's
// label created more than an hour ago, so a run in progress is never hit.
func removeStaleContainers(t *testing.T) {
	out, err := docker(context.Background(), nil, "ps", "-a", "--filter", "label=meshanics-test=systemd",
		"--format", "{{.ID}}\t{{.CreatedAt}}")
	if err != nil {
		return
	}
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		id, created, ok := strings.Cut(line, "\t")
		if !ok {
			continue
		}
		// "2006-01-02 15:04:05 -0700 MST"
		at, err := time.Parse("2006-01-02 15:04:05 -0700 MST", created)
		if err != nil || time.Since(at) < time.Hour {
			continue
		}
		if _, err := docker(context.Background(), nil, "rm", "-f", "-v", id); err == nil {
			t.Logf("removed stale systemd test container %s (created %s)", id, created)
		}
	}
}

func TestParseAptSources(t *testing.T) {
	for _, tc := range []struct {
		text          string
		deb822        bool
		mirror, suite string
	}{
		{"deb http://mirror.test/debian-security bookworm-security main\ndeb [arch=amd64 signed-by=/k.gpg] http://mirror.test/debian bookworm main\n", false, "http://mirror.test/debian", "bookworm"},
		{"deb https://apt.vendor.test/apt stable main\n", false, "", ""},
		{"Types: deb\nURIs: http://mirror.test/debian\nSuites: bookworm bookworm-updates\nComponents: main\n\nTypes: deb\nURIs: http://mirror.test/debian-security\nSuites: bookworm-security\n", true, "http://mirror.test/debian", "bookworm"},
		{"Types: deb-src\nURIs: http://mirror.test/debian\nSuites: bookworm\n", true, "", ""},
		{"Types: deb\nURIs: http://mirror.test/debian\nSuites: bookworm-updates\n", true, "", ""},
	} {
		m, s := parseAptSources(tc.text, tc.deb822)
		if m != tc.mirror || s != tc.suite {
			t.Errorf("parseAptSources(%q) = %q, %q; want %q, %q", tc.text, m, s, tc.mirror, tc.suite)
		}
	}
}
