package config

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/meshanics/meshanics/internal/artifact"
)

// FuzzPolicyCheck: whatever destination a signed descriptor names, an
// accepted one lies strictly under the allowed prefix and its parent's real
// path stays inside it.
func FuzzPolicyCheck(f *testing.F) {
	for _, s := range []string{"app.conf", "sub/app.conf", "../app-evil/x", "link/x", "//x", "dest-link.conf", "a/../../x", "sub/../app.conf"} {
		f.Add(s)
	}
	root, app := tree(f)
	p := Policy{Dest: []string{app}}
	f.Fuzz(func(t *testing.T, rel string) {
		dest := app + "/" + rel
		if strings.HasPrefix(rel, "/") {
			dest = rel
		}
		err := p.Check(&artifact.ConfigProfile{Activator: "place-file", Destination: dest, Mode: "0644"})
		if err != nil {
			return
		}
		if !within(dest, app) {
			t.Fatalf("accepted %q outside %s", dest, app)
		}
		real, rerr := filepath.EvalSymlinks(filepath.Dir(dest))
		if rerr != nil || !inside(real, app) {
			t.Fatalf("accepted %q whose parent resolves to %q (%v), outside %s", dest, real, rerr, app)
		}
		if strings.HasPrefix(real, filepath.Join(root, "outside")) {
			t.Fatalf("accepted %q leading outside", dest)
		}
	})
}
