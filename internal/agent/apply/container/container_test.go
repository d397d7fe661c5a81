package container

import (
	"errors"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/meshanics/meshanics/internal/agent/statefile"
	"github.com/meshanics/meshanics/internal/artifact"
	"github.com/meshanics/meshanics/internal/errdefs"
)

func TestRunArgs(t *testing.T) {
	img := "registry.example/app@sha256:" + "ab0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcd"[:64]
	art := &statefile.Artifact{Kind: "container", Name: "web", Version: "3", Container: &artifact.ContainerSpec{
		Image: img, Env: map[string]string{"B": "2", "A": "x y; rm -rf /"},
		Ports: []artifact.PortMapping{{Host: 8080, Container: 80}, {Host: 5353, Container: 53, Protocol: "udp"}},
		Args:  []string{"--serve"},
	}}
	want := []string{"run", "--detach", "--pull=never", "--name", "meshanics-web", "--restart", "unless-stopped",
		"--security-opt", "no-new-privileges", "--label", "io.meshanics.slot=web", "--label", "io.meshanics.version=3",
		"--env", "A=x y; rm -rf /", "--env", "B=2",
		"--publish", "127.0.0.1:8080:80/tcp", "--publish", "127.0.0.1:5353:53/udp", img, "--serve"}
	if d := cmp.Diff(want, RunArgs(art)); d != "" {
		t.Errorf("RunArgs (-want +got):\n%s", d)
	}
	art.Container.Name = "edge"
	if got := Name(art); got != "meshanics-edge" {
		t.Errorf("Name = %q, want meshanics-edge", got)
	}
}

func TestSelect(t *testing.T) {
	if _, err := Select("none"); !errors.Is(err, ErrNoRuntime) {
		t.Errorf("Select(none) = %v, want ErrNoRuntime", err)
	}
	for _, bad := range []string{"docker-ce", "bin/docker", "/bin/sh", "/usr/../usr/bin/docker"} {
		if _, err := Select(bad); err == nil {
			t.Errorf("Select(%q) = nil error", bad)
		}
	}
	if p, err := Select("auto"); err == nil && p[0] != '/' {
		t.Errorf("Select(auto) = %q, want an absolute path", p)
	}
}

func TestCheckRefusesTags(t *testing.T) {
	a := &Applier{Bin: "/usr/bin/docker"}
	art := &statefile.Artifact{Name: "web", Container: &artifact.ContainerSpec{Image: "nginx:latest"}}
	if err := a.Check(art); !errors.Is(err, errdefs.ErrInvalid) {
		t.Errorf("Check(tag) = %v, want ErrInvalid", err)
	}
}
