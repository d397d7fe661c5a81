package reconcile

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/meshanics/meshanics/internal/agent/apply/config"
	"github.com/meshanics/meshanics/internal/agent/statefile"
	devicev1 "github.com/meshanics/meshanics/proto/meshanics/device/v1"
)

// The crash tests run this test binary as a stand-in agent process (the
// helper below) and SIGKILL it at every boundary between a journal write
// and a side effect, then start it again and check that it converges.

func TestMain(m *testing.M) {
	if os.Getenv("MESHANICS_CRASH_HELPER") == "1" {
		os.Exit(crashHelper())
	}
	os.Exit(m.Run())
}

// crashHelper is one agent process: it reconciles one step of a scenario
// (env STEP=v1|v2, KIND=model|config, VARIANT=ok|fail) and kills itself
// with SIGKILL when it reaches the boundary named by CRASH_AT.
func crashHelper() int {
	root := os.Getenv("ROOT")
	e := &env{data: filepath.Join(root, "data"), etc: filepath.Join(root, "etc", "app"), repo: newRepo(), rep: &reports{}, clock: &clock{t: time.Now()}}
	e.withOptions(nil)
	points, err := os.OpenFile(filepath.Join(root, "points.log"), os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	crashAt := os.Getenv("CRASH_AT")
	hit := func(name string) {
		fmt.Fprintln(points, name)
		if name == crashAt {
			syscall.Kill(os.Getpid(), syscall.SIGKILL)
			select {}
		}
	}
	e.opts.Crashpoint = hit
	e.opts.Appliers["config"].(*config.Placer).Crashpoint = hit
	if os.Getenv("KIND") == "container" {
		if err := e.withContainer(root); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 2
		}
	}
	e.repo.midway = func() { hit("mid:fetch") }
	e.opts.Reporter = fileReporter(filepath.Join(root, "reports.log"))
	r, err := New(e.opts)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	as := scenario(e, os.Getenv("KIND"), os.Getenv("VARIANT"))
	want := map[string][]*devicev1.Assignment{"v1": as[:1], "v2": as[1:2], "rv": as[2:]}[os.Getenv("STEP")]
	if err := r.Reconcile(context.Background(), want); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}

// scenario is v1 then v2 of one artifact; v2's probe fails in VARIANT=fail.
func scenario(e *env, kind, variant string) []*devicev1.Assignment {
	if kind == "container" {
		return containerScenario(e, variant)
	}
	var v1, v2 *devicev1.Artifact
	okTarget := filepath.Join(e.data, "artifacts", "det", "current", "model.onnx")
	if kind == "config" {
		dest := filepath.Join(e.etc, "app.conf")
		v1, v2 = configArtifact(e, "1", "x=1", dest, nil), configArtifact(e, "2", "x=2", dest, nil)
		okTarget = dest
	} else {
		v1, v2 = e.repo.model("det", "1", "weights-one"), e.repo.model("det", "2", "weights-two")
	}
	p2 := fileProbe(okTarget)
	if variant == "fail" {
		p2 = fileProbe(filepath.Join(e.data, "no-such-file"))
	}
	rv := &devicev1.Assignment{Id: "rv", Action: "revert", Artifact: v2, RevertTo: v1}
	return []*devicev1.Assignment{apply("a1", v1, fileProbe(okTarget)), apply("a2", v2, p2), rv}
}

type fileReporter string

func (f fileReporter) Report(_ context.Context, id, state, detail string) error {
	fh, err := os.OpenFile(string(f), os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return err
	}
	defer fh.Close()
	_, err = fmt.Fprintf(fh, "%s %s %s\n", id, state, strings.ReplaceAll(detail, "\n", " "))
	return err
}

func runHelper(t *testing.T, root, step, kind, variant, crashAt string) *os.ProcessState {
	t.Helper()
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), "GORACE=atexit_sleep_ms=0", "MESHANICS_CRASH_HELPER=1", "ROOT="+root, "STEP="+step, "KIND="+kind, "VARIANT="+variant, "CRASH_AT="+crashAt)
	out, err := cmd.CombinedOutput()
	if err != nil && crashAt == "" {
		t.Fatalf("helper %s %s %s: %v\n%s", step, kind, variant, err, out)
	}
	return cmd.ProcessState
}

func lines(path string) []string {
	f, err := os.Open(path)
	if err != nil {
		return nil
	}
	defer f.Close()
	var out []string
	s := bufio.NewScanner(f)
	for s.Scan() {
		out = append(out, s.Text())
	}
	return out
}

func newRoot(t *testing.T, kind, variant string) string {
	root := t.TempDir()
	os.MkdirAll(filepath.Join(root, "etc", "app"), 0o755)
	if kind == "container" {
		newContainerSetup(t, root, variant)
	}
	return root
}

func TestCrashAtEveryBoundaryConverges(t *testing.T) {
	if testing.Short() {
		t.Skip("spawns many processes")
	}
	for _, kind := range []string{"model", "config"} {
		crashEveryBoundary(t, kind, []string{"ok", "fail", "revert"}, nil, 0)
	}
}

