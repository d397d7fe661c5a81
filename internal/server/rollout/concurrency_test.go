package rollout

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/meshanics/meshanics/internal/server/store"
	"github.com/meshanics/meshanics/internal/server/store/storetest"
	"github.com/meshanics/meshanics/internal/states"
)

// TestTwoReplicasNeverDoubleAdvanceOrLoseTransitions runs two engines on
// one PostgreSQL database (two *store.DB, like two server replicas). Every
// device heartbeats and reports through both replicas at once, each report
// sent twice concurrently. The rollout must complete with every device
// healthy, each wave started exactly once, and exactly one audit event per
// device transition.
func TestTwoReplicasNeverDoubleAdvanceOrLoseTransitions(t *testing.T) {
	dsn := storetest.PostgresDatabase(t)
	db1 := storetest.OpenDSN(t, dsn, storetest.Options{})
	db2 := storetest.OpenDSN(t, dsn, storetest.Options{})
	e := newEnv(t, db1)
	// Real time here: replicas notice each other's wave changes through the
	// epoch, read at most every EpochEvery of their clock.
	var replicas []*Runner
	for _, db := range []*store.DB{db1, db2} {
		r, err := New(Config{DB: db, Artifacts: db, EpochEvery: 20 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		replicas = append(replicas, r)
	}
	e.r = replicas[0]
	const n = 40
	devs := e.devices("fleet", n)
	v := e.create("fleet", `{"waves":[{"percent":10},{"percent":30},{"percent":60},{"percent":100}],"max_failure_rate":0.5}`)

	// A lost transition leaves devices waiting for a wave that never
	// starts: bound the wait so that shows up as a failure.
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	var g errgroup.Group
	for i, dev := range devs {
		g.Go(func() error {
			var asgID string
			for asgID == "" { // poll until this device's wave is reached
				if err := ctx.Err(); err != nil {
					return err
				}
				as, err := replicas[i%2].Assignments(ctx, dev, installedV1, time.Now())
				if err != nil {
					return fmt.Errorf("heartbeat %s: %w", dev, err)
				}
				if len(as) == 1 {
					asgID = as[0].GetId()
				} else {
					time.Sleep(5 * time.Millisecond)
				}
			}
			for _, s := range []states.Device{states.Downloading, states.Verifying, states.Applying, states.Healthy} {
				var wg sync.WaitGroup
				errs := make([]error, 2)
				for k, r := range replicas {
					wg.Add(1)
					go func() {
						defer wg.Done()
						errs[k] = r.ReportStatus(ctx, dev, Status{AssignmentID: asgID, State: s, Detail: "same"})
					}()
				}
				wg.Wait()
				for _, err := range errs {
					if err != nil {
						return fmt.Errorf("report %s %s: %w", dev, s, err)
					}
				}
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		t.Fatal(err)
	}
	got := e.want(v.ID, "completed")
	for _, w := range got.Waves {
		if w.Counts["healthy"] != w.Devices || len(w.Counts) != 1 {
			t.Errorf("wave %d counts = %v, want all %d healthy", w.Index, w.Counts, w.Devices)
		}
	}
	count := map[string]int{}
	for _, typ := range e.auditTypes(v.ID) {
		count[typ]++
	}
	evs, total, err := db1.ListAudit(ctx, store.AuditFilter{Type: EventDevice}, store.Page{Limit: 1})
	if err != nil || len(evs) != 1 {
		t.Fatal(err)
	}
	if count[EventAdvanced] != 3 || count[EventCompleted] != 1 || total != 5*n {
		t.Errorf("wave_started %d (want 3), completed %d (want 1), device transitions %d (want %d)",
			count[EventAdvanced], count[EventCompleted], total, 5*n)
	}
	if res, err := db1.VerifyAudit(ctx); err != nil || !res.OK {
		t.Errorf("audit chain after concurrent replicas: %+v, %v", res, err)
	}
}
