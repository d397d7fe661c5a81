package agentenv

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestRead(t *testing.T) {
	p := filepath.Join(t.TempDir(), "agent.env")
	os.WriteFile(p, []byte("# comment\n\nMESHANICS_SERVER=127.0.0.1:9443\nMESHANICS_TAGS=a=b,c=d\n"), 0o600)
	got, err := Read(p)
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"MESHANICS_SERVER=127.0.0.1:9443", "MESHANICS_TAGS=a=b,c=d"}; !cmp.Equal(got, want) {
		t.Errorf("Read = %q, want %q", got, want)
	}
	os.WriteFile(p, []byte("PATH=/tmp/evil\n"), 0o600)
	if _, err := Read(p); err == nil {
		t.Error("Read accepted a variable that is not MESHANICS_*")
	}
}
