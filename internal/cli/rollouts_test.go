package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	devicev1 "github.com/meshanics/meshanics/proto/meshanics/device/v1"

	"github.com/meshanics/meshanics/internal/server/ca"
	"github.com/meshanics/meshanics/internal/server/operatorapi"
	"github.com/meshanics/meshanics/internal/server/rollout"
	"github.com/meshanics/meshanics/internal/server/store"
	"github.com/meshanics/meshanics/internal/server/store/storetest"
	"github.com/meshanics/meshanics/internal/states"
)

// newRolloutServer is newServer with the rollout engine wired in; it also
// returns the engine so the test can play the devices.
func newRolloutServer(t *testing.T) (*server, *rollout.Runner) {
	t.Helper()
	db := storetest.SQLite(t)
	auth, err := ca.Create(t.TempDir(), "fleet.test", time.Now)
	if err != nil {
		t.Fatal(err)
	}
	eng, err := rollout.New(rollout.Config{DB: db, Artifacts: db})
	if err != nil {
		t.Fatal(err)
	}
	api, err := operatorapi.New(operatorapi.Config{
		Store: db, Logger: slog.New(slog.DiscardHandler),
		CAPin: auth.Fingerprint(), CAPEM: auth.CertPEM(), PublicURL: "https://127.0.0.1:8443",
		Argon2: &operatorapi.Argon2Params{Memory: 64, Time: 1, Threads: 1},
		Groups: eng, Rollouts: eng,
	})
	if err != nil {
		t.Fatal(err)
	}
	url, caFile := serveTLS(t, auth, api.Handler())
	s := &server{t: t, url: url, caFile: caFile, pin: auth.Fingerprint(), db: db}
	s.admin = s.key("admin")
	ctx := context.Background()
	err = db.Tx(ctx, func(tx *store.Tx) error {
		return tx.InsertArtifact(ctx, store.Artifact{Name: "app", Version: "2.0", Kind: "model",
			TargetPath: "artifacts/model/app/2.0/m.onnx", SHA256: strings.Repeat("0", 64), Length: 1, PublishedBy: "user:admin"})
	})
	if err != nil {
		t.Fatal(err)
	}
	return s, eng
}

func TestGroupsCommands(t *testing.T) {
	s, _ := newRolloutServer(t)
	s.enroll("d1")
	s.enroll("d2")
	res := s.as(s.admin, "groups", "create", "line", "d1", "ghost")
	if res.code != 0 || !strings.Contains(res.stdout, "Group line created: 1 device(s)") || !strings.Contains(res.stdout, "Unresolved (no such device): ghost") {
		t.Fatalf("groups create = %+v", res)
	}
	if res := s.as(s.admin, "groups", "add", "line", "d2"); res.code != 0 || !strings.Contains(res.stdout, "2 device(s)") {
		t.Fatalf("groups add = %+v", res)
	}
	if res := s.as(s.admin, "groups", "remove", "line", "d1", "d9"); res.code != 0 || !strings.Contains(res.stdout, "Not members: d9") {
		t.Fatalf("groups remove = %+v", res)
	}
	if res := s.as(s.admin, "groups", "show", "line"); res.code != 0 || !strings.Contains(res.stdout, "  d2\n") || strings.Contains(res.stdout, "d1") {
		t.Fatalf("groups show = %+v", res)
	}
	if res := s.as(s.admin, "groups", "create", "x", "Not_A_Name"); res.code != 2 {
		t.Fatalf("groups create with a bad name = %+v, want exit 2", res)
	}
	if res := s.as(s.admin, "groups", "delete", "line"); res.code != 0 {
		t.Fatalf("groups delete = %+v", res)
	}
	if res := s.as(s.admin, "groups", "show", "line"); res.code != 1 {
		t.Fatalf("groups show deleted = %+v, want exit 1", res)
	}
}

