package identity

import (
	"crypto/ecdsa"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/meshanics/meshanics/internal/atomicfile"
)

// Store is the device's live identity: the key (fixed for the device's life)
// and the current certificate, which renewal replaces. Safe for concurrent
// use; TLS reads the certificate on every handshake.
type Store struct {
	certFile string
	key      *ecdsa.PrivateKey

	mu   sync.Mutex
	cert tls.Certificate // Leaf set
	// onReplace is called (under no lock) after a renewed certificate is
	// on disk, e.g. to refresh the runtime trust dirs.
	onReplace func(certPEM []byte)
}

// ErrNoCredentials means the certificate or key file is missing: the device
// was never enrolled or was decommissioned.
var ErrNoCredentials = errors.New("no device credentials")

// Load reads the device certificate and key and checks that they match.
func Load(certFile, keyFile string) (*Store, error) {
	key, err := ReadKeyFile(keyFile)
	if err != nil {
		return nil, fileErr(FileKey, keyFile, err)
	}
	b, err := readBounded(certFile)
	if err != nil {
		return nil, fileErr(FileCert, certFile, err)
	}
	s := &Store{certFile: certFile, key: key}
	if err := s.set(b); err != nil {
		return nil, fileErr(FileCert, certFile, err)
	}
	return s, nil
}

// Which credential file a FileError is about.
const (
	FileKey  = "key"
	FileCert = "cert"
)

// FileError names the credential file that could not be used; it wraps
// ErrNoCredentials when the file is missing.
type FileError struct {
	Which string // FileKey or FileCert
	Path  string
	Err   error
}

func (e *FileError) Error() string { return e.Path + ": " + e.Err.Error() }
func (e *FileError) Unwrap() error { return e.Err }

func fileErr(which, path string, err error) error {
	if errors.Is(err, os.ErrNotExist) {
		err = fmt.Errorf("%w: missing", ErrNoCredentials)
	}
	return &FileError{Which: which, Path: path, Err: err}
}

// OnReplace registers a callback run after each successful Replace.
func (s *Store) OnReplace(f func(certPEM []byte)) {
	s.mu.Lock()
	s.onReplace = f
	s.mu.Unlock()
}

func (s *Store) set(certPEM []byte) error {
	certs, err := ParseCerts(certPEM)
	if err != nil {
		return err
	}
	if !SameKey(certs[0], s.key) {
		return errors.New("certificate does not match the device key")
	}
	tc := tls.Certificate{PrivateKey: s.key, Leaf: certs[0]}
	for _, c := range certs {
		tc.Certificate = append(tc.Certificate, c.Raw)
	}
	s.mu.Lock()
	s.cert = tc
	s.mu.Unlock()
	return nil
}

// Key returns the device key (for CSRs).
func (s *Store) Key() *ecdsa.PrivateKey { return s.key }

// Leaf returns the current certificate.
func (s *Store) Leaf() *x509.Certificate {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cert.Leaf
}

// GetClientCertificate is the tls.Config hook: each handshake presents the
// current certificate.
func (s *Store) GetClientCertificate(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
	s.mu.Lock()
	c := s.cert
	s.mu.Unlock()
	return &c, nil
}

// Replace validates a renewed certificate (same key, a client certificate
// chaining to roots at now), writes it atomically and makes it current.
func (s *Store) Replace(certPEM []byte, roots *x509.CertPool, now time.Time) error {
	certs, err := ParseCerts(certPEM)
	if err != nil {
		return err
	}
	if !SameKey(certs[0], s.key) {
		return errors.New("renewed certificate does not match the device key")
	}
	inter := x509.NewCertPool()
	for _, c := range certs[1:] {
		inter.AddCert(c)
	}
	if _, err := certs[0].Verify(x509.VerifyOptions{
		Roots: roots, Intermediates: inter, CurrentTime: now,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}); err != nil {
		return fmt.Errorf("renewed certificate: %w", err)
	}
	if err := atomicfile.WriteFile(s.certFile, certPEM, 0o644); err != nil {
		return err
	}
	if err := s.set(certPEM); err != nil {
		return err
	}
	s.mu.Lock()
	f := s.onReplace
	s.mu.Unlock()
	if f != nil {
		f(certPEM)
	}
	return nil
}
