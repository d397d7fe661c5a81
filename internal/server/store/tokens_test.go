package store_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/meshanics/meshanics/internal/errdefs"
	"github.com/meshanics/meshanics/internal/server/store"
	"github.com/meshanics/meshanics/internal/server/store/storetest"
)

func createToken(t *testing.T, db *store.DB, secret string, uses int, expires time.Time) store.EnrollmentToken {
	t.Helper()
	var tok store.EnrollmentToken
	mustTx(t, db, func(tx *store.Tx) error {
		var err error
		tok, err = tx.CreateEnrollmentToken(context.Background(), "user:admin", store.NewEnrollmentToken{
			Hash: store.HashSecret(secret), ExpiresAt: expires, Uses: uses, Tags: map[string]string{"site": "x"}, Replace: true,
		})
		return err
	})
	return tok
}

func spend(db *store.DB, secret string, now time.Time) (store.EnrollmentToken, error) {
	var tok store.EnrollmentToken
	err := db.Tx(context.Background(), func(tx *store.Tx) error {
		var err error
		tok, err = tx.SpendEnrollmentToken(context.Background(), store.HashSecret(secret), now)
		return err
	})
	return tok, err
}

func TestEnrollmentTokenLifecycle(t *testing.T) {
	t.Parallel()
	clock := newClock()
	storetest.ForEachEngineWith(t, storetest.Options{Now: clock.Now}, func(t *testing.T, db *store.DB) {
		ctx := context.Background()
		now := clock.Now()
		tok := createToken(t, db, "mst_a", 2, now.Add(time.Hour))
		if !strings.HasPrefix(tok.ID, "tok_") || tok.UsesLeft != 2 || tok.State(now) != store.TokenActive || !tok.Replace {
			t.Fatalf("CreateEnrollmentToken = %+v", tok)
		}
		got, err := db.EnrollmentToken(ctx, tok.ID)
		if err != nil || got.ID != tok.ID || got.Tags["site"] != "x" || !got.ExpiresAt.Equal(tok.ExpiresAt) {
			t.Fatalf("EnrollmentToken = %+v, %v", got, err)
		}
		for want := 1; want >= 0; want-- {
			s, err := spend(db, "mst_a", now)
			if err != nil || s.UsesLeft != want {
				t.Fatalf("spend = %+v, %v; want uses_left %d", s, err, want)
			}
		}
		_, err = spend(db, "mst_a", now)
		if !errors.Is(err, errdefs.ErrUnauthenticated) || !strings.Contains(err.Error(), "spent") {
			t.Errorf("spend of spent token = %v, want ErrUnauthenticated (spent)", err)
		}
		if _, err := spend(db, "mst_unknown", now); !errors.Is(err, errdefs.ErrUnauthenticated) {
			t.Errorf("spend unknown = %v, want ErrUnauthenticated", err)
		}
	})
}

func TestEnrollmentTokenExpiredAndRevoked(t *testing.T) {
	t.Parallel()
	forEachEngine(t, func(t *testing.T, db *store.DB) {
		ctx := context.Background()
		now := time.Now()
		createToken(t, db, "mst_exp", 5, now.Add(time.Minute))
		if _, err := spend(db, "mst_exp", now.Add(time.Minute)); !errors.Is(err, errdefs.ErrUnauthenticated) || !strings.Contains(err.Error(), "expired") {
			t.Errorf("spend at expiry = %v, want ErrUnauthenticated (expired)", err)
		}
		rev := createToken(t, db, "mst_rev", 5, now.Add(time.Hour))
		for i := 0; i < 2; i++ { // idempotent
			mustTx(t, db, func(tx *store.Tx) error { _, err := tx.RevokeEnrollmentToken(ctx, "user:admin", rev.ID); return err })
		}
		if _, err := spend(db, "mst_rev", now); !errors.Is(err, errdefs.ErrUnauthenticated) || !strings.Contains(err.Error(), "revoked") {
			t.Errorf("spend revoked = %v, want ErrUnauthenticated (revoked)", err)
		}
		got, _ := db.EnrollmentToken(ctx, rev.ID)
		if got.UsesLeft != 5 || got.State(now) != store.TokenRevoked {
			t.Errorf("revoked token = %+v; a refused spend must change nothing", got)
		}
		if _, total, _ := db.ListAudit(ctx, store.AuditFilter{Type: "enrollment_token.revoke"}, store.Page{}); total != 1 {
			t.Errorf("revoke events = %d, want 1", total)
		}
		err := db.Tx(ctx, func(tx *store.Tx) error {
			_, err := tx.RevokeEnrollmentToken(ctx, "user:admin", "tok_nope")
			return err
		})
		if !errors.Is(err, errdefs.ErrNotFound) {
			t.Errorf("revoke unknown = %v, want ErrNotFound", err)
		}
	})
}

