package server

import (
	"context"
	"crypto/tls"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/meshanics/meshanics/internal/server/ca"
)

// servingCheckEvery is how often a running server checks whether its
// serving certificate needs re-issuing (ca re-issues it 30 days before
// expiry), so a server that runs for more than a year keeps valid TLS.
const servingCheckEvery = 12 * time.Hour

// servingCert holds the current serving certificate for the three
// listeners and renews it in place. Safe for concurrent use.
type servingCert struct {
	ca    *ca.Authority
	hosts []string
	log   *slog.Logger
	cur   atomic.Pointer[tls.Certificate]
}

func newServingCert(authority *ca.Authority, hosts []string, log *slog.Logger) (*servingCert, error) {
	s := &servingCert{ca: authority, hosts: hosts, log: log.With("component", "serving-cert")}
	c, err := authority.ServingCertificate(hosts)
	if err != nil {
		return nil, err
	}
	s.cur.Store(&c)
	return s, nil
}

// current is the certificate in use.
func (s *servingCert) current() tls.Certificate { return *s.cur.Load() }

// use makes cfg serve whatever certificate is current at each handshake,
// keeping any chain certificates the config builder appended after the
// leaf (the web listener presents the fleet CA for pinning clients).
func (s *servingCert) use(cfg *tls.Config) *tls.Config {
	var extra [][]byte
	if len(cfg.Certificates) == 1 && len(cfg.Certificates[0].Certificate) > 1 {
		extra = cfg.Certificates[0].Certificate[1:]
	}
	cfg.Certificates = nil
	cfg.GetCertificate = func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
		c := *s.cur.Load()
		if len(extra) > 0 {
			c.Certificate = append(c.Certificate[:len(c.Certificate):len(c.Certificate)], extra...)
		}
		return &c, nil
	}
	return cfg
}

// refresh re-issues the certificate if it is due and swaps it in.
func (s *servingCert) refresh() {
	c, err := s.ca.ServingCertificate(s.hosts)
	if err != nil {
		s.log.Error("renew serving certificate", "err", err)
		return
	}
	if old := s.cur.Load(); old.Leaf == nil || c.Leaf.SerialNumber.Cmp(old.Leaf.SerialNumber) != 0 {
		s.log.Info("serving certificate renewed", "not_after", c.Leaf.NotAfter)
	}
	s.cur.Store(&c)
}

// run refreshes periodically until ctx ends.
func (s *servingCert) run(ctx context.Context) error {
	t := time.NewTicker(servingCheckEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			s.refresh()
		}
	}
}
