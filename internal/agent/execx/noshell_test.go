package execx

import (
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// TestNoShellInAgentTree walks every non-test Go file under internal/agent
// and cmd/meshanics-agent: only this package may import os/exec, and no
// string literal names a shell binary.
func TestNoShellInAgentTree(t *testing.T) {
	roots := []string{"..", filepath.Join("..", "..", "..", "cmd", "meshanics-agent")}
	files := 0
	for _, root := range roots {
		err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				if p != root {
					return err
				}
				return fs.SkipDir // the agent binary may not exist yet
			}
			if d.IsDir() && d.Name() == "testdata" {
				return fs.SkipDir
			}
			if d.IsDir() || !strings.HasSuffix(p, ".go") || strings.HasSuffix(p, "_test.go") {
				return nil
			}
			files++
			checkFile(t, p)
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	if files < 2 {
		t.Fatalf("walked %d files, the walk is broken", files)
	}
}

var spawners = map[string]bool{
	"os.StartProcess": true, "syscall.Exec": true, "syscall.ForkExec": true, "syscall.StartProcess": true,
	"unix.Exec": true, "unix.ForkExec": true,
}

func checkFile(t *testing.T, p string) {
	fset := token.NewFileSet()
	f, err := parser.ParseFile(fset, p, nil, parser.SkipObjectResolution)
	if err != nil {
		t.Fatalf("parse %s: %v", p, err)
	}
	inExecx := filepath.Base(filepath.Dir(p)) == "execx"
	for _, imp := range f.Imports {
		path, _ := strconv.Unquote(imp.Path.Value)
		if path == "os/exec" && !inExecx {
			t.Errorf("%s imports os/exec; run programs through execx", p)
		}
	}
	ast.Inspect(f, func(n ast.Node) bool {
		if sel, ok := n.(*ast.SelectorExpr); ok && !inExecx {
			if x, ok := sel.X.(*ast.Ident); ok && spawners[x.Name+"."+sel.Sel.Name] {
				t.Errorf("%s: %s.%s starts a process outside execx", fset.Position(sel.Pos()), x.Name, sel.Sel.Name)
			}
		}
		lit, ok := n.(*ast.BasicLit)
		if !ok || lit.Kind != token.STRING {
			return true
		}
		s, err := strconv.Unquote(lit.Value)
		if err != nil {
			return true
		}
		if shells[filepath.Base(s)] && strings.HasPrefix(s, "/") || s == "-c" {
			if !inExecx {
				t.Errorf("%s: string %q looks like a shell invocation", fset.Position(lit.Pos()), s)
			}
		}
		return true
	})
}