// Two (or more) concurrent spends of a one-use token: exactly one wins.
func TestEnrollmentTokenSpendRace(t *testing.T) {
	t.Parallel()
	forEachEngine(t, func(t *testing.T, db *store.DB) {
		now := time.Now()
		for round := 0; round < 3; round++ {
			secret := "mst_race_" + string(rune('a'+round))
			createToken(t, db, secret, 1, now.Add(time.Hour))
			const n = 8
			var wg sync.WaitGroup
			var mu sync.Mutex
			wins, losses := 0, 0
			start := make(chan struct{})
			for i := 0; i < n; i++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					<-start
					_, err := spend(db, secret, now)
					mu.Lock()
					defer mu.Unlock()
					switch {
					case err == nil:
						wins++
					case errors.Is(err, errdefs.ErrUnauthenticated):
						losses++
					default:
						t.Errorf("spend: unexpected error %v", err)
					}
				}()
			}
			close(start)
			wg.Wait()
			if wins != 1 || losses != n-1 {
				t.Errorf("round %d: %d wins, %d refusals; want exactly 1 win", round, wins, losses)
			}
		}
	})
}

func TestListEnrollmentTokens(t *testing.T) {
	t.Parallel()
	clock := newClock()
	storetest.ForEachEngineWith(t, storetest.Options{Now: clock.Now}, func(t *testing.T, db *store.DB) {
		ctx := context.Background()
		var ids []string
		for i := 0; i < 5; i++ {
			clock.Add(time.Second)
			ids = append(ids, createToken(t, db, "mst_l"+string(rune('a'+i)), 1, clock.Now().Add(time.Hour)).ID)
		}
		items, total, err := db.ListEnrollmentTokens(ctx, store.Page{Limit: 2, Offset: 1})
		if err != nil || total != 5 || len(items) != 2 || items[0].ID != ids[3] || items[1].ID != ids[2] {
			t.Errorf("ListEnrollmentTokens(2,1) = %d items, total %d, %v; want newest-first ids[3], ids[2]", len(items), total, err)
		}
	})
}

func TestEnrollmentTokenState(t *testing.T) {
	t.Parallel()
	now := time.Now()
	for _, tc := range []struct {
		tok  store.EnrollmentToken
		want string
	}{
		{store.EnrollmentToken{UsesLeft: 1, ExpiresAt: now.Add(time.Second)}, store.TokenActive},
		{store.EnrollmentToken{UsesLeft: 1, ExpiresAt: now}, store.TokenExpired},
		{store.EnrollmentToken{UsesLeft: 0, ExpiresAt: now.Add(time.Hour)}, store.TokenSpent},
		{store.EnrollmentToken{UsesLeft: 1, ExpiresAt: now.Add(time.Hour), RevokedAt: now}, store.TokenRevoked},
	} {
		if got := tc.tok.State(now); got != tc.want {
			t.Errorf("State(%+v) = %s, want %s", tc.tok, got, tc.want)
		}
	}
}
