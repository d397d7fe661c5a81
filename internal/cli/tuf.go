package cli

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"time"

	"github.com/meshanics/meshanics/internal/ceremony"
)

func tufGroup() *group {
	return &group{
		name:    "tuf",
		summary: "The offline signing ceremony (root and targets keys never touch the server), and import of its result.",
		cmds: []*command{
			{name: "init", summary: "create root and targets keys in -keys DIR and sign root v1 + targets v1 (offline)", run: tufInit},
			{name: "export", summary: "write the signed root chain and targets.json to -out DIR (offline)", run: tufExport},
			{name: "rotate-root", summary: "replace the root keys; the new root is signed by old and new keys (offline)", run: tufRotateRoot},
			{name: "rotate-publisher", summary: "re-delegate artifacts to a new publisher key (offline)", run: tufRotatePublisher},
			{name: "sign", summary: "renew the expiry of root and targets with the same keys (offline)", run: tufSign},
			{name: "import", args: "DIR", summary: "upload the signed metadata in DIR (from export or the key directory) to the server", run: tufImport},
		},
	}
}

// keysFlag declares -keys on fs.
func keysFlag(fs *flag.FlagSet) *string {
	return fs.String("keys", "", "ceremony `DIR` holding the offline keys (0600 files) and the signed metadata")
}

func readOnlineKeys(path string) (ceremony.OnlineKeys, error) {
	if path == "" {
		return ceremony.OnlineKeys{}, usagef("-online-keys FILE is required (write it with: meshctl -o json trust online-keys > FILE)")
	}
	f, err := os.Open(path)
	if err != nil {
		return ceremony.OnlineKeys{}, usagef("-online-keys: %v", err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, ceremony.MaxOnlineKeysBytes+1))
	if err != nil {
		return ceremony.OnlineKeys{}, usagef("-online-keys: %v", err)
	}
	ok, err := ceremony.ParseOnlineKeys(data)
	if err != nil {
		return ceremony.OnlineKeys{}, usagef("-online-keys %s: %v", path, err)
	}
	return ok, nil
}

// describe prints what a ceremony step produced: versions, expiries and
// key ids (never key material).
func describe(a *app, what string, st *ceremony.State) {
	r := st.Root.Signed
	fmt.Fprintf(a.stdout, "%s\n", what)
	fmt.Fprintf(a.stdout, "  root v%d, expires %s, threshold %d of %d keys\n", r.Version, fmtTime(r.Expires), r.Roles["root"].Threshold, len(r.Roles["root"].KeyIDs))
	for _, id := range r.Roles["root"].KeyIDs {
		fmt.Fprintf(a.stdout, "    root key %s\n", id)
	}
	fmt.Fprintf(a.stdout, "  targets v%d, expires %s, key %v\n", st.Targets.Signed.Version, fmtTime(st.Targets.Signed.Expires), r.Roles["targets"].KeyIDs)
	fmt.Fprintf(a.stdout, "  online: snapshot %v, timestamp %v, publisher %v (paths %v)\n",
		r.Roles["snapshot"].KeyIDs, r.Roles["timestamp"].KeyIDs, ceremony.PublisherKeyIDs(st.Targets), ceremony.PublisherPaths)
}

func needKeys(dir string) error {
	if dir == "" {
		return usagef("-keys DIR is required")
	}
	return nil
}

func tufInit(_ context.Context, a *app, fs *flag.FlagSet, args []string) error {
	dir := keysFlag(fs)
	online := fs.String("online-keys", "", "`FILE` with the server's online public keys (meshctl -o json trust online-keys)")
	n := fs.Int("root-keys", 1, "number of root keys")
	th := fs.Int("root-threshold", 1, "root signatures required")
	if _, err := parseArgs(fs, args, 0, 0); err != nil {
		return err
	}
	if err := needKeys(*dir); err != nil {
		return err
	}
	ok, err := readOnlineKeys(*online)
	if err != nil {
		return err
	}
	st, err := ceremony.Init(*dir, ceremony.InitOptions{RootKeys: *n, RootThreshold: *th, Online: ok, Now: time.Now()})
	if err != nil {
		return err
	}
	describe(a, "Created a trust root in "+*dir+". Keep this directory offline; next: meshctl tuf export, then meshctl tuf import.", st)
	return nil
}

