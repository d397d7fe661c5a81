package enroll

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/meshanics/meshanics/internal/agent/config"
	"github.com/meshanics/meshanics/internal/agent/identity"
	"github.com/meshanics/meshanics/internal/atomicfile"
)

// creds are the checked parts of a response.
type creds struct {
	certPEM, caPEM, root []byte // root is nil when the server sent no anchor
}

// checkResponse refuses a response that would leave the device with
// credentials it cannot use: another name, another key, a certificate or CA
// bundle that does not chain to the pinned CA, a malformed trust anchor.
func checkResponse(r *Response, key *ecdsa.PrivateKey, c *config.Enroll, now time.Time) (creds, error) {
	var out creds
	if r.Device != c.Name {
		return out, fmt.Errorf("enroll: server enrolled %q, asked for %q", truncate(r.Device), c.Name)
	}
	cas, err := identity.ParseCerts([]byte(r.CAPEM))
	if err != nil {
		return out, fmt.Errorf("enroll: ca_pem: %w", err)
	}
	roots := x509.NewCertPool()
	pinned := false
	for _, ca := range cas {
		if identity.Fingerprint(ca) == c.CAPin {
			pinned = true
		}
		roots.AddCert(ca)
	}
	if !pinned {
		return out, fmt.Errorf("enroll: ca_pem: %w", ErrPinMismatch)
	}
	certs, err := identity.ParseCerts([]byte(r.CertificatePEM))
	if err != nil {
		return out, fmt.Errorf("enroll: certificate_pem: %w", err)
	}
	if !identity.SameKey(certs[0], key) {
		return out, errors.New("enroll: the issued certificate is not for this device's key")
	}
	if _, err := certs[0].Verify(x509.VerifyOptions{
		Roots: roots, CurrentTime: now, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}); err != nil {
		return out, fmt.Errorf("enroll: issued certificate: %w", err)
	}
	if err := config.ValidateHostPort("config.server", r.Config.Server); err != nil {
		return out, fmt.Errorf("enroll: response %w", err)
	}
	if a := r.Config.ArtifactServer; a != "" {
		if err := config.ValidateHTTPSURL("config.artifact_server", a); err != nil {
			return out, fmt.Errorf("enroll: response %w", err)
		}
	}
	if anchor := bytes.TrimSpace(r.TrustAnchor); len(anchor) > 0 && !bytes.Equal(anchor, []byte("null")) {
		var obj map[string]json.RawMessage
		if err := json.Unmarshal(anchor, &obj); err != nil || obj["signed"] == nil {
			return out, errors.New("enroll: trust_anchor is not a TUF root metadata object")
		}
		out.root = append(anchor, '\n')
	}
	out.certPEM, out.caPEM = []byte(r.CertificatePEM), []byte(r.CAPEM)
	return out, nil
}

// writeFiles writes the credentials, the trust anchor (unless one exists:
// an upgrade keeps the pinned root, which only TUF root rotation changes)
// and agent.env. It reports whether an existing root.json was kept.
func writeFiles(c *config.Enroll, r *Response, cr creds) (keptRoot bool, err error) {
	dir := c.ConfigDir
	if err := atomicfile.WriteFile(filepath.Join(dir, CertFile), cr.certPEM, 0o644); err != nil {
		return false, err
	}
	if err := atomicfile.WriteFile(filepath.Join(dir, CAFile), cr.caPEM, 0o644); err != nil {
		return false, err
	}
	rootPath := filepath.Join(dir, RootFile)
	_, statErr := os.Stat(rootPath)
	haveRoot := statErr == nil
	switch {
	case haveRoot:
		keptRoot = true
	case !errors.Is(statErr, fs.ErrNotExist):
		return false, fmt.Errorf("root.json: %w", statErr)
	case cr.root != nil:
		if err := atomicfile.WriteFile(rootPath, cr.root, 0o644); err != nil {
			return false, err
		}
		haveRoot = true
	}
	artifactServer := ""
	if haveRoot {
		artifactServer = r.Config.ArtifactServer
	}
	env, err := renderEnv(c, r.Config.Server, artifactServer)
	if err != nil {
		return keptRoot, err
	}
	return keptRoot, atomicfile.WriteFile(filepath.Join(dir, AgentEnvFile), env, 0o600)
}

// renderEnv builds agent.env, the unit's EnvironmentFile. Values are kept
// plain (no quoting needed): anything that systemd would interpret is
// refused.
func renderEnv(c *config.Enroll, server, artifactServer string) ([]byte, error) {
	var b bytes.Buffer
	b.WriteString("# Written by `meshanics-agent enroll`; read by meshanics-agent.service (EnvironmentFile=).\n")
	var bad error
	put := func(key, flagName, val string) {
		if val == "" || bad != nil {
			return
		}
		if strings.ContainsAny(val, " \t\r\n\"'\\$`") {
			bad = &config.Error{Flag: flagName, Msg: fmt.Sprintf("%q cannot be written to agent.env (no whitespace, quotes, '\\', '$' or '`')", truncate(val))}
			return
		}
		fmt.Fprintf(&b, "%s=%s\n", key, val)
	}
	list := func(key, flagName string, vals []string) {
		if bad != nil {
			return
		}
		for _, v := range vals {
			if strings.Contains(v, ",") {
				bad = &config.Error{Flag: flagName, Msg: fmt.Sprintf("%q: a ',' cannot be carried in %s", truncate(v), key)}
				return
			}
		}
		put(key, flagName, strings.Join(vals, ","))
	}
	put("MESHANICS_SERVER", "-url", server)
	put("MESHANICS_CERT", "-config-dir", filepath.Join(c.ConfigDir, CertFile))
	put("MESHANICS_KEY", "-config-dir", filepath.Join(c.ConfigDir, KeyFile))
	put("MESHANICS_CA", "-config-dir", filepath.Join(c.ConfigDir, CAFile))
	if artifactServer != "" {
		put("MESHANICS_ARTIFACT_SERVER", "-url", artifactServer)
		put("MESHANICS_TUF_ROOT", "-config-dir", filepath.Join(c.ConfigDir, RootFile))
	}
	put("MESHANICS_DATA_DIR", "-data-dir", c.DataDir)
	put("MESHANICS_CONTAINER_RUNTIME", "-container-runtime", c.Runtime)
	put("MESHANICS_LOG_LEVEL", "-log-level", c.LogLevel)
	var tags []string
	for k, v := range c.Tags {
		tags = append(tags, k+"="+v)
	}
	slices.Sort(tags)
	list("MESHANICS_TAGS", "-tag", tags)
	list("MESHANICS_ALLOW_EXEC_PROBE", "-allow-exec-probe", c.Allow.ExecProbe)
	list("MESHANICS_ALLOW_CONFIG_DEST", "-allow-config-dest", c.Allow.ConfigDest)
	list("MESHANICS_ALLOW_RELOAD_UNIT", "-allow-reload-unit", c.Allow.ReloadUnit)
	list("MESHANICS_ALLOW_RELOAD_EXEC", "-allow-reload-exec", c.Allow.ReloadExec)
	if bad != nil {
		return nil, bad
	}
	return b.Bytes(), nil
}

func truncate(s string) string {
	if len(s) > 80 {
		return s[:80] + "…"
	}
	return s
}
