package reconcile

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/meshanics/meshanics/internal/agent/apply/container"
	"github.com/meshanics/meshanics/internal/agent/apply/container/containertest"
	"github.com/meshanics/meshanics/internal/agent/execx"
	"github.com/meshanics/meshanics/internal/agent/probe"
	"github.com/meshanics/meshanics/internal/artifact"
	"github.com/meshanics/meshanics/internal/testenv"
	devicev1 "github.com/meshanics/meshanics/proto/meshanics/device/v1"
)

// TestContainerRollsBackToPreviousDigest runs the real Docker engine: v1
// becomes healthy, v2 (same program, HEALTH=fail baked in) fails its probe
// and v1's digest runs again. (An agent SIGKILLed mid-update and restarted:
// TestContainerCrashAtEveryBoundaryConverges.)
func TestContainerRollsBackToPreviousDigest(t *testing.T) {
	docker, ok := containertest.Docker()
	testenv.Need(t, ok, "docker engine")
	reg := containertest.NewRegistry(t)
	bin := containertest.HealthServer(t)
	good := reg.HealthImage(t, "meshanics-test/health", bin, "ok")
	bad := reg.HealthImage(t, "meshanics-test/health", bin, "fail")

	var rnd [4]byte
	rand.Read(rnd[:])
	name := "ct-" + hex.EncodeToString(rnd[:])
	port := freePort(t)
	runDocker := func(args ...string) string {
		res, _ := execx.Run(context.Background(), execx.Cmd{Path: docker, Args: args, Timeout: time.Minute})
		return strings.TrimSpace(string(res.Stdout))
	}
	t.Cleanup(func() {
		runDocker("rm", "--force", "meshanics-"+name)
		runDocker("rmi", "--force", good, bad)
	})

	e := newEnv(t)
	e.opts.Appliers["container"] = &container.Applier{Bin: docker}
	e.opts.Prober = probe.New(nil) // real delays: the container needs a moment
	spec := func(image string) artifact.Custom {
		return artifact.Custom{Container: &artifact.ContainerSpec{Image: image, Env: map[string]string{"GREETING": "hello"},
			Ports: []artifact.PortMapping{{Host: port, Container: 8080}}}}
	}
	publish := func(version, image string) *devicev1.Artifact {
		return e.repo.publish("container", name, version, "container.json", []byte(`{"image":"`+image+`"}`), spec(image))
	}
	url := fmt.Sprintf("http://127.0.0.1:%d/healthz", port)
	probeFor := func(attempts uint32) *devicev1.HealthProbe {
		return &devicev1.HealthProbe{Type: "http", Target: url, Attempts: attempts, IntervalSeconds: 2, TimeoutSeconds: 2}
	}
	running := func() string {
		return runDocker("container", "inspect", "--format", `{{.Config.Image}} {{index .Config.Labels "io.meshanics.version"}} {{.HostConfig.RestartPolicy.Name}}`, "meshanics-"+name)
	}

	r := e.start(t)
	r.Reconcile(ctx, []*devicev1.Assignment{apply("c1", publish("1", good), probeFor(10))})
	if got := e.rep.last("c1"); got != "healthy" {
		t.Fatalf("v1 ended %q: %v", got, e.rep.got)
	}
	if got, want := running(), good+" 1 unless-stopped"; got != want {
		t.Errorf("running = %q, want %q", got, want)
	}
	if body := get(t, url); body != "hello" {
		t.Errorf("GET /healthz = %q, want the descriptor's env", body)
	}

	r.Reconcile(ctx, []*devicev1.Assignment{apply("c2", publish("2", bad), probeFor(1))})
	if got := e.rep.last("c2"); got != "rolled_back" {
		t.Fatalf("v2 ended %q: %v", got, e.rep.got)
	}
	if got, want := running(), good+" 1 unless-stopped"; got != want {
		t.Errorf("after rollback running = %q, want %q", got, want)
	}
	if out := runDocker("image", "inspect", "--format", "{{.Id}}", bad); out != "" {
		t.Error("the image of the rolled-back version was kept")
	}
	if out := runDocker("image", "inspect", "--format", "{{.Id}}", good); out == "" {
		t.Error("the image of the running version was removed")
	}
}

func freePort(t *testing.T) int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// get retries briefly: the container may still be starting.
func get(t *testing.T, url string) string {
	var last error
	for i := 0; i < 30; i++ {
		resp, err := http.Get(url)
		if err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return string(b)
			}
			last = fmt.Errorf("status %d", resp.StatusCode)
		} else {
			last = err
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Errorf("GET %s: %v", url, last)
	return ""
}