func TestRolloutsWatchPlainOutput(t *testing.T) {
	pollEvery = 10 * time.Millisecond
	defer func() { pollEvery = 2 * time.Second }()
	s, eng := newRolloutServer(t)
	ctx := context.Background()
	devs := []string{"cam-1", "cam-2", "cam-3", "cam-4"}
	seen := map[string]time.Time{}
	for _, d := range devs {
		s.enroll(d)
		seen[d] = time.Now()
	}
	if err := s.db.TouchDevices(ctx, seen); err != nil {
		t.Fatal(err)
	}
	if res := s.as(s.admin, append([]string{"groups", "create", "cams"}, devs...)...); res.code != 0 {
		t.Fatalf("groups create = %+v", res)
	}
	res := s.as(s.admin, "-o", "json", "rollouts", "create", "-artifact", "app@2.0", "-group", "cams",
		"-probe", `{"type":"file","target":"/run/ok"}`, "-strategy", `{"waves":[{"percent":50},{"percent":100}]}`)
	if res.code != 0 {
		t.Fatalf("rollouts create = %+v", res)
	}
	var r rolloutInfo
	if err := json.Unmarshal([]byte(res.stdout), &r); err != nil || r.ID == "" || len(r.Waves) != 2 {
		t.Fatalf("rollouts create -o json = %q (%v)", res.stdout, err)
	}
	if res := s.as(s.admin, "rollouts", "show", r.ID); res.code != 0 || !strings.Contains(res.stdout, "tolerance 0 = max_failure_rate 0 × 4 devices") {
		t.Fatalf("rollouts show = %+v", res)
	}

	// Watch, and play the devices only once its first view is out, so that
	// the first line shows the running rollout however slow the machine.
	watched := make(chan result, 1)
	var wout, werr lockedBuffer
	go func() {
		code := run(ctx, []string{"-server", s.url, "-ca", s.caFile, "-api-key", s.admin, "rollouts", "watch", r.ID},
			strings.NewReader(""), &wout, &werr, func(string) (string, bool) { return "", false })
		watched <- result{code: code, stdout: wout.String(), stderr: werr.String()}
	}()
	for deadline := time.Now().Add(60 * time.Second); !strings.Contains(wout.String(), "\n"); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("watch printed nothing: %q", werr.String())
		}
	}
	// Play the devices: wave 0 healthy, then the first wave-1 device fails
	// and the rollout halts (tolerance 0).
	play := func(dev string, final states.Device) {
		as, err := eng.Assignments(ctx, dev, nil, time.Now())
		if err != nil || len(as) != 1 {
			t.Errorf("Assignments(%s) = %v, %v", dev, as, err)
			return
		}
		for _, st := range []states.Device{states.Downloading, final} {
			time.Sleep(20 * time.Millisecond) // let watch see the steps (not asserted)
			if err := eng.ReportStatus(ctx, dev, rollout.Status{AssignmentID: as[0].GetId(), State: st}); err != nil {
				t.Errorf("report %s: %v", dev, err)
			}
		}
	}
	var order []string
	for _, d := range []string{"cam-1", "cam-2", "cam-3", "cam-4"} {
		if as, _ := eng.Assignments(ctx, d, []*devicev1.InstalledArtifact{}, time.Now()); len(as) == 1 {
			order = append([]string{d}, order...) // wave 0 first
		} else {
			order = append(order, d)
		}
	}
	play(order[0], states.Healthy)
	play(order[1], states.Healthy)
	play(order[2], states.Failed)

	var w result
	select {
	case w = <-watched:
	case <-time.After(60 * time.Second):
		t.Fatal("watch did not exit after the rollout halted")
	}
	if w.code != 0 {
		t.Fatalf("watch = %+v", w)
	}
	if strings.Contains(w.stdout, "\x1b") {
		t.Errorf("watch wrote terminal escapes to a non-terminal:\n%q", w.stdout)
	}
	lines := strings.Split(strings.TrimSpace(w.stdout), "\n")
	first, last := lines[0], lines[len(lines)-1]
	if !strings.Contains(first, "state running") || !strings.Contains(first, "wave 0 ") {
		t.Errorf("first line = %q", first)
	}
	if !strings.Contains(last, "state halted") || !strings.Contains(last, "failures 1") || !strings.Contains(last, "wave 0 2/2 healthy=2") {
		t.Errorf("last line = %q", last)
	}
	for i := 1; i < len(lines); i++ {
		if lines[i][9:] == lines[i-1][9:] {
			t.Errorf("watch repeated an unchanged line: %q", lines[i])
		}
	}

	// -o json: the REST body unchanged, one line per change (here one: the
	// rollout is already halted).
	j := s.as(s.admin, "-o", "json", "rollouts", "watch", r.ID)
	shown := s.as(s.admin, "-o", "json", "rollouts", "show", r.ID)
	if j.code != 0 || j.stdout != shown.stdout || strings.Count(j.stdout, "\n") != 1 || !strings.Contains(j.stdout, `"state":"halted"`) {
		t.Errorf("-o json rollouts watch = %+v, want the show body %q", j, shown.stdout)
	}
}

