package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/meshanics/meshanics/internal/server/artifacts"
	"github.com/meshanics/meshanics/internal/server/ca"
	"github.com/meshanics/meshanics/internal/server/operatorapi"
	"github.com/meshanics/meshanics/internal/server/store"
	"github.com/meshanics/meshanics/internal/server/updaterepo"
)

// ErrInitialized is returned by Initialize for a data dir (or database)
// that is already initialised.
var ErrInitialized = errors.New("already initialised")

// Admin user created by Initialize.
const (
	adminUser   = "admin"
	adminKeyTag = "initial admin key"
)

func pkiDir(dataDir string) string { return filepath.Join(dataDir, "pki") }

// Initialize creates the database (SQLite in the data dir or the
// PostgreSQL schema), the fleet PKI under <data>/pki/ and the first admin
// user with an API key, which it returns (shown once; only its hash is
// stored). It refuses, changing nothing, when the data dir already holds a
// CA or the database already has users.
func Initialize(ctx context.Context, cfg Config, log *slog.Logger) (string, error) {
	if err := cfg.validate(); err != nil {
		return "", err
	}
	now := cfg.now()
	pki := pkiDir(cfg.DataDir)
	if ok, err := ca.Exists(pki); err != nil {
		return "", err
	} else if ok {
		return "", fmt.Errorf("%s holds a fleet CA: %w", pki, ErrInitialized)
	}
	db, err := store.Open(ctx, store.Options{DataDir: cfg.DataDir, DSN: cfg.Database, Logger: log, Now: now})
	if err != nil {
		return "", err
	}
	defer db.Close()
	key, err := initialize(ctx, cfg, db, log)
	if err != nil || !cfg.Dev {
		return key, err
	}
	// -dev: run the development TUF ceremony now, so the trust anchor exists
	// before the first device enrolls. The admin exists already, so a
	// failure here only warns: `meshanics-server -dev` runs it again.
	if err := initDevTrust(ctx, cfg, db, log); err != nil {
		log.Error("development TUF ceremony failed; it runs again when the server starts with -dev", "err", err)
	}
	return key, nil
}

// initialize does the work of Initialize on an open store.
func initialize(ctx context.Context, cfg Config, db *store.DB, log *slog.Logger) (key string, err error) {
	n, err := db.CountUsers(ctx)
	if err != nil {
		return "", err
	}
	if n > 0 {
		return "", fmt.Errorf("the database already has users (copy pki/ from the first replica to run another one): %w", ErrInitialized)
	}
	pki := pkiDir(cfg.DataDir)
	_, statErr := os.Stat(pki)
	createdDir := errors.Is(statErr, os.ErrNotExist)
	auth, err := ca.Create(pki, cfg.Fleet, cfg.now())
	if err != nil {
		return "", err
	}
	defer func() {
		if err != nil { // leave nothing half-made behind
			for _, f := range []string{ca.CACertFile, ca.CAKeyFile, ca.ServerCertFile, ca.ServerKeyFile} {
				_ = os.Remove(filepath.Join(pki, f))
			}
			if createdDir {
				_ = os.Remove(pki)
			}
		}
	}()
	if _, err = auth.ServingCertificate(cfg.PublicHosts); err != nil {
		return "", err
	}
	if key, err = createFirstAdmin(ctx, db, auth, cfg); err != nil {
		return "", err
	}
	log.Info("initialised", "data_dir", cfg.DataDir, "fleet", auth.Fleet(), "ca_pin", auth.Fingerprint(), "admin_user", adminUser)
	return key, nil
}

func initDevTrust(ctx context.Context, cfg Config, db *store.DB, log *slog.Logger) error {
	blobs, err := artifacts.NewBlobs(filepath.Join(cfg.DataDir, "blobs"))
	if err != nil {
		return err
	}
	repo, err := updaterepo.New(updaterepo.Config{DataDir: cfg.DataDir, DB: db, Blobs: blobs, Now: cfg.now(), Log: log})
	if err != nil {
		return err
	}
	return repo.InitDev(ctx)
}

// createFirstAdmin creates user admin with an API key, which it returns,
// and the server.init audit event, in one transaction. Two replicas racing
// on an empty shared database: the second fails (the user exists).
func createFirstAdmin(ctx context.Context, db *store.DB, auth *ca.Authority, cfg Config) (string, error) {
	key := operatorapi.NewAPIKey()
	err := db.Tx(ctx, func(tx *store.Tx) error {
		if _, err := tx.CreateUser(ctx, store.ActorSystem, adminUser, string(operatorapi.RoleAdmin), ""); err != nil {
			return err
		}
		_, err := tx.CreateAPIKey(ctx, store.ActorSystem, store.NewAPIKey{
			Hash: store.HashSecret(key), Name: adminKeyTag, Role: string(operatorapi.RoleAdmin), Owner: store.UserActor(adminUser),
		})
		if err != nil {
			return err
		}
		_, err = tx.AppendAudit(ctx, store.Event{Actor: store.ActorSystem, Type: "server.init", Subject: auth.Fleet(),
			Data: map[string]any{"fleet": auth.Fleet(), "ca_pin": auth.Fingerprint(), "public_hosts": cfg.PublicHosts}})
		return err
	})
	if err != nil {
		return "", fmt.Errorf("create first admin: %w", err)
	}
	return key, nil
}
