// Package enrollment turns an enrollment token and a CSR into a device
// identity (SPEC §2): it mints, lists and revokes tokens, runs the enroll
// operation with every rule of the specification (token checks and the use
// spent first, same-name decisions, fresh certificate), serves
// POST /api/v1/enroll with per-address rate limiting, and renews device
// certificates for the device API.
//
// Imported by the server composition root (and through small interfaces by
// operatorapi and deviceapi). A *Service is safe for concurrent use.
package enrollment

import (
	"context"
	"crypto/ecdsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/meshanics/meshanics/internal/errdefs"
	"github.com/meshanics/meshanics/internal/server/ca"
	"github.com/meshanics/meshanics/internal/server/store"
)

// Store is the part of the store enrollment uses.
type Store interface {
	Tx(ctx context.Context, fn func(tx *store.Tx) error) error
	CheckEnrollment(ctx context.Context, name, keySHA256 string, allowReplace bool) (store.EnrollOutcome, error)
	ListEnrollmentTokens(ctx context.Context, p store.Page) ([]store.EnrollmentToken, int, error)
}

// TrustSource provides the TUF trust anchor (root.json) handed to enrolling
// devices. *updaterepo.Repository implements it.
type TrustSource interface {
	TrustAnchor(ctx context.Context) (json.RawMessage, error)
}

// Config holds every dependency. Store, CA, Log, DeviceServer,
// ArtifactServer and PublicURL are required.
type Config struct {
	Store Store
	CA    *ca.Authority
	// Trust may be nil or not yet initialised: devices then enroll without
	// a trust anchor (trust_anchor null) and apply nothing until they get one.
	Trust TrustSource
	// NotInitialized is the error Trust returns before the ceremony was
	// imported (updaterepo.ErrNotInitialized); it is not a failure.
	NotInitialized error
	Log            *slog.Logger
	Now            func() time.Time // nil = time.Now
	Registry       prometheus.Registerer

	CertTTL           time.Duration // default ca.DefaultDeviceTTL
	HeartbeatInterval time.Duration // default 30 s
	// DeviceServer is host:port of the device listener, ArtifactServer
	// https://host:port of the repository listener, PublicURL
	// https://host:port of the web listener (install command).
	DeviceServer   string
	ArtifactServer string
	PublicURL      string
}

// Service implements enrollment.
type Service struct {
	store          Store
	ca             *ca.Authority
	trust          TrustSource
	notInitialized error
	log            *slog.Logger
	now            func() time.Time
	ttl            time.Duration
	heartbeat      time.Duration
	deviceServer   string
	artifactServer string
	publicURL      string
	enrollments    *prometheus.CounterVec
}

// New checks cfg and builds the service.
func New(cfg Config) (*Service, error) {
	switch {
	case cfg.Store == nil:
		return nil, errors.New("enrollment: store is required")
	case cfg.CA == nil:
		return nil, errors.New("enrollment: CA is required")
	case cfg.Log == nil:
		return nil, errors.New("enrollment: logger is required")
	case cfg.DeviceServer == "" || cfg.ArtifactServer == "" || cfg.PublicURL == "":
		return nil, errors.New("enrollment: device server, artifact server and public URL are required")
	}
	s := &Service{
		store: cfg.Store, ca: cfg.CA, trust: cfg.Trust, notInitialized: cfg.NotInitialized,
		log: cfg.Log.With("component", "enrollment"), now: cfg.Now, ttl: cfg.CertTTL, heartbeat: cfg.HeartbeatInterval,
		deviceServer: cfg.DeviceServer, artifactServer: cfg.ArtifactServer, publicURL: strings.TrimSuffix(cfg.PublicURL, "/"),
		enrollments: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meshanics_enrollments_total",
			Help: "Enrollment requests by result: new, new_life, same_key, replaced, or a refusal (invalid, unauthorized, conflict, error).",
		}, []string{"result"}),
	}
	if s.now == nil {
		s.now = time.Now
	}
	if s.ttl == 0 {
		s.ttl = ca.DefaultDeviceTTL
	}
	if s.heartbeat == 0 {
		s.heartbeat = 30 * time.Second
	}
	for _, l := range []string{"new", "new_life", "same_key", "replaced", "invalid", "unauthorized", "conflict", "error"} {
		s.enrollments.WithLabelValues(l) // export zeros, so rates work from the start
	}
	if cfg.Registry != nil {
		if err := cfg.Registry.Register(s.enrollments); err != nil {
			return nil, fmt.Errorf("enrollment: register metrics: %w", err)
		}
	}
	return s, nil
}

