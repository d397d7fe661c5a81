package reconcile

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/meshanics/meshanics/internal/agent/apply/config"
	"github.com/meshanics/meshanics/internal/agent/apply/file"
	"github.com/meshanics/meshanics/internal/agent/probe"
	"github.com/meshanics/meshanics/internal/agent/tufclient"
	"github.com/meshanics/meshanics/internal/artifact"
	devicev1 "github.com/meshanics/meshanics/proto/meshanics/device/v1"
)

// repo is a fake verified fetch: it serves published targets by path and
// can be told to fail (a download problem) or to lie about the bytes.
type repo struct {
	mu      sync.Mutex
	targets map[string]target
	fail    error
	block   bool              // wait for ctx instead of answering
	midway  func()            // called after half the bytes (crash tests)
	tamper  map[string]string // "bytes": serve other bytes; "tuf": fail verification; "short": write less than verified
}

type target struct {
	data   []byte
	custom artifact.Custom
}

func newRepo() *repo { return &repo{targets: map[string]target{}, tamper: map[string]string{}} }

func (r *repo) Fetch(ctx context.Context, a *devicev1.Artifact, w io.Writer) (tufclient.Verified, error) {
	r.mu.Lock()
	tg, ok := r.targets[a.GetTargetPath()]
	fail, block, midway, tamper := r.fail, r.block, r.midway, r.tamper[a.GetTargetPath()]
	r.mu.Unlock()
	if block {
		<-ctx.Done()
		return tufclient.Verified{}, ctx.Err()
	}
	if fail != nil {
		return tufclient.Verified{}, fail
	}
	if !ok {
		return tufclient.Verified{}, fmt.Errorf("target %s not found", a.GetTargetPath())
	}
	data := tg.data
	if tamper == "bytes" {
		// Other bytes, honestly reported: the reconciler must refuse a
		// digest that is not the assignment's.
		data = append([]byte("evil"), data[4:]...)
	}
	if tamper == "tuf" {
		return tufclient.Verified{}, fmt.Errorf("%w: sha256 mismatch", tufclient.ErrVerification)
	}
	sum := sha256.Sum256(data)
	if tamper == "short" {
		// A fetcher that verified the whole target but handed on less.
		data = data[:len(data)-1]
	}
	half := len(data) / 2
	if _, err := w.Write(data[:half]); err != nil {
		return tufclient.Verified{}, err
	}
	if midway != nil {
		midway()
	}
	if _, err := w.Write(data[half:]); err != nil {
		return tufclient.Verified{}, err
	}
	return tufclient.Verified{Path: a.GetTargetPath(), SHA256: hex.EncodeToString(sum[:]), Length: int64(len(data)), Custom: tg.custom}, nil
}

// publish adds a target and returns the assignment artifact for it.
func (r *repo) publish(kind, name, version, fileName string, data []byte, custom artifact.Custom) *devicev1.Artifact {
	custom.Kind, custom.Name, custom.Version = kind, name, version
	tp := artifact.TargetPath(kind, name, version, fileName)
	r.mu.Lock()
	r.targets[tp] = target{data: data, custom: custom}
	r.mu.Unlock()
	sum := sha256.Sum256(data)
	return &devicev1.Artifact{Kind: kind, Name: name, Version: version, TargetPath: tp, Sha256: hex.EncodeToString(sum[:]), Length: int64(len(data))}
}

func (r *repo) model(name, version, content string) *devicev1.Artifact {
	return r.publish("model", name, version, "model.onnx", []byte(content), artifact.Custom{Manifest: &artifact.ModelManifest{Framework: "onnx"}})
}

// reports records what the server would have been told.
type reports struct {
	mu  sync.Mutex
	got []string // "id state detail"
	ids map[string][]string
}

func (r *reports) Report(_ context.Context, id, state, detail string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.got = append(r.got, id+" "+state+" "+detail)
	if r.ids == nil {
		r.ids = map[string][]string{}
	}
	r.ids[id] = append(r.ids[id], state)
	return nil
}

func (r *reports) states(id string) []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.ids[id]...)
}

func (r *reports) last(id string) string {
	s := r.states(id)
	if len(s) == 0 {
		return ""
	}
	return s[len(s)-1]
}

// clock is a settable now.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// env is one device: data dir, config dir, real appliers and prober.
type env struct {
	data, etc string
	repo      *repo
	rep       *reports
	clock     *clock
	opts      Options
}

func newEnv(t testing.TB) *env {
	t.Helper()
	root := t.TempDir()
	e := &env{data: filepath.Join(root, "data"), etc: filepath.Join(root, "etc", "app"), repo: newRepo(), rep: &reports{},
		clock: &clock{t: time.Unix(1_800_000_000, 0)}}
	os.MkdirAll(e.etc, 0o755)
	return e.withOptions(nil)
}

func (e *env) withOptions(allowExec []string) *env {
	layout := file.Layout{Root: filepath.Join(e.data, "artifacts")}
	pr := probe.New(allowExec)
	pr.Sleep = func(ctx context.Context, _ time.Duration) error { return ctx.Err() }
	e.opts = Options{
		DataDir: e.data, Fetcher: e.repo, Reporter: e.rep, Prober: pr, Now: e.clock.Now,
		Appliers: map[string]Applier{
			"model":  file.Model{Layout: layout},
			"config": &config.Placer{Policy: config.Policy{Dest: []string{e.etc}, Exec: allowExec}},
		},
	}
	return e
}

func (e *env) start(t *testing.T) *Reconciler {
	t.Helper()
	r, err := New(e.opts)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func (e *env) current(name string) string {
	b, err := os.ReadFile(filepath.Join(e.data, "artifacts", name, "current", "model.onnx"))
	if err != nil {
		return "<none>"
	}
	return string(b)
}

func apply(id string, a *devicev1.Artifact, p *devicev1.HealthProbe) *devicev1.Assignment {
	return &devicev1.Assignment{Id: id, RolloutId: "r-" + id, Action: "apply", Artifact: a, Probe: p}
}

func fileProbe(path string) *devicev1.HealthProbe {
	return &devicev1.HealthProbe{Type: "file", Target: path, Attempts: 2}
}
