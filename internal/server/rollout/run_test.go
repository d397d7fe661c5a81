package rollout

import (
	"context"
	"encoding/json"
	"testing"
	"testing/synctest"
	"time"

	"github.com/meshanics/meshanics/internal/server/store"
	"github.com/meshanics/meshanics/internal/server/store/storetest"
	"github.com/meshanics/meshanics/internal/states"
)

// TestRunStartsTheNextWaveWhenAnInFlightDeviceGoesOffline runs the timer
// loop on synctest's fake clock: nothing is reported, but once the only
// in-flight canary has been silent for 3 heartbeat intervals, Run's next
// tick starts wave 1.
func TestRunStartsTheNextWaveWhenAnInFlightDeviceGoesOffline(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		db := storetest.SQLite(t)
		e := &env{t: t, db: db, ctx: context.Background(), clock: &clock{t: time.Now()}}
		r, err := New(Config{DB: db, Artifacts: db, EvaluateEvery: 10 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		e.r = r
		e.artifact("app", "2.0")
		e.devices("g", 2)
		v, err := r.Create(e.ctx, "user:ann", CreateRequest{Artifact: "app@2.0", Group: "g",
			Probe: json.RawMessage(`{"type":"file","target":"/ok"}`), Strategy: json.RawMessage(`{"waves":[{"percent":50},{"percent":100}]}`)})
		if err != nil {
			t.Fatal(err)
		}
		canary := e.devicesOf(v.ID, 0)[0]
		a := e.heartbeat(r, canary)
		e.report(canary, a, states.Downloading)

		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- r.Run(ctx) }()
		time.Sleep(85 * time.Second) // 3 × 30 s not yet over
		synctest.Wait()
		if got := wavesStarted(t, db, v.ID); got != 0 {
			t.Fatalf("wave 1 started after 85 s with a live canary in flight (%d)", got)
		}
		time.Sleep(20 * time.Second)
		synctest.Wait()
		if got := wavesStarted(t, db, v.ID); got != 1 {
			t.Fatalf("wave_started events after the canary went offline = %d, want 1", got)
		}
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run after cancel = %v", err)
		}
	})
}

func wavesStarted(t *testing.T, db *store.DB, id string) int {
	t.Helper()
	_, total, err := db.ListAudit(context.Background(), store.AuditFilter{Type: EventAdvanced, Subject: id}, store.Page{})
	if err != nil {
		t.Fatal(err)
	}
	return total
}