// Response is the 201 body of POST /api/v1/enroll (SPEC §2).
type Response struct {
	Device         string          `json:"device"`
	Fleet          string          `json:"fleet"`
	CertificatePEM string          `json:"certificate_pem"`
	CAPEM          string          `json:"ca_pem"`
	TrustAnchor    json.RawMessage `json:"trust_anchor"`
	Config         DeviceConfig    `json:"config"`
}

// DeviceConfig tells the agent where to connect.
type DeviceConfig struct {
	Server         string `json:"server"`
	ArtifactServer string `json:"artifact_server"`
}

// errTokenRejected is the one answer for every unusable token.
const tokenRejectedMsg = "enrollment token is unknown, expired, revoked or used up; mint a fresh one"

var errTokenRejected = fmt.Errorf("%s: %w", tokenRejectedMsg, errdefs.ErrUnauthenticated)

// Enroll runs SPEC §2 for a parsed request. Order matters:
//  1. the CSR is checked (a typo does not burn a use);
//  2. the trust anchor is read (a broken repository does not burn a use);
//  3. the token checks pass and one use is spent, in its own transaction,
//     so it stays spent whatever happens next;
//  4. the same-name rules are checked before signing (409 signs nothing);
//  5. the certificate is signed and the device recorded atomically with
//     its audit event (the rules are checked again inside).
func (s *Service) Enroll(ctx context.Context, req Request) (Response, error) {
	res, err := s.enroll(ctx, req)
	s.enrollments.WithLabelValues(resultLabel(res.outcome, err)).Inc()
	return res.Response, err
}

type enrollResult struct {
	Response
	outcome store.EnrollOutcome
}

func (s *Service) enroll(ctx context.Context, req Request) (enrollResult, error) {
	if err := req.Validate(); err != nil {
		return enrollResult{}, err
	}
	pub, keyHash, anchor, err := s.checkCSR(ctx, req.CSRPEM)
	if err != nil {
		return enrollResult{}, err
	}
	if !wellFormedToken(req.Token) {
		return enrollResult{}, errTokenRejected
	}
	var tok store.EnrollmentToken
	now := s.now()
	err = s.store.Tx(ctx, func(tx *store.Tx) error {
		var err error
		tok, err = tx.SpendEnrollmentToken(ctx, store.HashSecret(req.Token), now)
		return err
	})
	if errors.Is(err, errdefs.ErrUnauthenticated) {
		s.log.Info("enrollment refused", "req", req, "err", err)
		return enrollResult{}, errTokenRejected
	}
	if err != nil {
		return enrollResult{}, fmt.Errorf("spend token: %w", err)
	}
	if _, err := s.store.CheckEnrollment(ctx, req.Name, keyHash, tok.Replace); err != nil {
		s.auditRefusal(ctx, req.Name, tok.ID, err)
		return enrollResult{}, err
	}
	issued, err := s.ca.IssueDevice(req.Name, pub, s.ttl)
	if err != nil {
		s.auditRefusal(ctx, req.Name, tok.ID, err)
		return enrollResult{}, fmt.Errorf("issue certificate: %w", err)
	}
	tags := maps.Clone(req.Tags)
	if tags == nil {
		tags = map[string]string{}
	}
	maps.Copy(tags, tok.Tags) // the operator's tags win over the device's
	var outcome store.EnrollOutcome
	err = s.store.Tx(ctx, func(tx *store.Tx) error {
		var err error
		_, outcome, err = tx.EnrollDevice(ctx, store.Enrollment{
			Name: req.Name, Fleet: s.ca.Fleet(),
			Cert:     store.IssuedCert{Serial: issued.Serial, KeySHA256: keyHash, NotAfter: issued.Cert.NotAfter},
			Hardware: req.Hardware, AgentVersion: req.AgentVersion, Tags: tags,
			HeartbeatInterval: s.heartbeat, TokenID: tok.ID, AllowReplace: tok.Replace,
		})
		return err
	})
	if err != nil {
		if errors.Is(err, errdefs.ErrConflict) {
			s.auditRefusal(ctx, req.Name, tok.ID, err)
		}
		return enrollResult{}, fmt.Errorf("record enrollment: %w", err)
	}
	s.log.Info("device enrolled", "device", req.Name, "outcome", outcome, "token_id", tok.ID, "serial", issued.Serial)
	return s.result(req.Name, issued, anchor, outcome), nil
}

