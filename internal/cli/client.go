package cli

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"regexp"
	"strings"
	"time"
)

// maxResponse bounds a JSON response body read into memory. Streams (audit
// export, log bundles) are copied with their own limits.
const maxResponse = 16 << 20

// client speaks to the REST API of one control plane.
type client struct {
	base   *url.URL // https://host:port
	apiKey string
	http   *http.Client
}

var pinRE = regexp.MustCompile(`^sha256:[0-9a-fA-F]{64}$`)

// api returns the REST client, building it from the global flags on first
// use. Mistakes in the flags are usage errors.
func (a *app) api() (*client, error) {
	if a.client != nil {
		return a.client, nil
	}
	if a.server == "" {
		return nil, usagef("no server: pass -server https://HOST:8443 or set MESHCTL_SERVER")
	}
	u, err := url.Parse(a.server)
	if err != nil || u.Scheme != "https" || u.Host == "" || (u.Path != "" && u.Path != "/") || u.RawQuery != "" {
		return nil, usagef("-server %q: want https://HOST[:PORT]", a.server)
	}
	u.Path = ""
	if a.apiKey == "" {
		return nil, usagef("no API key: pass -api-key msk_… or set MESHCTL_API_KEY")
	}
	tc, err := a.tlsConfig()
	if err != nil {
		return nil, err
	}
	tr := &http.Transport{
		TLSClientConfig:       tc,
		Proxy:                 http.ProxyFromEnvironment,
		TLSHandshakeTimeout:   15 * time.Second,
		ResponseHeaderTimeout: 60 * time.Second,
		ForceAttemptHTTP2:     true,
	}
	a.client = &client{base: u, apiKey: a.apiKey, http: &http.Client{Transport: tr}}
	return a.client, nil
}

// tlsConfig verifies the server with the -ca bundle, the -ca-pin
// fingerprint, or the system roots.
func (a *app) tlsConfig() (*tls.Config, error) {
	tc := &tls.Config{MinVersion: tls.VersionTLS12}
	switch {
	case a.caFile != "" && a.caPin != "":
		return nil, usagef("pass -ca or -ca-pin, not both")
	case a.caFile != "":
		pem, err := os.ReadFile(a.caFile)
		if err != nil {
			return nil, usagef("-ca: %v", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, usagef("-ca %s: no PEM certificate in the file", a.caFile)
		}
		tc.RootCAs = pool
	case a.caPin != "":
		if !pinRE.MatchString(a.caPin) {
			return nil, usagef("-ca-pin %q: want sha256:<64 hex digits>", a.caPin)
		}
		pin := strings.ToLower(strings.TrimPrefix(a.caPin, "sha256:"))
		// The standard verification cannot express "the chain must lead to
		// this CA by fingerprint", so it is switched off here and replaced by
		// verifyPinned, which does the whole verification (signatures,
		// validity, server name, key usage) with the pinned CA as the only
		// root. Nothing is skipped.
		tc.InsecureSkipVerify = true
		tc.VerifyConnection = func(cs tls.ConnectionState) error { return verifyPinned(cs, pin) }
	}
	return tc, nil
}

// verifyPinned accepts the connection only if the presented chain contains a
// CA certificate whose DER has the pinned sha256 and the leaf verifies
// against that CA alone for the server name.
func verifyPinned(cs tls.ConnectionState, pinHex string) error {
	certs := cs.PeerCertificates
	if len(certs) == 0 {
		return errors.New("server presented no certificate")
	}
	var root *x509.Certificate
	inter := x509.NewCertPool()
	for _, c := range certs[1:] {
		sum := sha256.Sum256(c.Raw)
		if hex.EncodeToString(sum[:]) == pinHex && c.IsCA {
			root = c
			continue
		}
		inter.AddCert(c)
	}
	if root == nil {
		return errors.New("server's certificate chain does not contain the pinned CA (check -ca-pin, or use -ca FILE with the fleet's ca.pem)")
	}
	roots := x509.NewCertPool()
	roots.AddCert(root)
	_, err := certs[0].Verify(x509.VerifyOptions{
		DNSName:       cs.ServerName,
		Roots:         roots,
		Intermediates: inter,
		KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	})
	if err != nil {
		return fmt.Errorf("server certificate does not verify against the pinned CA: %w", err)
	}
	return nil
}

// apiError is a non-2xx answer of the REST API.
type apiError struct {
	status int
	msg    string
}

func (e *apiError) Error() string {
	msg := e.msg
	if msg == "" {
		msg = http.StatusText(e.status)
	}
	if h := hint(e.status); h != "" {
		return fmt.Sprintf("%s (HTTP %d; %s)", msg, e.status, h)
	}
	return fmt.Sprintf("%s (HTTP %d)", msg, e.status)
}

// hint says what to do next after a refusal.
func hint(status int) string {
	switch status {
	case http.StatusUnauthorized:
		return "check -api-key / MESHCTL_API_KEY"
	case http.StatusForbidden:
		return "your key's role lacks this permission; ask an admin"
	case http.StatusNotFound:
		return "check the name or id with the matching 'list' command"
	case http.StatusTooManyRequests:
		return "wait a moment and retry"
	case http.StatusRequestEntityTooLarge:
		return "the request is larger than the server accepts"
	}
	if status >= 500 {
		return "a server problem; see the server log"
	}
	return ""
}

// response is a 2xx answer.
type response struct {
	status int
	body   []byte
	header http.Header
}

// do sends a request with an optional JSON body and returns the 2xx answer,
// or an *apiError for anything else.
func (c *client) do(ctx context.Context, method, path string, query url.Values, body any) (*response, error) {
	resp, err := c.send(ctx, method, path, query, body)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, maxResponse+1))
	if err != nil {
		return nil, fmt.Errorf("read response: %w", err)
	}
	if len(raw) > maxResponse {
		return nil, fmt.Errorf("response larger than %d bytes", maxResponse)
	}
	return &response{status: resp.StatusCode, body: raw, header: resp.Header}, nil
}

