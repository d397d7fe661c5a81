package reconcile

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/meshanics/meshanics/internal/agent/apply/container"
	"github.com/meshanics/meshanics/internal/agent/apply/container/containertest"
	"github.com/meshanics/meshanics/internal/agent/execx"
	"github.com/meshanics/meshanics/internal/agent/probe"
	"github.com/meshanics/meshanics/internal/agent/statefile"
	"github.com/meshanics/meshanics/internal/artifact"
	"github.com/meshanics/meshanics/internal/testenv"
	devicev1 "github.com/meshanics/meshanics/proto/meshanics/device/v1"
)

// The container crash tests kill a separate agent process (the helper of
// crash_test.go) with SIGKILL at every boundary of a container update, on
// the real Docker engine, and check that a restarted agent converges from
// the journal alone: the managed container runs the digest the journal
// says, the previous image is kept, nothing else is left running.

// ctFixture is shared by the boundaries of one container crash test: the
// engine, the in-test registry (which lives in the test process, so the
// helper processes' pulls reach it through the engine) and the compiled
// health server.
var ctFixture struct {
	docker string
	reg    *containertest.Registry
	bin    []byte
}

// ctSetup is one device's container scenario, written to <root>/ct.json
// for the helper processes and the final check.
type ctSetup struct {
	Docker string `json:"docker"`
	Name   string `json:"name"`   // artifact name: the container is meshanics-<name>
	Port   int    `json:"port"`   // loopback host port of the health endpoint
	Image1 string `json:"image1"` // healthy
	Image2 string `json:"image2"` // healthy, or failing its probe (VARIANT=fail)
}

func TestContainerCrashAtEveryBoundaryConverges(t *testing.T) {
	if testing.Short() {
		t.Skip("spawns many processes and containers")
	}
	docker, ok := containertest.Docker()
	testenv.Need(t, ok, "docker engine")
	ctFixture.docker, ctFixture.reg, ctFixture.bin = docker, containertest.NewRegistry(t), containertest.HealthServer(t)
	// A failed probe rolls back to the previous digest; a revert restarts
	// the previous digest. The boundaries of a healthy update are those of
	// a failed one up to the probe, and its end is the model's and the
	// config's. Before the pull no container is touched: a restart there
	// redoes the download whatever the kind, which the model and config
	// cases cover; the engine is slow on a small machine, so those
	// boundaries are left out here.
	ctBatch = &ctCleanup{}
	t.Cleanup(ctBatch.run)
	crashEveryBoundary(t, "container", []string{"fail", "revert"},
		[]string{"saved:new", "mid:fetch", "did:fetch", "saved:verifying", "did:stage"}, 4)
}

// newContainerSetup gives the device at root its own container name, port
// and images (salted, so that one device removing a forgotten image never
// takes another's), removed when t ends.
func newContainerSetup(t *testing.T, root, variant string) {
	t.Helper()
	if ctFixture.reg == nil {
		t.Fatal("container fixture not set up")
	}
	var rnd [6]byte
	rand.Read(rnd[:])
	salt := hex.EncodeToString(rnd[:])
	health2 := "ok"
	if variant == "fail" {
		health2 = "fail"
	}
	s := ctSetup{Docker: ctFixture.docker, Name: "crash-" + salt, Port: ctBatch.port(t),
		Image1: ctFixture.reg.HealthImageSalted(t, "meshanics-test/crash", ctFixture.bin, "ok", salt+"-1"),
		Image2: ctFixture.reg.HealthImageSalted(t, "meshanics-test/crash", ctFixture.bin, health2, salt+"-2")}
	b, _ := json.Marshal(s)
	if err := os.WriteFile(filepath.Join(root, "ct.json"), b, 0o600); err != nil {
		t.Fatal(err)
	}
	ctBatch.add("meshanics-"+s.Name, s.Image1, s.Image2)
}

// ctCleanup removes every device's container and images at the end, in
// two engine calls rather than two per device.
type ctCleanup struct {
	mu                 sync.Mutex
	containers, images []string
	ports              map[int]bool
}

// port is a free loopback port no other device of this test was given
// (the kernel may hand a just-released port out again).
func (c *ctCleanup) port(t *testing.T) int {
	for {
		p := freePort(t)
		c.mu.Lock()
		taken := c.ports[p]
		if !taken {
			if c.ports == nil {
				c.ports = map[int]bool{}
			}
			c.ports[p] = true
		}
		c.mu.Unlock()
		if !taken {
			return p
		}
	}
}

var ctBatch *ctCleanup

func (c *ctCleanup) add(container string, images ...string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.containers = append(c.containers, container)
	c.images = append(c.images, images...)
}

func (c *ctCleanup) run() {
	if len(c.containers) > 0 {
		dockerOut(ctFixture.docker, append([]string{"rm", "--force"}, c.containers...)...)
		dockerOut(ctFixture.docker, append([]string{"rmi", "--force"}, c.images...)...)
	}
}