func TestWatchTerminalRedrawsInPlace(t *testing.T) {
	var buf bytes.Buffer
	v := &watchView{w: &buf, tty: true}
	r := rolloutInfo{ID: "ro_1", State: "running", Waves: []waveInfo{
		{Index: 0, Percent: 50, Approval: "auto", Devices: 4, Counts: map[string]int{"healthy": 2, "failed": 1, "pending": 1}},
		{Index: 1, Percent: 100, Approval: "manual", Devices: 4, Counts: map[string]int{"pending": 4}},
	}}
	v.draw(r, time.Now())
	if strings.Contains(buf.String(), "\x1b[3A") {
		t.Fatal("first draw moved the cursor up")
	}
	if want := "[xxxxxxx###############--------] 3/4"; !strings.Contains(buf.String(), want) {
		t.Errorf("wave 0 bar missing %q in:\n%s", want, buf.String())
	}
	buf.Reset()
	v.draw(r, time.Now())
	if !strings.HasPrefix(buf.String(), "\x1b[3A\x1b[2K") {
		t.Errorf("second draw = %q, want a redraw of the 3-line block", buf.String())
	}
}

// TestToleranceIsShownInDecimal: 0.1 × 3 devices shows as 0.3, like the
// engine's audit, not as 0.30000000000000004.
func TestToleranceIsShownInDecimal(t *testing.T) {
	var buf bytes.Buffer
	v := &watchView{w: &buf}
	v.draw(rolloutInfo{ID: "ro_1", State: "halted", Strategy: json.RawMessage(`{"max_failure_rate":0.1}`),
		Waves: []waveInfo{{Index: 0, Percent: 100, Approval: "auto", Devices: 3, Counts: map[string]int{"failed": 1, "pending": 2}}}}, time.Now())
	if !strings.Contains(buf.String(), "tolerance 0.3)") {
		t.Errorf("watch line = %q, want tolerance 0.3", buf.String())
	}
}

// TestWatchSaysHowToPassAGate: at a manual gate watch keeps running, and
// its view says which command starts the next wave.
func TestWatchSaysHowToPassAGate(t *testing.T) {
	for _, tty := range []bool{false, true} {
		var buf bytes.Buffer
		v := &watchView{w: &buf, tty: tty}
		r := rolloutInfo{ID: "ro_1", State: "waiting_for_approval", Waves: []waveInfo{
			{Index: 0, Percent: 10, Approval: "auto", Devices: 1, Counts: map[string]int{"healthy": 1}},
			{Index: 1, Percent: 100, Approval: "manual", Devices: 9, Counts: map[string]int{"pending": 9}},
		}}
		v.draw(r, time.Now())
		if !strings.Contains(buf.String(), "meshctl rollouts approve ro_1") {
			t.Errorf("tty %v: watch view = %q, want the approve command", tty, buf.String())
		}
		buf.Reset()
		r.State = "running"
		v.draw(r, time.Now())
		if strings.Contains(buf.String(), "approve") {
			t.Errorf("tty %v: running view = %q mentions approve", tty, buf.String())
		}
	}
}

// lockedBuffer is a bytes.Buffer safe for a writer and a concurrent reader.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