func tufExport(_ context.Context, a *app, fs *flag.FlagSet, args []string) error {
	dir := keysFlag(fs)
	out := fs.String("out", "", "`DIR` to write N.root.json…, root.json and targets.json to (no keys)")
	if _, err := parseArgs(fs, args, 0, 0); err != nil {
		return err
	}
	if err := needKeys(*dir); err != nil {
		return err
	}
	if *out == "" {
		return usagef("-out DIR is required")
	}
	files, err := ceremony.Export(*dir, *out)
	if err != nil {
		return err
	}
	for _, f := range files {
		fmt.Fprintln(a.stdout, f)
	}
	return nil
}

func tufRotateRoot(_ context.Context, a *app, fs *flag.FlagSet, args []string) error {
	dir := keysFlag(fs)
	n := fs.Int("root-keys", 0, "number of new root keys (default: as many as now)")
	th := fs.Int("root-threshold", 0, "root signatures required (default: as now)")
	online := fs.String("online-keys", "", "optional `FILE`: also replace the snapshot, timestamp and publisher keys")
	if _, err := parseArgs(fs, args, 0, 0); err != nil {
		return err
	}
	if err := needKeys(*dir); err != nil {
		return err
	}
	opts := ceremony.RotateRootOptions{RootKeys: *n, RootThreshold: *th, Now: time.Now()}
	if *online != "" {
		ok, err := readOnlineKeys(*online)
		if err != nil {
			return err
		}
		opts.Online = &ok
	}
	st, err := ceremony.RotateRoot(*dir, opts)
	if err != nil {
		return err
	}
	describe(a, "Rotated root (old keys moved to "+*dir+"/retired). Next: meshctl tuf import.", st)
	return nil
}

func tufRotatePublisher(_ context.Context, a *app, fs *flag.FlagSet, args []string) error {
	dir := keysFlag(fs)
	online := fs.String("online-keys", "", "`FILE` naming the server's new publisher key (after meshctl trust rotate-key publisher)")
	if _, err := parseArgs(fs, args, 0, 0); err != nil {
		return err
	}
	if err := needKeys(*dir); err != nil {
		return err
	}
	ok, err := readOnlineKeys(*online)
	if err != nil {
		return err
	}
	st, err := ceremony.RotatePublisher(*dir, ok.Publisher, time.Now())
	if err != nil {
		return err
	}
	describe(a, "Re-delegated artifacts to publisher key "+ceremony.KeyID(ok.Publisher)+". Next: meshctl tuf import.", st)
	return nil
}

func tufSign(_ context.Context, a *app, fs *flag.FlagSet, args []string) error {
	dir := keysFlag(fs)
	if _, err := parseArgs(fs, args, 0, 0); err != nil {
		return err
	}
	if err := needKeys(*dir); err != nil {
		return err
	}
	st, err := ceremony.Resign(*dir, time.Now())
	if err != nil {
		return err
	}
	describe(a, "Renewed root and targets. Next: meshctl tuf import.", st)
	return nil
}

// tufImportRequest is the body of POST /api/v1/trust/metadata.
type tufImportRequest struct {
	Roots   []json.RawMessage `json:"roots"`
	Targets json.RawMessage   `json:"targets,omitempty"`
}

func tufImport(ctx context.Context, a *app, fs *flag.FlagSet, args []string) error {
	pos, err := parseArgs(fs, args, 1, 1)
	if err != nil {
		return err
	}
	roots, targets, err := ceremony.Bundle(pos[0])
	if err != nil {
		return usagef("%v", err)
	}
	req := tufImportRequest{Targets: targets}
	for _, r := range roots {
		req.Roots = append(req.Roots, r)
	}
	return printObject(ctx, a, http.MethodPost, apiPath("trust", "metadata"), req, func(res tufImportResult) error {
		fmt.Fprintf(a.stdout, "Imported %d root version(s); the server now trusts root v%d and targets v%d (snapshot and timestamp re-signed).\n",
			res.ImportedRoots, res.RootVersion, res.TargetsVersion)
		return nil
	})
}

// tufImportResult is the body of the POST /api/v1/trust/metadata response.
type tufImportResult struct {
	RootVersion    int64 `json:"root_version"`
	TargetsVersion int64 `json:"targets_version"`
	ImportedRoots  int   `json:"imported_roots"`
	ImportedTarget bool  `json:"imported_targets"`
}
