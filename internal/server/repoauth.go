package server

import (
	"context"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/meshanics/meshanics/internal/server/ca"
	"github.com/meshanics/meshanics/internal/server/store"
)

// certChecker says what a presented device certificate means (*store.DB).
type certChecker interface {
	CertAuth(ctx context.Context, name, serial string) (store.CertState, error)
}

// repoAuthTTL bounds how long a verdict is reused: a decommissioned or
// replaced device loses the repository within this time on every replica.
const repoAuthTTL = 30 * time.Second

// repoAuth admits to the update repository only devices whose verified
// client certificate is current: TLS already proved the chain, this refuses
// certificates of decommissioned or replaced devices (403), so a retired
// device cannot keep downloading artifacts until its certificate expires.
type repoAuth struct {
	ca    *ca.Authority
	certs certChecker
	now   func() time.Time
	log   *slog.Logger

	mu sync.Mutex
	// seen caches name → serial → time of the last "current" verdict;
	// refusals are not cached. Bounded by pruning on insert.
	seen map[string]map[string]time.Time
}

// maxRepoAuthEntries bounds the cache.
const maxRepoAuthEntries = 100000

func newRepoAuth(authority *ca.Authority, certs certChecker, now func() time.Time, log *slog.Logger) *repoAuth {
	return &repoAuth{ca: authority, certs: certs, now: now, log: log.With("component", "repoauth"), seen: map[string]map[string]time.Time{}}
}

func (a *repoAuth) wrap(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id, err := a.ca.PeerIdentity(r.TLS)
		if err != nil {
			http.Error(w, "client certificate required", http.StatusUnauthorized)
			return
		}
		ok, err := a.current(r.Context(), id)
		if err != nil {
			a.log.Error("check device certificate", "device", id.Name, "err", err)
			http.Error(w, "temporarily unavailable", http.StatusServiceUnavailable)
			return
		}
		if !ok {
			http.Error(w, "this device certificate is no longer valid", http.StatusForbidden)
			return
		}
		next.ServeHTTP(w, r)
	})
}

func (a *repoAuth) current(ctx context.Context, id ca.Identity) (bool, error) {
	now := a.now()
	a.mu.Lock()
	t, hit := a.seen[id.Name][id.Serial]
	a.mu.Unlock()
	if hit && now.Sub(t) < repoAuthTTL {
		return true, nil
	}
	st, err := a.certs.CertAuth(ctx, id.Name, id.Serial)
	if err != nil {
		return false, err
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if st != store.CertCurrent {
		delete(a.seen[id.Name], id.Serial)
		return false, nil
	}
	if len(a.seen) >= maxRepoAuthEntries {
		for name, serials := range a.seen {
			for serial, t := range serials {
				if now.Sub(t) >= repoAuthTTL {
					delete(serials, serial)
				}
			}
			if len(serials) == 0 {
				delete(a.seen, name)
			}
		}
	}
	if a.seen[id.Name] == nil {
		if len(a.seen) >= maxRepoAuthEntries {
			return true, nil // full: answer without caching
		}
		a.seen[id.Name] = map[string]time.Time{}
	}
	a.seen[id.Name][id.Serial] = now
	return true, nil
}

// invalidate forgets every verdict about device, so a decommission applies
// to its next repository request on this replica.
func (a *repoAuth) invalidate(device string) {
	a.mu.Lock()
	delete(a.seen, device)
	a.mu.Unlock()
}