// crashEveryBoundary runs, for each variant, the step under test once to
// discover its boundaries, then for each boundary a fresh device whose
// agent is SIGKILLed there and restarted, except the boundaries in skip.
// With concurrent > 0 the
// boundaries run that many at a time whatever -parallel says (the
// container cases mostly wait on the Docker engine and on probe intervals).
func crashEveryBoundary(t *testing.T, kind string, variants, skip []string, concurrent int) {
	for _, variant := range variants {
		t.Run(kind+"/"+variant, func(t *testing.T) {
			// Discover the boundaries of the step under test.
			root := newRoot(t, kind, variant)
			for _, s := range prelude(variant) {
				runHelper(t, root, s, kind, variant, "")
			}
			os.Remove(filepath.Join(root, "points.log"))
			runHelper(t, root, stepUnderTest(variant), kind, variant, "")
			var points []string
			for _, p := range lines(filepath.Join(root, "points.log")) {
				if !slices.Contains(points, p) {
					points = append(points, p)
				}
			}
			if len(points) < 4 {
				t.Fatalf("only %d boundaries seen: %v", len(points), points)
			}
			points = slices.DeleteFunc(points, func(p string) bool { return slices.Contains(skip, p) })
			if concurrent <= 0 {
				for _, p := range points {
					t.Run(p, func(t *testing.T) {
						t.Parallel()
						crashAndConverge(t, kind, variant, p)
					})
				}
				return
			}
			var wg sync.WaitGroup
			sem := make(chan struct{}, concurrent)
			for _, p := range points {
				wg.Go(func() {
					sem <- struct{}{}
					defer func() { <-sem }()
					t.Run(p, func(t *testing.T) { crashAndConverge(t, kind, variant, p) })
				})
			}
			wg.Wait()
		})
	}
}

// prelude is what runs, uninterrupted, before the step that gets killed.
func prelude(variant string) []string {
	if variant == "revert" {
		return []string{"v1", "v2"}
	}
	return []string{"v1"}
}

func stepUnderTest(variant string) string {
	if variant == "revert" {
		return "rv"
	}
	return "v2"
}

func crashAndConverge(t *testing.T, kind, variant, point string) {
	root := newRoot(t, kind, variant)
	for _, s := range prelude(variant) {
		runHelper(t, root, s, kind, variant, "")
	}
	step := stepUnderTest(variant)
	st := runHelper(t, root, step, kind, variant, point)
	if ws, ok := st.Sys().(syscall.WaitStatus); !ok || !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
		t.Fatalf("helper was not killed at %s: %v", point, st)
	}
	runHelper(t, root, step, kind, variant, "") // restart: converge
	runHelper(t, root, step, kind, variant, "") // and again: nothing changes
	final := ""
	for _, l := range lines(filepath.Join(root, "reports.log")) {
		if id, rest, _ := strings.Cut(l, " "); id == map[string]string{"v2": "a2", "rv": "rv"}[step] {
			final, _, _ = strings.Cut(rest, " ")
		}
	}
	switch {
	case variant == "revert":
		if final != "reverted" {
			t.Fatalf("revert ended %q, want reverted", final)
		}
		checkConsistent(t, root, kind, "rolled_back") // version 1 runs again
		return
	case variant == "fail" && final != "rolled_back":
		t.Fatalf("a2 ended %q, want rolled_back", final)
	case final != "healthy" && final != "rolled_back":
		t.Fatalf("a2 ended %q, want healthy or rolled_back", final)
	}
	checkConsistent(t, root, kind, final)
}

// checkConsistent: the journal has nothing in flight, what runs matches
// what the journal says, the previous version is intact, and no temp or
// partial file is left anywhere.
func checkConsistent(t *testing.T, root, kind, final string) {
	t.Helper()
	if kind == "container" {
		checkContainerConsistent(t, root, final)
		return
	}
	data := filepath.Join(root, "data")
	j, err := statefile.LoadJournal(filepath.Join(data, "update", "journal.json"))
	if err != nil {
		t.Fatal(err)
	}
	if len(j.Tasks) != 0 {
		t.Errorf("journal still has tasks in flight: %+v", j.Tasks)
	}
	wantVersion, wantContent := "1", map[string]string{"model": "weights-one", "config": "x=1"}[kind]
	if final == "healthy" {
		wantVersion, wantContent = "2", map[string]string{"model": "weights-two", "config": "x=2"}[kind]
	}
	name := map[string]string{"model": "det", "config": "app"}[kind]
	s := j.Slots[name]
	if s == nil || s.Current == nil || s.Current.Version != wantVersion {
		t.Fatalf("journal slot %s = %+v, want current %s", name, s, wantVersion)
	}
	running := filepath.Join(data, "artifacts", name, "current", "model.onnx")
	if kind == "config" {
		running = filepath.Join(root, "etc", "app", "app.conf")
	}
	if b, err := os.ReadFile(running); err != nil || string(b) != wantContent {
		t.Errorf("running %s = %q (%v), want %q", running, b, err, wantContent)
	}
	if b, err := os.ReadFile(filepath.Join(data, "artifacts", name, "versions", "1", map[string]string{"model": "model.onnx", "config": "app.conf"}[kind])); err != nil || !strings.HasPrefix(string(b), map[string]string{"model": "weights-one", "config": "x=1"}[kind]) {
		t.Errorf("version 1 not intact: %q %v", b, err)
	}
	filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
		if err == nil && (strings.HasPrefix(d.Name(), ".partial-") || strings.Contains(d.Name(), ".tmp-") || strings.HasPrefix(d.Name(), ".meshanics-tmp-")) {
			t.Errorf("left behind: %s", p)
		}
		return nil
	})
	if final == "rolled_back" && s.Previous == nil {
		if _, err := os.Stat(filepath.Join(data, "artifacts", name, "versions", "2")); err == nil {
			t.Error("rolled-back version 2 still staged")
		}
	}
}
