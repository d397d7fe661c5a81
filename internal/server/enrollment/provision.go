package enrollment

import (
	"context"
	"errors"
	"fmt"
	"maps"

	"github.com/meshanics/meshanics/internal/errdefs"
	"github.com/meshanics/meshanics/internal/names"
	"github.com/meshanics/meshanics/internal/server/ca"
	"github.com/meshanics/meshanics/internal/server/store"
)

// ProvisionRequest is an operator's air-gapped provisioning (SPEC §2,
// `meshctl devices provision-offline`): the CSR was carried from the
// device on removable media, the answer goes back the same way. There is
// no token: the operator's enrollment.write permission is the credential.
type ProvisionRequest struct {
	Name   string            `json:"name"`
	CSRPEM string            `json:"csr_pem"`
	Tags   map[string]string `json:"tags,omitempty"`
	// Replace allows a different key for an active name (recovery of a
	// wiped device), like a token minted with replace=true.
	Replace bool `json:"replace,omitempty"`
}

// Validate checks the name, the CSR's size and the tags.
func (r ProvisionRequest) Validate() error {
	if err := names.ValidateDevice(r.Name); err != nil {
		return errdefs.Invalid(err.Error())
	}
	if r.CSRPEM == "" {
		return errdefs.Invalid("csr_pem is required")
	}
	if len(r.CSRPEM) > ca.MaxCSRBytes {
		return errdefs.Invalid(fmt.Sprintf("csr_pem is larger than %d bytes", ca.MaxCSRBytes))
	}
	return ValidateTags(r.Tags)
}

// Provision issues a device certificate for the CSR's key under name with
// the same-name rules of an enrollment (same key keeps the record, a
// different key is a conflict unless Replace, a decommissioned name starts
// a new life) and records it with a "device.enroll" audit event whose
// actor is the operator. The response is the enrollment response, so the
// bundle holds exactly what `meshanics-agent enroll` would have written.
func (s *Service) Provision(ctx context.Context, actor string, req ProvisionRequest) (Response, error) {
	res, err := s.provision(ctx, actor, req)
	s.enrollments.WithLabelValues(resultLabel(res.outcome, err)).Inc()
	return res.Response, err
}

func (s *Service) provision(ctx context.Context, actor string, req ProvisionRequest) (enrollResult, error) {
	if actor == "" {
		return enrollResult{}, errors.New("provision: actor is required")
	}
	if err := req.Validate(); err != nil {
		return enrollResult{}, err
	}
	pub, keyHash, anchor, err := s.checkCSR(ctx, req.CSRPEM)
	if err != nil {
		return enrollResult{}, err
	}
	if _, err := s.store.CheckEnrollment(ctx, req.Name, keyHash, req.Replace); err != nil {
		return enrollResult{}, err
	}
	issued, err := s.ca.IssueDevice(req.Name, pub, s.ttl)
	if err != nil {
		return enrollResult{}, fmt.Errorf("issue certificate: %w", err)
	}
	tags := maps.Clone(req.Tags)
	if tags == nil {
		tags = map[string]string{}
	}
	var outcome store.EnrollOutcome
	err = s.store.Tx(ctx, func(tx *store.Tx) error {
		var err error
		_, outcome, err = tx.EnrollDevice(ctx, store.Enrollment{
			Name: req.Name, Fleet: s.ca.Fleet(),
			Cert:              store.IssuedCert{Serial: issued.Serial, KeySHA256: keyHash, NotAfter: issued.Cert.NotAfter},
			Tags:              tags,
			HeartbeatInterval: s.heartbeat, AllowReplace: req.Replace, Actor: actor,
		})
		return err
	})
	if err != nil {
		return enrollResult{}, fmt.Errorf("record provisioning: %w", err)
	}
	s.log.Info("device provisioned offline", "device", req.Name, "outcome", outcome, "actor", actor, "serial", issued.Serial)
	return s.result(req.Name, issued, anchor, outcome), nil
}
