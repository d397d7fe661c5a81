package ceremony

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/meshanics/meshanics/internal/atomicfile"
	"github.com/sigstore/sigstore/pkg/signature"
	"github.com/theupdateframework/go-tuf/v2/metadata"
)

// PrivateKey is one ed25519 signing key with the TUF key id it signs as.
// LogValue redacts it, so a key can never reach a log line by accident.
type PrivateKey struct {
	Role string
	ID   string
	pub  *metadata.Key
	priv ed25519.PrivateKey
}

// LogValue prints the role and key id only.
func (k *PrivateKey) LogValue() slog.Value {
	return slog.GroupValue(slog.String("role", k.Role), slog.String("keyid", k.ID))
}

// String never prints the private half.
func (k *PrivateKey) String() string { return k.Role + " key " + k.ID }

// Public returns the TUF public key.
func (k *PrivateKey) Public() *metadata.Key { return k.pub }

// Signer returns a signer for metadata.Metadata.Sign.
func (k *PrivateKey) Signer() (signature.Signer, error) {
	s, err := signature.LoadED25519Signer(k.priv)
	if err != nil {
		return nil, fmt.Errorf("load %s signer: %w", k.Role, err)
	}
	return s, nil
}

// NewKey generates a fresh ed25519 key for role (not yet on disk).
func NewKey(role string) (*PrivateKey, error) {
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate %s key: %w", role, err)
	}
	return keyFrom(role, priv)
}

func keyFrom(role string, priv ed25519.PrivateKey) (*PrivateKey, error) {
	pub, err := metadata.KeyFromPublicKey(priv.Public())
	if err != nil {
		return nil, fmt.Errorf("public %s key: %w", role, err)
	}
	id, err := pub.ID()
	if err != nil {
		return nil, fmt.Errorf("key id: %w", err)
	}
	return &PrivateKey{Role: role, ID: id, pub: pub, priv: priv}, nil
}

// keyFileSuffix names key files: <role>-<first 16 hex of the key id>.key.
const keyFileSuffix = ".key"

// WriteKey stores k in dir as a PKCS#8 PEM file with mode 0600 (write to a
// temp file, fsync, rename, fsync the directory). The directory is created
// 0700 when missing.
func WriteKey(dir string, k *PrivateKey) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("key directory: %w", err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(k.priv)
	if err != nil {
		return fmt.Errorf("encode %s key: %w", k.Role, err)
	}
	data := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
	name := filepath.Join(dir, k.Role+"-"+k.ID[:16]+keyFileSuffix)
	return atomicfile.WriteFile(name, data, 0o600)
}

// LoadKeys reads every key file in dir. A missing directory yields no keys.
// Files that are group- or world-accessible are refused: a leaked key
// cannot be un-leaked, so we fail loudly instead.
func LoadKeys(dir string) ([]*PrivateKey, error) {
	ents, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read key directory: %w", err)
	}
	var keys []*PrivateKey
	for _, e := range ents {
		name := e.Name()
		if e.IsDir() || !strings.HasSuffix(name, keyFileSuffix) {
			continue
		}
		role, _, ok := strings.Cut(strings.TrimSuffix(name, keyFileSuffix), "-")
		if !ok {
			continue
		}
		k, err := readKey(filepath.Join(dir, name), role)
		if err != nil {
			return nil, err
		}
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool { return keys[i].ID < keys[j].ID })
	return keys, nil
}

func readKey(path, role string) (*PrivateKey, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("key file: %w", err)
	}
	if st.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("key file %s is accessible by group or others (mode %v); want 0600", path, st.Mode().Perm())
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read key file: %w", err)
	}
	block, _ := pem.Decode(data)
	if block == nil || block.Type != "PRIVATE KEY" {
		return nil, fmt.Errorf("key file %s: not a PEM private key", path)
	}
	parsed, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("key file %s: parse", path)
	}
	priv, ok := parsed.(ed25519.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("key file %s: not an ed25519 key", path)
	}
	return keyFrom(role, priv)
}

// RetireKey moves a key file into dir/retired so it is no longer loaded but
// is not destroyed (the operator decides when to shred it).
func RetireKey(dir string, k *PrivateKey) error {
	rdir := filepath.Join(dir, "retired")
	if err := os.MkdirAll(rdir, 0o700); err != nil {
		return fmt.Errorf("retired key directory: %w", err)
	}
	name := k.Role + "-" + k.ID[:16] + keyFileSuffix
	if err := os.Rename(filepath.Join(dir, name), filepath.Join(rdir, name)); err != nil {
		return fmt.Errorf("retire key: %w", err)
	}
	return nil
}
