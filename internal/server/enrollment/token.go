package enrollment

import (
	"crypto/rand"
	"encoding/base32"
	"fmt"
	"strings"
	"time"

	"github.com/meshanics/meshanics/internal/errdefs"
)

// Token policy (SPEC §2).
const (
	TokenPrefix     = "mst_"
	DefaultTokenTTL = time.Hour
	MaxTokenTTL     = 30 * 24 * time.Hour
	MinTokenTTL     = time.Minute
	DefaultUses     = 1
	MaxUses         = 100000
)

var tokenEncoding = base32.StdEncoding.WithPadding(base32.NoPadding)

// NewTokenSecret returns a fresh enrollment token: "mst_" followed by 32
// random bytes in lower-case base32 (52 characters).
func NewTokenSecret() string {
	var b [32]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails (Go ≥ 1.24)
	return TokenPrefix + strings.ToLower(tokenEncoding.EncodeToString(b[:]))
}

// TokenOptions are what an operator chooses when minting a token. Zero
// values take the defaults.
type TokenOptions struct {
	TTL     time.Duration
	Uses    int
	Tags    map[string]string
	Replace bool
}

// Normalize applies defaults and checks bounds.
func (o TokenOptions) Normalize() (TokenOptions, error) {
	if o.TTL == 0 {
		o.TTL = DefaultTokenTTL
	}
	if o.TTL < MinTokenTTL || o.TTL > MaxTokenTTL {
		return o, errdefs.Invalid(fmt.Sprintf("token expiry must be between %v and %v (30 days)", MinTokenTTL, MaxTokenTTL))
	}
	if o.Uses == 0 {
		o.Uses = DefaultUses
	}
	if o.Uses < 1 || o.Uses > MaxUses {
		return o, errdefs.Invalid(fmt.Sprintf("token uses must be between 1 and %d", MaxUses))
	}
	if err := ValidateTags(o.Tags); err != nil {
		return o, err
	}
	return o, nil
}
