package artifacts

import (
	"errors"
	"testing"

	"github.com/meshanics/meshanics/internal/errdefs"
)

// FuzzParseMetadata feeds the publish metadata parser untrusted bytes: it
// never panics, refuses with ErrInvalid, and what it accepts validates.
func FuzzParseMetadata(f *testing.F) {
	f.Add([]byte(`{"kind":"model","name":"det","version":"1.0","file_name":"m.onnx","manifest":{"framework":"onnx","metrics":{"map":0.61}}}`))
	f.Add([]byte(`{"kind":"config","name":"c","version":"1","config":{"activator":"place-file","destination":"/etc/app.conf","mode":"0640","reload":{"exec":["/usr/bin/app","reload"]}}}`))
	f.Add([]byte(`{"kind":"container","name":"w","version":"1","file_name":"x","container":{"image":"r/w@sha256:0000000000000000000000000000000000000000000000000000000000000000"}}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := ParseMetadata(data)
		if err != nil {
			if !errors.Is(err, errdefs.ErrInvalid) {
				t.Fatalf("ParseMetadata error %v is not ErrInvalid", err)
			}
			return
		}
		if err := m.Validate(); err != nil {
			t.Fatalf("accepted metadata does not validate: %v", err)
		}
	})
}
