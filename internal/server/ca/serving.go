package ca

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/meshanics/meshanics/internal/atomicfile"
)

const (
	servingValidity = 365 * 24 * time.Hour
	// servingRenewBefore: a serving certificate this close to expiry is
	// replaced at the next start.
	servingRenewBefore = 30 * 24 * time.Hour
)

var hostRE = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$`)

// Hosts is the SAN set of the serving certificate, split into names and IPs,
// each sorted and de-duplicated.
type Hosts struct {
	DNS []string
	IPs []net.IP
}

// ParseHosts validates -public-host values: DNS names or IP literals.
func ParseHosts(hosts []string) (Hosts, error) {
	var h Hosts
	if len(hosts) == 0 {
		return h, errors.New("at least one public host is needed for the serving certificate")
	}
	for _, s := range hosts {
		s = strings.TrimSuffix(strings.ToLower(strings.TrimSpace(s)), ".")
		if ip := net.ParseIP(strings.Trim(s, "[]")); ip != nil {
			if v4 := ip.To4(); v4 != nil {
				ip = v4
			}
			if !slices.ContainsFunc(h.IPs, ip.Equal) {
				h.IPs = append(h.IPs, ip)
			}
			continue
		}
		if len(s) > 253 || !hostRE.MatchString(s) {
			return Hosts{}, fmt.Errorf("invalid public host %q: want a DNS name or an IP address, without port", s)
		}
		if !slices.Contains(h.DNS, s) {
			h.DNS = append(h.DNS, s)
		}
	}
	slices.Sort(h.DNS)
	slices.SortFunc(h.IPs, func(a, b net.IP) int { return strings.Compare(a.String(), b.String()) })
	return h, nil
}

func (h Hosts) equal(cert *x509.Certificate) bool {
	dns := slices.Clone(cert.DNSNames)
	slices.Sort(dns)
	if !slices.Equal(dns, h.DNS) || len(cert.IPAddresses) != len(h.IPs) {
		return false
	}
	for _, ip := range h.IPs {
		if !slices.ContainsFunc(cert.IPAddresses, ip.Equal) {
			return false
		}
	}
	return true
}

// ServingCertificate returns the serving certificate for hosts, reusing the
// one on disk when it was issued by this CA for exactly these hosts and is
// not close to expiry, and issuing (and storing) a new one otherwise.
func (a *Authority) ServingCertificate(hosts []string) (tls.Certificate, error) {
	h, err := ParseHosts(hosts)
	if err != nil {
		return tls.Certificate{}, err
	}
	certPath := filepath.Join(a.dir, ServerCertFile)
	keyPath := filepath.Join(a.dir, ServerKeyFile)
	if c, ok, err := a.loadServing(certPath, keyPath, h); err != nil {
		return tls.Certificate{}, err
	} else if ok {
		return c, nil
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("generate serving key: %w", err)
	}
	serial, err := newSerial()
	if err != nil {
		return tls.Certificate{}, err
	}
	now := a.now()
	cn := ""
	if len(h.DNS) > 0 {
		cn = h.DNS[0]
	} else {
		cn = h.IPs[0].String()
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: cn, Organization: []string{"Meshanics"}},
		NotBefore:    now.Add(-5 * time.Minute),
		NotAfter:     now.Add(servingValidity),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames:     h.DNS,
		IPAddresses:  h.IPs,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, a.cert, &key.PublicKey, a.key)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("sign serving certificate: %w", err)
	}
	if err := writeKey(keyPath, key); err != nil {
		return tls.Certificate{}, err
	}
	if err := atomicfile.WriteFile(certPath, encodeCert(der), 0o644); err != nil {
		return tls.Certificate{}, err
	}
	c, ok, err := a.loadServing(certPath, keyPath, h)
	if err != nil {
		return tls.Certificate{}, err
	}
	if !ok {
		return tls.Certificate{}, errors.New("serving certificate just written does not load")
	}
	return c, nil
}

// loadServing returns the stored serving certificate if it is usable for h.
func (a *Authority) loadServing(certPath, keyPath string, h Hosts) (tls.Certificate, bool, error) {
	certPEM, err := os.ReadFile(certPath)
	if errors.Is(err, fs.ErrNotExist) {
		return tls.Certificate{}, false, nil
	}
	if err != nil {
		return tls.Certificate{}, false, fmt.Errorf("read serving certificate: %w", err)
	}
	keyPEM, err := os.ReadFile(keyPath)
	if errors.Is(err, fs.ErrNotExist) {
		return tls.Certificate{}, false, nil
	}
	if err != nil {
		return tls.Certificate{}, false, fmt.Errorf("read serving key: %w", err)
	}
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return tls.Certificate{}, false, nil // unusable: replace it
	}
	leaf := pair.Leaf
	now := a.now()
	_, verr := leaf.Verify(x509.VerifyOptions{
		Roots:       a.pool,
		CurrentTime: now,
		KeyUsages:   []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	})
	if verr != nil || !h.equal(leaf) || now.Add(servingRenewBefore).After(leaf.NotAfter) {
		return tls.Certificate{}, false, nil
	}
	return pair, true, nil
}
