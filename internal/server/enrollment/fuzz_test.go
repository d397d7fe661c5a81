package enrollment

import (
	"encoding/json"
	"errors"
	"testing"

	"github.com/meshanics/meshanics/internal/errdefs"
	"github.com/meshanics/meshanics/internal/names"
)

// FuzzParseRequest: any bytes are either refused with ErrInvalid or yield a
// request whose every field is within bounds.
func FuzzParseRequest(f *testing.F) {
	f.Add([]byte(`{"token":"mst_aaaa","name":"edge-01","csr_pem":"x","hardware":{"arch":"amd64"},"tags":{"site":"lab"},"agent_version":"1.0"}`))
	f.Add([]byte(`{"token":"t","name":"a","csr_pem":"c","hardware":null}`))
	f.Add([]byte(`{"token":"t","name":"a","csr_pem":"c"} {}`))
	f.Add([]byte(`[]`))
	f.Fuzz(func(t *testing.T, in []byte) {
		r, err := ParseRequest(in)
		if err != nil {
			if !errors.Is(err, errdefs.ErrInvalid) {
				t.Fatalf("ParseRequest error %v is not ErrInvalid", err)
			}
			return
		}
		if names.ValidateDevice(r.Name) != nil || r.Token == "" || r.CSRPEM == "" || len(r.CSRPEM) > 8<<10 ||
			len(r.Tags) > maxTags || len(r.AgentVersion) > maxAgentVersion || len(r.Hardware) > maxHardwareBytes {
			t.Fatalf("ParseRequest accepted an out-of-bounds request: %+v", r)
		}
		if len(r.Hardware) > 0 && string(r.Hardware) != "null" {
			var obj map[string]any
			if json.Unmarshal(r.Hardware, &obj) != nil {
				t.Fatalf("hardware %q is not an object", r.Hardware)
			}
		}
	})
}