// checkCSR parses the CSR and hashes its key, and reads the trust anchor
// (steps every enrollment and provisioning takes before anything changes).
func (s *Service) checkCSR(ctx context.Context, csrPEM string) (pub *ecdsa.PublicKey, keyHash string, anchor json.RawMessage, err error) {
	pub, err = ca.ParseCSR([]byte(csrPEM))
	if err != nil {
		return nil, "", nil, err
	}
	keyHash, err = KeySHA256(pub)
	if err != nil {
		return nil, "", nil, err
	}
	anchor, err = s.trustAnchor(ctx)
	if err != nil {
		return nil, "", nil, err
	}
	return pub, keyHash, anchor, nil
}

// result is the response to a recorded enrollment of device name.
func (s *Service) result(name string, issued ca.Issued, anchor json.RawMessage, outcome store.EnrollOutcome) enrollResult {
	return enrollResult{
		Response: Response{
			Device: name, Fleet: s.ca.Fleet(),
			CertificatePEM: string(issued.PEM), CAPEM: string(s.ca.CertPEM()),
			TrustAnchor: anchor,
			Config:      DeviceConfig{Server: s.deviceServer, ArtifactServer: s.artifactServer},
		},
		outcome: outcome,
	}
}

// trustAnchor returns root.json, or JSON null before the update trust
// exists. Other failures are ErrUnavailable: better to refuse (and keep the
// token's use) than to enroll a device without the anchor it should pin.
func (s *Service) trustAnchor(ctx context.Context) (json.RawMessage, error) {
	if s.trust == nil {
		return json.RawMessage("null"), nil
	}
	a, err := s.trust.TrustAnchor(ctx)
	switch {
	case err == nil && len(a) > 0:
		return a, nil
	case err == nil, s.notInitialized != nil && errors.Is(err, s.notInitialized):
		return json.RawMessage("null"), nil
	}
	s.log.Error("read trust anchor", "err", err)
	return nil, fmt.Errorf("%w: the update trust anchor cannot be read; retry later", errdefs.ErrUnavailable)
}

// auditRefusal records an enrollment that spent a use but did not enroll.
func (s *Service) auditRefusal(ctx context.Context, name, tokenID string, cause error) {
	reason := "error"
	if errors.Is(cause, errdefs.ErrConflict) {
		reason = "name_taken"
	}
	err := s.store.Tx(ctx, func(tx *store.Tx) error {
		_, err := tx.AppendAudit(ctx, store.Event{Actor: store.ActorSystem, Type: "device.enroll_refused", Subject: name,
			Data: map[string]any{"token_id": tokenID, "reason": reason}})
		return err
	})
	if err != nil {
		s.log.Error("audit refused enrollment", "device", name, "err", err)
	}
}

func resultLabel(o store.EnrollOutcome, err error) string {
	switch {
	case err == nil:
		return string(o)
	case errors.Is(err, errdefs.ErrInvalid):
		return "invalid"
	case errors.Is(err, errdefs.ErrUnauthenticated):
		return "unauthorized"
	case errors.Is(err, errdefs.ErrConflict):
		return "conflict"
	}
	return "error"
}

// KeySHA256 is the hex sha256 of the public key's SubjectPublicKeyInfo DER,
// the key identity stored on the device record.
func KeySHA256(pub *ecdsa.PublicKey) (string, error) {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return "", fmt.Errorf("marshal public key: %w", err)
	}
	sum := sha256.Sum256(der)
	return hex.EncodeToString(sum[:]), nil
}

// RenewDevice issues a fresh certificate for the active device name over
// the same key: pub must be the key of the certificate oldSerial, which
// must be the device's unrevoked certificate. It implements
// deviceapi.Renewer; the caller has verified the presented certificate.
func (s *Service) RenewDevice(ctx context.Context, name, oldSerial string, pub *ecdsa.PublicKey) ([]byte, error) {
	keyHash, err := KeySHA256(pub)
	if err != nil {
		return nil, errdefs.Invalid("bad public key")
	}
	issued, err := s.ca.IssueDevice(name, pub, s.ttl)
	if err != nil {
		return nil, fmt.Errorf("issue certificate: %w", err)
	}
	err = s.store.Tx(ctx, func(tx *store.Tx) error {
		_, err := tx.RenewDeviceCert(ctx, name, oldSerial, store.IssuedCert{Serial: issued.Serial, KeySHA256: keyHash, NotAfter: issued.Cert.NotAfter})
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("renew certificate: %w", err)
	}
	s.log.Info("device certificate renewed", "device", name, "old_serial", oldSerial, "serial", issued.Serial)
	return issued.PEM, nil
}
