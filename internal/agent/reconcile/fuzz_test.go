package reconcile

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/meshanics/meshanics/internal/agent/apply/file"
	devicev1 "github.com/meshanics/meshanics/proto/meshanics/device/v1"
)

// FuzzNewTask: an assignment from the server either fails validation or
// yields a task whose id is a safe file name and whose staging path stays
// inside the artifact tree.
func FuzzNewTask(f *testing.F) {
	sha := strings.Repeat("ab", 32)
	f.Add("a1", "apply", "model", "det", "1.0", "artifacts/model/det/1.0/model.onnx", sha, int64(10), "", "")
	f.Add("a2", "revert", "config", "app", "2", "artifacts/config/app/2/app.conf", sha, int64(1), "app", "1")
	f.Add("../x", "apply", "model", "..", "..", "artifacts/model/../../x", sha, int64(-1), "", "")
	layout := file.Layout{Root: "/data/artifacts"}
	f.Fuzz(func(t *testing.T, id, action, kind, name, version, target, sum string, length int64, rvName, rvVersion string) {
		a := &devicev1.Assignment{Id: id, Action: action,
			Artifact: &devicev1.Artifact{Kind: kind, Name: name, Version: version, TargetPath: target, Sha256: sum, Length: length},
			Probe:    &devicev1.HealthProbe{Type: "file", Target: "/x"}}
		if rvName != "" {
			a.RevertTo = &devicev1.Artifact{Name: rvName, Version: rvVersion}
		}
		if validID(id) != nil {
			return // Reconcile ignores it before newTask
		}
		task, err := newTask(a, 0)
		if err != nil {
			return
		}
		staged, err := layout.StagedFile(task.Artifact.Name, task.Artifact.Version, fileName(task.Artifact.TargetPath))
		if err != nil {
			t.Fatalf("accepted task has no staging path: %v", err)
		}
		rel, err := filepath.Rel(layout.Root, staged)
		if err != nil || strings.HasPrefix(rel, "..") || filepath.Clean(staged) != staged {
			t.Fatalf("staging path %q escapes %s", staged, layout.Root)
		}
		if task.Artifact.Length < 1 || len(task.Artifact.SHA256) != 64 {
			t.Fatalf("accepted bad digest/length: %+v", task.Artifact)
		}
	})
}
