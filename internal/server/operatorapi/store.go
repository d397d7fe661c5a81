package operatorapi

import (
	"context"
	"time"

	"github.com/meshanics/meshanics/internal/server/store"
)

// Store is what the API needs from internal/server/store (*store.DB). Writes
// run in Tx so that every change and its audit event commit together.
type Store interface {
	TokenStore

	// authentication
	APIKeyByHash(ctx context.Context, hash string) (store.APIKey, error)
	TouchAPIKey(ctx context.Context, id string, t time.Time) error
	SessionByHash(ctx context.Context, hash string, now time.Time) (store.Session, store.User, error)
	User(ctx context.Context, name string) (store.User, error)
	DeleteExpiredSessions(ctx context.Context, now time.Time) (int64, error)

	ListUsers(ctx context.Context, p store.Page) ([]store.User, int, error)
	ListAPIKeys(ctx context.Context, owner string, p store.Page) ([]store.APIKey, int, error)

	ListDevices(ctx context.Context, f store.DeviceFilter, p store.Page) ([]store.Device, int, error)
	DeviceByName(ctx context.Context, name string) (store.Device, error)

	LogRequest(ctx context.Context, id string) (store.LogRequest, error)
	LogBundle(ctx context.Context, id string) ([]byte, error)

	ListAudit(ctx context.Context, f store.AuditFilter, p store.Page) ([]store.AuditEvent, int, error)
	AuditHead(ctx context.Context) (seq int64, hash string, err error)
	ExportAudit(ctx context.Context, afterSeq int64, fn func(store.AuditEvent) error) error
}

// Presence reports this replica's in-memory last heartbeat of a device
// (internal/server/presence.Tracker).
type Presence interface {
	LastSeen(device string) (time.Time, bool)
}
