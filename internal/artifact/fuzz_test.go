package artifact

import (
	"encoding/json"
	"strings"
	"testing"
)

// FuzzCustom runs untrusted descriptor bytes through the strict decoder
// and the validators: never a panic, and whatever validates re-encodes to
// something that decodes and validates again (the device re-validates the
// server's encoding).
func FuzzCustom(f *testing.F) {
	f.Add([]byte(`{"kind":"model","name":"det","version":"1.0","manifest":{"framework":"onnx","metrics":{"map":0.5}}}`))
	f.Add([]byte(`{"kind":"config","name":"c","version":"1","config":{"activator":"place-file","destination":"/etc/app.conf","mode":"0644","reload":{"systemd_unit":"app.service"}}}`))
	f.Add([]byte(`{"kind":"container","name":"w","version":"1","container":{"image":"r.example/w@sha256:` + strings.Repeat("a", 64) + `","ports":[{"host":8080,"container":80}]}}`))
	f.Add([]byte(`{"kind":"config","name":"c","version":"1","config":{"activator":"place-file","destination":"/etc/../x","mode":"4755","reload":{"exec":["sh","-c","x"]}}}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		var c Custom
		if err := DecodeStrict(data, &c); err != nil {
			return
		}
		if err := c.Validate(); err != nil {
			return
		}
		b, err := json.Marshal(c)
		if err != nil {
			t.Fatalf("valid descriptor does not encode: %v", err)
		}
		var again Custom
		if err := DecodeStrict(b, &again); err != nil {
			t.Fatalf("re-encoded descriptor does not decode: %v\n%s", err, b)
		}
		if err := again.Validate(); err != nil {
			t.Fatalf("re-encoded descriptor does not validate: %v\n%s", err, b)
		}
	})
}

// FuzzParseTargetPath checks that every accepted path round-trips through
// TargetPath and has no traversal element.
func FuzzParseTargetPath(f *testing.F) {
	f.Add("artifacts/model/det/1.0/model.onnx")
	f.Add("artifacts/config/c/1/../../etc/passwd")
	f.Add("artifacts/container/w/1/container.json")
	f.Fuzz(func(t *testing.T, p string) {
		kind, name, version, file, err := ParseTargetPath(p)
		if err != nil {
			return
		}
		if got := TargetPath(kind, name, version, file); got != p {
			t.Fatalf("TargetPath(ParseTargetPath(%q)) = %q", p, got)
		}
		for _, el := range strings.Split(p, "/") {
			if el == ".." || el == "." || el == "" {
				t.Fatalf("ParseTargetPath accepted %q with element %q", p, el)
			}
		}
	})
}

func TestValidateRejects(t *testing.T) {
	bad := []string{
		`{"kind":"model","name":"det","version":"1"}`,
		`{"kind":"model","name":"det","version":"1","manifest":{"framework":"ONNX!"}}`,
		`{"kind":"config","name":"c","version":"1","config":{"activator":"place-file","destination":"/etc/x","mode":"1777"}}`,
		`{"kind":"config","name":"c","version":"1","config":{"activator":"place-file","destination":"/etc/x","mode":"0644","reload":{"exec":["rel/bin"]}}}`,
		`{"kind":"config","name":"c","version":"1","config":{"activator":"place-file","destination":"/etc/x","mode":"0644","reload":{"systemd_unit":"a.service","exec":["/bin/x"]}}}`,
		`{"kind":"container","name":"w","version":"1","container":{"image":"nginx:latest"}}`,
		`{"kind":"container","name":"w","version":"1","container":{"image":"r/w@sha256:` + strings.Repeat("a", 64) + `","restart":"sometimes"}}`,
		`{"kind":"container","name":"w","version":"1","container":{"image":"r/w@sha256:` + strings.Repeat("a", 64) + `","privileged":true}}`,
		`{"kind":"firmware","name":"f","version":"1"}`,
	}
	for _, s := range bad {
		var c Custom
		err := DecodeStrict([]byte(s), &c)
		if err == nil {
			err = c.Validate()
		}
		if err == nil {
			t.Errorf("descriptor accepted, want refusal: %s", s)
		}
	}
}

// FuzzDecodeTargetCustom runs signed-but-untrusted target custom metadata
// through the device's decoder; what it accepts round-trips.
func FuzzDecodeTargetCustom(f *testing.F) {
	seed, _ := EncodeTargetCustom(Custom{Kind: KindModel, Name: "det", Version: "1", Manifest: &ModelManifest{Framework: "onnx", Metrics: map[string]float64{"map": 0.61}}})
	f.Add([]byte(seed))
	f.Add([]byte(`{"meshanics_descriptor":"{}"}`))
	f.Add([]byte(`{"meshanics_descriptor":1}`))
	f.Fuzz(func(t *testing.T, raw []byte) {
		c, err := DecodeTargetCustom(raw)
		if err != nil {
			return
		}
		enc, err := EncodeTargetCustom(c)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := DecodeTargetCustom(enc); err != nil {
			t.Fatalf("re-encoded custom metadata does not decode: %v", err)
		}
	})
}
