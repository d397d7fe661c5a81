package operatorapi

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"

	"golang.org/x/crypto/argon2"

	"github.com/meshanics/meshanics/internal/errdefs"
)

// Argon2Params are the argon2id cost parameters of new password hashes.
// Existing hashes carry their own parameters (PHC string format), so the
// defaults can rise without invalidating stored passwords.
type Argon2Params struct {
	Memory  uint32 // KiB
	Time    uint32
	Threads uint8
}

// DefaultArgon2 follows RFC 9106's second recommended option (64 MiB, t=3).
var DefaultArgon2 = Argon2Params{Memory: 64 << 10, Time: 3, Threads: 2}

// Password length bounds. The upper bound keeps a login request from
// buying unbounded hashing work.
const (
	MinPasswordLen = 12
	MaxPasswordLen = 256
)

const (
	saltLen = 16
	keyLen  = 32
	// hash parameters above these are refused on verify, so a tampered row
	// cannot make a login exhaust memory.
	maxArgonMemory = 1 << 20 // 1 GiB in KiB
	maxArgonTime   = 16
)

// ValidatePassword checks a new password's length.
func ValidatePassword(pw string) error {
	if n := len(pw); n < MinPasswordLen || n > MaxPasswordLen {
		return errdefs.Invalid(fmt.Sprintf("password must be %d to %d bytes long", MinPasswordLen, MaxPasswordLen))
	}
	return nil
}

// HashPassword returns the PHC-format argon2id hash of pw:
// $argon2id$v=19$m=…,t=…,p=…$<salt>$<key> (unpadded standard base64).
func HashPassword(pw string, p Argon2Params) string {
	salt := make([]byte, saltLen)
	_, _ = rand.Read(salt) // never fails (Go ≥ 1.24)
	key := argon2.IDKey([]byte(pw), salt, p.Time, p.Memory, p.Threads, keyLen)
	b64 := base64.RawStdEncoding
	return fmt.Sprintf("$argon2id$v=%d$m=%d,t=%d,p=%d$%s$%s",
		argon2.Version, p.Memory, p.Time, p.Threads, b64.EncodeToString(salt), b64.EncodeToString(key))
}

// VerifyPassword reports whether pw matches the stored hash, comparing in
// constant time. A malformed hash never matches.
func VerifyPassword(pw, hash string) bool {
	p, salt, key, err := parseHash(hash)
	if err != nil || len(pw) > MaxPasswordLen {
		return false
	}
	got := argon2.IDKey([]byte(pw), salt, p.Time, p.Memory, p.Threads, uint32(len(key)))
	return subtle.ConstantTimeCompare(got, key) == 1
}

func parseHash(h string) (Argon2Params, []byte, []byte, error) {
	parts := strings.Split(h, "$")
	if len(parts) != 6 || parts[0] != "" || parts[1] != "argon2id" {
		return Argon2Params{}, nil, nil, errors.New("not an argon2id hash")
	}
	var v int
	if _, err := fmt.Sscanf(parts[2], "v=%d", &v); err != nil || v != argon2.Version {
		return Argon2Params{}, nil, nil, errors.New("unsupported argon2 version")
	}
	var p Argon2Params
	if _, err := fmt.Sscanf(parts[3], "m=%d,t=%d,p=%d", &p.Memory, &p.Time, &p.Threads); err != nil {
		return Argon2Params{}, nil, nil, errors.New("bad argon2 parameters")
	}
	if p.Memory < 8 || p.Memory > maxArgonMemory || p.Time < 1 || p.Time > maxArgonTime || p.Threads < 1 {
		return Argon2Params{}, nil, nil, errors.New("argon2 parameters out of range")
	}
	b64 := base64.RawStdEncoding
	salt, err := b64.DecodeString(parts[4])
	if err != nil || len(salt) < 8 {
		return Argon2Params{}, nil, nil, errors.New("bad salt")
	}
	key, err := b64.DecodeString(parts[5])
	if err != nil || len(key) < 16 || len(key) > 64 {
		return Argon2Params{}, nil, nil, errors.New("bad key")
	}
	return p, salt, key, nil
}

// withHashSlot runs fn while holding one of the API's argon2 slots, or
// fails with 503 when ctx ends first.
func (a *API) withHashSlot(ctx context.Context, fn func()) error {
	select {
	case a.hashSlots <- struct{}{}:
	case <-ctx.Done():
		return errorf(503, "server busy; retry")
	}
	defer func() { <-a.hashSlots }()
	fn()
	return nil
}
