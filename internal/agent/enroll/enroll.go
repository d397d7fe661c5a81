// Package enroll implements `meshanics-agent enroll` (SPEC §2): it makes or
// reuses the device key, talks to the control plane over TLS pinned to the
// fleet CA's fingerprint, posts the enrollment request, and writes the
// credentials, the trust anchor, agent.env and the container runtimes'
// trust directories, each file atomically.
//
// Imported by cmd/meshanics-agent (enroll) and internal/agent (trust-dir
// refresh on renewal, trust record for decommission).
package enroll

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"time"

	"github.com/meshanics/meshanics/internal/agent/config"
	"github.com/meshanics/meshanics/internal/agent/hardware"
	"github.com/meshanics/meshanics/internal/agent/identity"
	"github.com/meshanics/meshanics/internal/atomicfile"
)

// File names in the config dir (SPEC §4.1 device layout).
const (
	KeyFile      = "device.key"
	CertFile     = "device.crt"
	CAFile       = "ca.pem"
	RootFile     = "root.json"
	AgentEnvFile = "agent.env"
)

// Bounds on the enrollment response.
const (
	maxResponse = 4 << 20
	timeout     = 60 * time.Second
)

// Deps are the inputs enrollment takes from its caller.
type Deps struct {
	Log          *slog.Logger
	Hardware     hardware.Profile
	AgentVersion string
	Now          func() time.Time
}

// Result says what enrollment did.
type Result struct {
	Device    string
	Fleet     string
	ReusedKey bool     // an existing device.key was kept (upgrade)
	KeptRoot  bool     // an existing root.json was kept
	TrustDirs []string // runtime trust directories written
}

type request struct {
	Token        string            `json:"token"`
	Name         string            `json:"name"`
	CSRPEM       string            `json:"csr_pem"`
	Hardware     hardware.Profile  `json:"hardware"`
	Tags         map[string]string `json:"tags"`
	AgentVersion string            `json:"agent_version"`
}

// Response is the 201 body of POST /api/v1/enroll.
type Response struct {
	Device         string          `json:"device"`
	Fleet          string          `json:"fleet"`
	CertificatePEM string          `json:"certificate_pem"`
	CAPEM          string          `json:"ca_pem"`
	TrustAnchor    json.RawMessage `json:"trust_anchor"`
	Config         struct {
		Server         string `json:"server"`
		ArtifactServer string `json:"artifact_server"`
	} `json:"config"`
}

// Run enrolls the device described by c.
func Run(ctx context.Context, c *config.Enroll, d Deps) (Result, error) {
	if d.Now == nil {
		d.Now = time.Now
	}
	var res Result
	// Refuse values agent.env cannot carry before a token use is spent.
	if _, err := renderEnv(c, "localhost:1", ""); err != nil {
		return res, err
	}
	if err := os.MkdirAll(c.ConfigDir, 0o700); err != nil {
		return res, fmt.Errorf("config dir: %w", err)
	}
	key, reused, err := loadOrCreateKey(filepath.Join(c.ConfigDir, KeyFile))
	if err != nil {
		return res, err
	}
	res.ReusedKey = reused
	if reused {
		d.Log.Info("reusing the existing device key (upgrade: same identity)")
	}
	csr, err := identity.CSR(key, c.Name)
	if err != nil {
		return res, err
	}
	body, err := json.Marshal(request{
		Token: c.Token, Name: c.Name, CSRPEM: string(csr), Hardware: d.Hardware,
		Tags: c.Tags, AgentVersion: d.AgentVersion,
	})
	if err != nil {
		return res, err
	}
	known, err := knownCA(c)
	if err != nil {
		return res, err
	}
	resp, err := post(ctx, c, d, known, body)
	if err != nil {
		return res, err
	}
	creds, err := checkResponse(resp, key, c, d.Now())
	if err != nil {
		return res, err
	}
	res.Device, res.Fleet = resp.Device, resp.Fleet
	if res.KeptRoot, err = writeFiles(c, resp, creds); err != nil {
		return res, err
	}
	if resp.Config.ArtifactServer != "" {
		u, _ := url.Parse(resp.Config.ArtifactServer)
		keyPEM, _ := os.ReadFile(filepath.Join(c.ConfigDir, KeyFile))
		res.TrustDirs, err = writeTrustDirs(c.ConfigDir, []string{c.Containers, c.Docker}, u.Host, creds.caPEM, creds.certPEM, keyPEM)
		if err != nil {
			return res, err
		}
	}
	return res, nil
}