func loadContainerSetup(root string) (ctSetup, error) {
	var s ctSetup
	b, err := os.ReadFile(filepath.Join(root, "ct.json"))
	if err != nil {
		return s, err
	}
	return s, json.Unmarshal(b, &s)
}

func dockerOut(docker string, args ...string) string {
	res, _ := execx.Run(context.Background(), execx.Cmd{Path: docker, Args: args, Timeout: time.Minute})
	return strings.TrimSpace(string(res.Stdout))
}

// withContainer gives the helper's device the real container applier and a
// prober that really waits between attempts (a container needs a moment
// before it answers).
func (e *env) withContainer(root string) error {
	s, err := loadContainerSetup(root)
	if err != nil {
		return err
	}
	e.opts.Appliers["container"] = &container.Applier{Bin: s.Docker, Crashpoint: e.opts.Crashpoint}
	e.opts.Prober = probe.New(nil)
	return nil
}

// containerScenario is v1 then v2 of one container artifact; in
// VARIANT=fail v2's image answers its health check with 500.
func containerScenario(e *env, variant string) []*devicev1.Assignment {
	s, err := loadContainerSetup(filepath.Dir(e.data))
	if err != nil {
		panic(err)
	}
	publish := func(version, image string) *devicev1.Artifact {
		spec := &artifact.ContainerSpec{Image: image, Env: map[string]string{"GREETING": "hello"},
			Ports: []artifact.PortMapping{{Host: s.Port, Container: 8080}}}
		return e.repo.publish("container", s.Name, version, "container.json", []byte(`{"image":"`+image+`"}`), artifact.Custom{Container: spec})
	}
	probeFor := func(attempts uint32) *devicev1.HealthProbe {
		return &devicev1.HealthProbe{Type: "http", Target: fmt.Sprintf("http://127.0.0.1:%d/healthz", s.Port),
			Attempts: attempts, IntervalSeconds: 1, TimeoutSeconds: 2}
	}
	v1, v2 := publish("1", s.Image1), publish("2", s.Image2)
	p2 := probeFor(10)
	if variant == "fail" {
		p2 = probeFor(1) // fails at once: 500, or nothing listening yet
	}
	rv := &devicev1.Assignment{Id: "rv", Action: "revert", Artifact: v2, RevertTo: v1}
	return []*devicev1.Assignment{apply("a1", v1, probeFor(10)), apply("a2", v2, p2), rv}
}

// checkContainerConsistent: nothing in flight, the one managed container
// runs the version the journal calls current with its digest, env, port
// and restart policy, and the images of current and previous are kept.
func checkContainerConsistent(t *testing.T, root, final string) {
	t.Helper()
	s, err := loadContainerSetup(root)
	if err != nil {
		t.Fatal(err)
	}
	j, err := statefile.LoadJournal(filepath.Join(root, "data", "update", "journal.json"))
	if err != nil {
		t.Fatal(err)
	}
	if len(j.Tasks) != 0 {
		t.Errorf("journal still has tasks in flight: %+v", j.Tasks)
	}
	wantVersion, wantImage := "1", s.Image1
	if final == "healthy" {
		wantVersion, wantImage = "2", s.Image2
	}
	slot := j.Slots[s.Name]
	if slot == nil || slot.Current == nil || slot.Current.Version != wantVersion {
		t.Fatalf("journal slot = %+v, want current %s", slot, wantVersion)
	}
	got := dockerOut(s.Docker, "container", "inspect", "--format",
		`{{.Config.Image}} {{index .Config.Labels "io.meshanics.version"}} {{.State.Running}} {{.HostConfig.RestartPolicy.Name}}`, "meshanics-"+s.Name)
	if want := wantImage + " " + wantVersion + " true unless-stopped"; got != want {
		t.Errorf("managed container = %q, want %q", got, want)
	}
	if n := dockerOut(s.Docker, "ps", "--all", "--quiet", "--filter", "label=io.meshanics.slot="+s.Name); len(strings.Fields(n)) != 1 {
		t.Errorf("%d containers of the slot, want exactly one: %q", len(strings.Fields(n)), n)
	}
	if body := get(t, fmt.Sprintf("http://127.0.0.1:%d/healthz", s.Port)); body != "hello" {
		t.Errorf("GET /healthz = %q, want the descriptor's env", body)
	}
	for _, a := range []*statefile.Artifact{slot.Current, slot.Previous} {
		if a != nil && dockerOut(s.Docker, "image", "inspect", "--format", "{{.Id}}", a.Container.Image) == "" {
			t.Errorf("image of kept version %s was removed", a.Version)
		}
	}
	// A version the slot keeps no longer is pruned, also when the agent
	// died between the outcome and the prune.
	if final == "rolled_back" && slot.Previous == nil && dockerOut(s.Docker, "image", "inspect", "--format", "{{.Id}}", s.Image2) != "" {
		t.Error("image of the rolled-back version 2 was kept")
	}
}
