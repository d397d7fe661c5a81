package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/meshanics/meshanics/internal/agent"
	"github.com/meshanics/meshanics/internal/agent/config"
	"github.com/meshanics/meshanics/internal/agent/identity"
	"github.com/meshanics/meshanics/internal/atomicfile"
	"github.com/meshanics/meshanics/internal/names"
)

// runCSR is the device side of air-gapped provisioning (SPEC §2): it
// creates the device key in the config dir (or reuses the one there) and
// prints a CSR for it. The CSR travels to the operator on removable media,
// `meshctl devices provision-offline` turns it into a bundle (certificate,
// CA bundle, trust anchor, agent.env), and the bundle travels back. The
// key never leaves the device.
func runCSR(_ context.Context, args []string, stdout, stderr io.Writer) int {
	host, _ := os.Hostname()
	fset := flag.NewFlagSet("meshanics-agent csr", flag.ContinueOnError)
	fset.SetOutput(io.Discard)
	name := fset.String("name", names.DefaultDevice(host), "device name the CSR is for (default: the host name)")
	dir := fset.String("config-dir", config.DefaultConfigDir, "where device.key is kept (created 0600 if missing)")
	out := fset.String("out", "", "write the CSR to `FILE` instead of stdout")
	fail := func(flagName, format string, a ...any) int {
		fmt.Fprintf(stderr, "%s csr: configuration error: %v\n", binary, &config.Error{Flag: flagName, Msg: fmt.Sprintf(format, a...)})
		return agent.ExitConfig
	}
	if err := fset.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fset.SetOutput(stdout)
			fmt.Fprintf(stdout, "usage: meshanics-agent csr [-name NAME] [-config-dir /etc/meshanics] [-out FILE]\n\n")
			fset.PrintDefaults()
			return agent.ExitOK
		}
		return fail("", "%v", err)
	}
	if fset.NArg() > 0 {
		return fail("", "unexpected argument %q", fset.Arg(0))
	}
	if err := names.ValidateDevice(*name); err != nil {
		return fail("-name", "%v", err)
	}
	if !filepath.IsAbs(*dir) || filepath.Clean(*dir) != *dir {
		return fail("-config-dir", "%q must be an absolute clean path", *dir)
	}
	if *out != "" && !filepath.IsAbs(*out) {
		return fail("-out", "%q must be an absolute path", *out)
	}
	csr, err := deviceCSR(filepath.Join(*dir, "device.key"), *name)
	if err != nil {
		fmt.Fprintf(stderr, "%s csr: %v\n", binary, err)
		return agent.ExitFailure
	}
	if *out == "" {
		_, err = stdout.Write(csr)
	} else {
		err = atomicfile.WriteFile(*out, csr, 0o644)
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