func loadOrCreateKey(path string) (*ecdsa.PrivateKey, bool, error) {
	key, err := identity.ReadKeyFile(path)
	if err == nil {
		return key, true, nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return nil, false, fmt.Errorf("existing device key: %w", err)
	}
	if key, err = identity.GenerateKey(); err != nil {
		return nil, false, err
	}
	b, err := identity.EncodeKey(key)
	if err != nil {
		return nil, false, err
	}
	// The key is on disk before the request, so a retry after a lost
	// response presents the same key (the same-key path of SPEC §2).
	if err := atomicfile.WriteFile(path, b, 0o600); err != nil {
		return nil, false, err
	}
	return key, false, nil
}

// enrollError is an HTTP refusal, with the server's message.
type enrollError struct {
	status int
	msg    string
}

func (e *enrollError) Error() string {
	hint := ""
	switch e.status {
	case http.StatusUnauthorized:
		hint = " (token unknown, expired, revoked or spent)"
	case http.StatusConflict:
		hint = " (the name belongs to a device with another key; use a token minted with replace=true to recover a wiped device)"
	}
	return fmt.Sprintf("enroll: server answered %d: %s%s", e.status, e.msg, hint)
}

// knownCA reads -ca-file, which must be exactly the pinned CA.
func knownCA(c *config.Enroll) (*x509.Certificate, error) {
	if c.CAFile == "" {
		return nil, nil
	}
	b, err := os.ReadFile(c.CAFile)
	if err != nil {
		return nil, &config.Error{Flag: "-ca-file", Msg: err.Error()}
	}
	certs, err := identity.ParseCerts(b)
	if err != nil || len(certs) != 1 || identity.Fingerprint(certs[0]) != c.CAPin {
		return nil, &config.Error{Flag: "-ca-file", Msg: "must hold exactly the certificate -ca-pin names"}
	}
	return certs[0], nil
}

func post(ctx context.Context, c *config.Enroll, d Deps, known *x509.Certificate, body []byte) (*Response, error) {
	u, _ := url.Parse(c.URL)
	client := &http.Client{
		Timeout: timeout,
		Transport: &http.Transport{
			TLSClientConfig:     PinnedTLSConfig(c.CAPin, known, u.Hostname(), d.Now),
			Proxy:               nil, // first contact goes straight to the pinned server
			DialContext:         (&net.Dialer{Timeout: 15 * time.Second}).DialContext,
			TLSHandshakeTimeout: 15 * time.Second,
			ForceAttemptHTTP2:   true,
		},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	defer client.CloseIdleConnections()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.URL+"/api/v1/enroll", bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("enroll: %w", err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxResponse+1))
	if err != nil {
		return nil, fmt.Errorf("enroll: read response: %w", err)
	}
	if len(b) > maxResponse {
		return nil, fmt.Errorf("enroll: response larger than %d bytes", maxResponse)
	}
	if resp.StatusCode != http.StatusCreated && resp.StatusCode != http.StatusOK {
		var e struct {
			Error string `json:"error"`
		}
		_ = json.Unmarshal(b, &e)
		if len(e.Error) > 300 {
			e.Error = e.Error[:300]
		}
		return nil, &enrollError{status: resp.StatusCode, msg: e.Error}
	}
	return ParseResponse(b)
}

// ParseResponse decodes a 201 body; checkResponse then validates it.
func ParseResponse(b []byte) (*Response, error) {
	if len(b) > maxResponse {
		return nil, fmt.Errorf("enroll: response larger than %d bytes", maxResponse)
	}
	var r Response
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, fmt.Errorf("enroll: malformed response: %w", err)
	}
	return &r, nil
}
