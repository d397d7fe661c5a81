package enrollment

import (
	"context"
	"fmt"
	"strings"

	"github.com/meshanics/meshanics/internal/server/store"
)

// MintedToken is a token just created: the secret is shown once.
type MintedToken struct {
	Token          store.EnrollmentToken
	Secret         string
	CAPin          string
	InstallCommand string
}

// CreateToken mints a token (operatorapi.TokenService): see Mint.
func (s *Service) CreateToken(ctx context.Context, actor string, o TokenOptions) (store.EnrollmentToken, string, error) {
	m, err := s.Mint(ctx, actor, o)
	return m.Token, m.Secret, err
}

// Mint mints a token for actor with o's expiry, budget, tags and replace
// flag. Only the hash is stored; the audit event is appended in the same
// transaction.
func (s *Service) Mint(ctx context.Context, actor string, o TokenOptions) (MintedToken, error) {
	o, err := o.Normalize()
	if err != nil {
		return MintedToken{}, err
	}
	secret := NewTokenSecret()
	var t store.EnrollmentToken
	err = s.store.Tx(ctx, func(tx *store.Tx) error {
		var err error
		t, err = tx.CreateEnrollmentToken(ctx, actor, store.NewEnrollmentToken{
			Hash: store.HashSecret(secret), ExpiresAt: s.now().Add(o.TTL), Uses: o.Uses, Tags: o.Tags, Replace: o.Replace,
		})
		return err
	})
	if err != nil {
		return MintedToken{}, fmt.Errorf("create enrollment token: %w", err)
	}
	s.log.Info("enrollment token created", "token_id", t.ID, "actor", actor, "uses", t.Uses, "expires_at", t.ExpiresAt)
	return MintedToken{Token: t, Secret: secret, CAPin: s.ca.Fingerprint(), InstallCommand: s.InstallCommand(secret)}, nil
}

// RevokeToken revokes token id (idempotent; operatorapi.TokenService).
func (s *Service) RevokeToken(ctx context.Context, actor, id string) error {
	_, err := s.Revoke(ctx, actor, id)
	return err
}

// Revoke revokes token id (idempotent) and returns it.
func (s *Service) Revoke(ctx context.Context, actor, id string) (store.EnrollmentToken, error) {
	var t store.EnrollmentToken
	err := s.store.Tx(ctx, func(tx *store.Tx) error {
		var err error
		t, err = tx.RevokeEnrollmentToken(ctx, actor, id)
		return err
	})
	if err != nil {
		return store.EnrollmentToken{}, fmt.Errorf("revoke enrollment token: %w", err)
	}
	return t, nil
}

// ListTokens returns one page of tokens, newest first.
func (s *Service) ListTokens(ctx context.Context, p store.Page) ([]store.EnrollmentToken, int, error) {
	return s.store.ListEnrollmentTokens(ctx, p)
}

// CAPin is the fleet CA fingerprint carried by install commands.
func (s *Service) CAPin() string { return s.ca.Fingerprint() }

// InstallCommand is the one line an operator runs on a device (SPEC §2):
// the installer is fetched over TLS that trusts only the fleet CA given
// inline, and the installer itself checks that CA against the pin.
func (s *Service) InstallCommand(secret string) string {
	caPEM := strings.TrimRight(string(s.ca.CertPEM()), "\n")
	return fmt.Sprintf("curl -fsSL --cacert <(printf '%%s\\n' '%s') %s/install.sh | sudo sh -s -- --url %s --token %s --ca-pin %s",
		caPEM, s.publicURL, s.publicURL, secret, s.ca.Fingerprint())
}
