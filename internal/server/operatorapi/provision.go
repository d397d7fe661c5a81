package operatorapi

import (
	"context"
	"fmt"
	"net/http"

	"github.com/meshanics/meshanics/internal/server/enrollment"
	"github.com/meshanics/meshanics/internal/server/httpjson"
)

// provisioner is implemented by a TokenService that can also provision a
// device offline from a CSR (enrollment.Service): air-gapped devices
// (SPEC §2, `meshctl devices provision-offline`) get the enrollment
// response without a token, on the operator's enrollment.write permission.
type provisioner interface {
	Provision(ctx context.Context, actor string, req enrollment.ProvisionRequest) (enrollment.Response, error)
}

// maxProvisionBody bounds POST /api/v1/devices/provision: a CSR (8 KiB at
// most), a name and tags.
const maxProvisionBody = 64 << 10

func (a *API) registerProvision(mux *http.ServeMux) {
	a.handle(mux, "POST /api/v1/devices/provision", EnrollmentWrite, a.provisionDevice)
}

// provisionDevice answers 201 with the body of POST /api/v1/enroll
// (certificate, CA bundle, trust anchor, connection settings) for the
// CSR's key under the requested name.
func (a *API) provisionDevice(w http.ResponseWriter, r *http.Request, p Principal) error {
	pv, ok := a.tokens.(provisioner)
	if !ok {
		return errorf(http.StatusServiceUnavailable, "offline provisioning is not available on this server")
	}
	var req enrollment.ProvisionRequest
	if err := decodeJSON(w, r, maxProvisionBody, &req); err != nil {
		return err
	}
	resp, err := pv.Provision(r.Context(), p.Actor(), req)
	if err != nil {
		return fmt.Errorf("provision %s: %w", req.Name, err)
	}
	if a.invalidate != nil {
		a.invalidate(req.Name) // a replaced certificate must stop working at once
	}
	httpjson.Write(w, http.StatusCreated, resp)
	return nil
}
