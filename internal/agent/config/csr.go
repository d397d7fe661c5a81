package config

import (
	"flag"
	"io"

	"github.com/meshanics/meshanics/internal/names"
)

// CSR is the validated configuration of `meshanics-agent csr`, the device
// side of air-gapped provisioning (SPEC §2).
type CSR struct {
	Name      string
	ConfigDir string // holds device.key (created 0600 if missing)
	Out       string // CSR file; "" = stdout
}

// ParseCSR reads the csr subcommand's flags (flags only, like enroll).
// hostname supplies the default device name.
func ParseCSR(args []string, hostname string) (*CSR, error) {
	fs := flag.NewFlagSet("meshanics-agent csr", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	c := &CSR{}
	fs.StringVar(&c.Name, "name", names.DefaultDevice(hostname), "device name the CSR is for (default: the host name, lower-cased)")
	fs.StringVar(&c.ConfigDir, "config-dir", DefaultConfigDir, "where device.key is kept (created 0600 if missing; an existing key is reused)")
	fs.StringVar(&c.Out, "out", "", "write the CSR to this absolute path instead of stdout")
	if err := fs.Parse(args); err != nil {
		return nil, parseError(fs, err)
	}
	if fs.NArg() > 0 {
		return nil, errf("", "unexpected argument %q", truncate(fs.Arg(0)))
	}
	if err := names.ValidateDevice(c.Name); err != nil {
		return nil, errf("-name", "%v", err)
	}
	if !isAbsClean(c.ConfigDir) {
		return nil, errf("-config-dir", "%q must be an absolute clean path", truncate(c.ConfigDir))
	}
	if c.Out != "" && !isAbsClean(c.Out) {
		return nil, errf("-out", "%q must be an absolute clean path", truncate(c.Out))
	}
	return c, nil
}
