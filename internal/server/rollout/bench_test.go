package rollout

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/meshanics/meshanics/internal/server/store"
	"github.com/meshanics/meshanics/internal/server/store/storetest"
	"github.com/meshanics/meshanics/internal/states"
)

const benchFleet = 100000

func benchNames(n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("edge-%06d", i)
	}
	return out
}

// BenchmarkPartition100k is the plan of a 1/10/50/100 rollout over 100,000
// devices (sha256 of every name, sort, cuts).
func BenchmarkPartition100k(b *testing.B) {
	names := benchNames(benchFleet)
	st := documentedPlan()
	b.ResetTimer()
	for b.Loop() {
		st.Partition(names)
	}
}

// seedFleet inserts n live devices and a group "fleet" holding them.
func seedFleet(b testing.TB, db *store.DB, n int, now time.Time) []string {
	b.Helper()
	return seedDevices(b, db, benchNames(n), now)
}

// seedDevices inserts live devices with multi-row statements and a group
// "fleet" holding them.
func seedDevices(b testing.TB, db *store.DB, names []string, now time.Time) []string {
	b.Helper()
	ctx := context.Background()
	n := len(names)
	err := db.Tx(ctx, func(tx *store.Tx) error {
		const per = 500
		for start := 0; start < n; start += per {
			chunk := names[start:min(start+per, n)]
			var q strings.Builder
			q.WriteString(`INSERT INTO devices (name, id, life, fleet, status, cert_serial, cert_key_sha256, cert_not_after, hardware,
				agent_version, tags, installed, last_seen_at, heartbeat_interval_ms, enrolled_with, created_at, updated_at, decommissioned_at) VALUES `)
			var args []any
			for i, name := range chunk {
				if i > 0 {
					q.WriteString(", ")
				}
				q.WriteString("(?, ?, 1, 'fleet.test', 'active', ?, 'k', 0, '{}', 'v', '{}', '[]', ?, 30000, 'tok', 1, 1, 0)")
				args = append(args, name, "dev_"+name, "serial_"+name, now.UnixMilli())
			}
			if _, err := tx.Exec(ctx, q.String(), args...); err != nil {
				return err
			}
		}
		_, err := tx.CreateGroup(ctx, "fleet", names, "user:bench")
		return err
	})
	if err != nil {
		b.Fatal(err)
	}
	return names
}

// BenchmarkCreateAndReport100k creates a rollout over 100,000 devices
// (validation, partition, 100,000 stored rows, one transaction; reported as
// create-ms) and then measures one device report (ns/op): a locked,
// audited transaction that updates the device row and the rollout counters
// and re-evaluates the rollout.
func BenchmarkCreateAndReport100k(b *testing.B) {
	now := time.Now()
	db := storetest.SQLite(b)
	ctx := context.Background()
	names := seedFleet(b, db, benchFleet, now)
	r, err := New(Config{DB: db, Artifacts: db, Now: func() time.Time { return now }})
	if err != nil {
		b.Fatal(err)
	}
	err = db.Tx(ctx, func(tx *store.Tx) error {
		return tx.InsertArtifact(ctx, store.Artifact{Name: "app", Version: "2.0", Kind: "model", TargetPath: "artifacts/model/app/2.0/m",
			SHA256: strings.Repeat("a", 64), Length: 1, PublishedBy: "user:bench"})
	})
	if err != nil {
		b.Fatal(err)
	}
	start := time.Now()
	v, err := r.Create(ctx, "user:bench", CreateRequest{Artifact: "app@2.0", Group: "fleet",
		Probe: json.RawMessage(`{"type":"file","target":"/ok"}`), Strategy: json.RawMessage(`{"waves":[{"percent":100}]}`)})
	if err != nil {
		b.Fatal(err)
	}
	createMS := float64(time.Since(start).Milliseconds())
	const devs = 64
	asg := make([]string, devs)
	for i := range asg {
		as, err := r.Assignments(ctx, names[i], installedV1, now)
		if err != nil || len(as) != 1 {
			b.Fatalf("Assignments: %v %v", as, err)
		}
		asg[i] = as[0].GetId()
	}
	steps := []states.Device{states.Downloading, states.Verifying}
	b.ResetTimer()
	i := 0
	for b.Loop() {
		d := i % devs
		if err := r.ReportStatus(ctx, names[d], Status{AssignmentID: asg[d], State: steps[(i/devs)%2]}); err != nil {
			b.Fatal(err)
		}
		i++
	}
	b.StopTimer()
	b.ReportMetric(createMS, "create-ms")
	if got, _ := r.Get(ctx, v.ID); got.State != "running" {
		b.Fatalf("rollout state = %s", got.State)
	}
}
