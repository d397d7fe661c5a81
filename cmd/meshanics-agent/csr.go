package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/meshanics/meshanics/internal/agent"
	"github.com/meshanics/meshanics/internal/agent/config"
	"github.com/meshanics/meshanics/internal/agent/identity"
	"github.com/meshanics/meshanics/internal/atomicfile"
)

// runCSR is the device side of air-gapped provisioning (SPEC §2): it
// creates the device key in the config dir (or reuses the one there) and
// prints a CSR for it. The CSR travels to the operator on removable media,
// `meshctl devices provision-offline` turns it into a bundle (certificate,
// CA bundle, trust anchor, agent.env), and the bundle travels back. The
// key never leaves the device.
func runCSR(_ context.Context, args []string, stdout, stderr io.Writer) int {
	host, _ := os.Hostname()
	c, err := config.ParseCSR(args, host)
	if h := (*config.Help)(nil); errors.As(err, &h) {
		fmt.Fprintf(stdout, "usage: meshanics-agent csr [-name NAME] [-config-dir /etc/meshanics] [-out FILE]\n\n%s", h.Usage)
		return agent.ExitOK
	}
	if err != nil {
		fmt.Fprintf(stderr, "%s csr: configuration error: %v\n", binary, err)
		return agent.ExitConfig
	}
	csr, err := deviceCSR(filepath.Join(c.ConfigDir, "device.key"), c.Name)
	if err != nil {
		fmt.Fprintf(stderr, "%s csr: %v\n", binary, err)
		return agent.ExitFailure
	}
	if c.Out == "" {
		_, err = stdout.Write(csr)
	} else {
		err = atomicfile.WriteFile(c.Out, csr, 0o644)
	}
	if err != nil {
		fmt.Fprintf(stderr, "%s csr: write: %v\n", binary, err)
		return agent.ExitFailure
	}
	return agent.ExitOK
}

// deviceCSR returns a CSR for the key at path, creating the key first (and
// its directory, 0700) if there is none. An unreadable key is an error:
// it is never silently replaced.
func deviceCSR(path, name string) ([]byte, error) {
	key, err := identity.ReadKeyFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		if key, err = identity.GenerateKey(); err != nil {
			return nil, err
		}
		b, err := identity.EncodeKey(key)
		if err != nil {
			return nil, err
		}
		if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
			return nil, fmt.Errorf("config dir: %w", err)
		}
		if err := atomicfile.WriteFile(path, b, 0o600); err != nil {
			return nil, err
		}
	} else if err != nil {
		return nil, fmt.Errorf("existing device key: %w", err)
	}
	return identity.CSR(key, name)
}
