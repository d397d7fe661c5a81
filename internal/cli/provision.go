package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"strings"
)

// provisionResponse is the body of POST /api/v1/devices/provision (the
// body of POST /api/v1/enroll).
type provisionResponse struct {
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

// maxCSRFile bounds the CSR read from removable media (the server takes 8 KiB).
const maxCSRFile = 16 << 10

// Bundle file names, as `meshanics-agent enroll` writes them.
var bundleFiles = []string{"device.crt", "ca.pem", "root.json", "agent.env"}

// devicesProvisionOffline is air-gapped provisioning (SPEC §2): the CSR
// made on the device (`meshanics-agent csr`) comes in on removable media,
// and a bundle goes back with what `meshanics-agent enroll` would have
// written except the key, which never left the device.
func devicesProvisionOffline(ctx context.Context, a *app, fs *flag.FlagSet, args []string) error {
	csrFile := fs.String("csr", "", "the device's CSR `FILE` (from `meshanics-agent csr`; required)")
	out := fs.String("out", "", "bundle `DIR` to write device.crt, ca.pem, root.json, agent.env into (created; required)")
	tags := tagsFlag{}
	fs.Var(tags, "tag", "device tag `key=value` (repeatable)")
	replace := fs.Bool("replace", false, "let a new key take over an active name (recovery of a wiped device)")
	cfgDir := fs.String("config-dir", "/etc/meshanics", "`DIR` the bundle is placed in on the device (paths in agent.env)")
	dataDir := fs.String("data-dir", "/var/lib/meshanics", "the agent's data `DIR` written into agent.env")
	name, err := deviceArg(fs, args)
	if err != nil {
		return err
	}
	if *csrFile == "" || *out == "" {
		return usagef("devices provision-offline: -csr FILE and -out DIR are required")
	}
	for _, p := range []struct{ flag, val string }{{"-config-dir", *cfgDir}, {"-data-dir", *dataDir}} {
		if !filepath.IsAbs(p.val) || filepath.Clean(p.val) != p.val || strings.ContainsAny(p.val, " \t\r\n\"'\\$`,") {
			return usagef("%s %q: want an absolute clean path without whitespace, quotes, '\\', '$' or ','", p.flag, p.val)
		}
	}
	csr, err := readBoundedFile(*csrFile, maxCSRFile)
	if err != nil {
		return fmt.Errorf("-csr: %w", err)
	}
	if err := bundleDirFree(*out); err != nil {
		return err
	}
	c, err := a.api()
	if err != nil {
		return err
	}
	body := map[string]any{"name": name, "csr_pem": string(csr), "replace": *replace}
	if len(tags) > 0 {
		body["tags"] = map[string]string(tags)
	}
	resp, err := c.do(ctx, http.MethodPost, apiPath("devices", "provision"), nil, body)
	if err != nil {
		return err
	}
	var pr provisionResponse
	if err := decodeBody(resp, &pr); err != nil {
		return err
	}
	if err := writeBundle(*out, pr, *cfgDir, *dataDir); err != nil {
		return err
	}
	if a.jsonOut() {
		return a.writeRaw(resp.body)
	}
	fmt.Fprintf(a.stdout, "provisioned %s in fleet %s; bundle in %s\nCopy its files into %s on the device (next to device.key) and start the agent with EnvironmentFile=%s.\n",
		pr.Device, pr.Fleet, *out, *cfgDir, filepath.Join(*cfgDir, "agent.env"))
	return nil
}

func readBoundedFile(path string, limit int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, err
	}
	if int64(len(b)) > limit {
		return nil, fmt.Errorf("%s is larger than %d bytes", path, limit)
	}
	return b, nil
}

// bundleDirFree refuses a bundle dir that already holds a bundle file:
// provisioning twice into one dir must not silently mix two identities.
func bundleDirFree(dir string) error {
	for _, f := range bundleFiles {
		_, err := os.Lstat(filepath.Join(dir, f))
		if err == nil {
			return fmt.Errorf("-out %s already holds %s; use an empty directory", dir, f)
		}
		if !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("-out: %w", err)
		}
	}
	return nil
}

func writeBundle(dir string, pr provisionResponse, cfgDir, dataDir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("bundle dir: %w", err)
	}
	files := map[string][]byte{
		"device.crt": []byte(pr.CertificatePEM),
		"ca.pem":     []byte(pr.CAPEM),
	}
	anchor := bytes.TrimSpace(pr.TrustAnchor)
	ota := len(anchor) > 0 && string(anchor) != "null"
	if ota {
		files["root.json"] = append(anchor, '\n')
	}
	env, err := agentEnv(pr, cfgDir, dataDir, ota)
	if err != nil {
		return err
	}
	files["agent.env"] = env
	for _, f := range bundleFiles {
		b, ok := files[f]
		if !ok {
			continue
		}
		mode := os.FileMode(0o644)
		if f == "agent.env" {
			mode = 0o600
		}
		// O_EXCL: never follow or overwrite something placed in the dir meanwhile.
		fh, err := os.OpenFile(filepath.Join(dir, f), os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
		if err != nil {
			return fmt.Errorf("bundle: %w", err)
		}
		_, werr := fh.Write(b)
		if err := errors.Join(werr, fh.Sync(), fh.Close()); err != nil {
			return fmt.Errorf("bundle %s: %w", f, err)
		}
	}
	return nil
}

// agentEnv renders agent.env like `meshanics-agent enroll` does. Values
// come from the server's answer; anything systemd would interpret is
// refused.
func agentEnv(pr provisionResponse, cfgDir, dataDir string, ota bool) ([]byte, error) {
	var b bytes.Buffer
	b.WriteString("# Written by `meshctl devices provision-offline`; read by meshanics-agent.service (EnvironmentFile=).\n")
	lines := [][2]string{
		{"MESHANICS_SERVER", pr.Config.Server},
		{"MESHANICS_CERT", filepath.Join(cfgDir, "device.crt")},
		{"MESHANICS_KEY", filepath.Join(cfgDir, "device.key")},
		{"MESHANICS_CA", filepath.Join(cfgDir, "ca.pem")},
	}
	if ota && pr.Config.ArtifactServer != "" {
		lines = append(lines, [2]string{"MESHANICS_ARTIFACT_SERVER", pr.Config.ArtifactServer},
			[2]string{"MESHANICS_TUF_ROOT", filepath.Join(cfgDir, "root.json")})
	}
	lines = append(lines, [2]string{"MESHANICS_DATA_DIR", dataDir})
	for _, l := range lines {
		if l[1] == "" || strings.ContainsAny(l[1], " \t\r\n\"'\\$`") {
			return nil, fmt.Errorf("server answered an unusable %s %q", l[0], l[1])
		}
		fmt.Fprintf(&b, "%s=%s\n", l[0], l[1])
	}
	return b.Bytes(), nil
}