// stream is do for large bodies: the caller reads and closes the body.
func (c *client) stream(ctx context.Context, method, path string, query url.Values) (*http.Response, error) {
	return c.send(ctx, method, path, query, nil)
}

func (c *client) send(ctx context.Context, method, path string, query url.Values, body any) (*http.Response, error) {
	target := c.base.String() + path // path segments are escaped by apiPath
	if q := query.Encode(); q != "" {
		target += "?" + q
	}
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return nil, fmt.Errorf("encode request: %w", err)
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, target, rd)
	if err != nil {
		return nil, fmt.Errorf("build request: %w", err)
	}
	req.Header.Set("Authorization", "Bearer "+c.apiKey)
	req.Header.Set("Accept", "application/json")
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, connError(c.base.Host, err)
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		defer resp.Body.Close()
		raw, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		var eb struct {
			Error string `json:"error"`
		}
		_ = json.Unmarshal(raw, &eb)
		return nil, &apiError{status: resp.StatusCode, msg: eb.Error}
	}
	return resp, nil
}

// connError explains a transport failure.
func connError(host string, err error) error {
	var uae x509.UnknownAuthorityError
	var hne x509.HostnameError
	switch {
	case errors.As(err, &uae):
		return fmt.Errorf("cannot verify %s: certificate signed by an unknown authority (pass the fleet CA with -ca FILE or -ca-pin sha256:…)", host)
	case errors.As(err, &hne):
		return fmt.Errorf("cannot verify %s: %v (use a -server host name the serving certificate names; see the server's -public-host)", host, hne)
	}
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err
	}
	return fmt.Errorf("cannot reach %s: %v (check -server / MESHCTL_SERVER and that meshanics-server is running)", host, err)
}

// apiPath joins escaped path segments under /api/v1.
func apiPath(segments ...string) string {
	var b strings.Builder
	b.WriteString("/api/v1")
	for _, s := range segments {
		b.WriteByte('/')
		b.WriteString(url.PathEscape(s))
	}
	return b.String()
}
