package deviceapi

import (
	"crypto/tls"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/meshanics/meshanics/internal/server/enrollment"
	devicev1 "github.com/meshanics/meshanics/proto/meshanics/device/v1"
)

// The enrollment service is the renewer the composition root passes in.
var _ Renewer = (*enrollment.Service)(nil)

func gather(t *testing.T, reg *prometheus.Registry) map[string]*dto.MetricFamily {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]*dto.MetricFamily{}
	for _, mf := range mfs {
		out[mf.GetName()] = mf
	}
	return out
}

func TestMetrics(t *testing.T) {
	e := newEnv(t, envOpts{})
	reg := prometheus.NewRegistry()
	if err := e.srv.metrics.register(reg); err != nil {
		t.Fatal(err)
	}
	c := e.dial(e.enroll("dev-a"))
	ctx := ctxT(t)
	for range 3 {
		if _, err := c.Heartbeat(ctx, &devicev1.HeartbeatRequest{}); err != nil {
			t.Fatal(err)
		}
	}
	c.ReportArtifactStatus(ctx, &devicev1.ReportArtifactStatusRequest{AssignmentId: "nope", State: "healthy"})
	mfs := gather(t, reg)
	if got := mfs["meshanics_heartbeats_total"].GetMetric()[0].GetCounter().GetValue(); got != 3 {
		t.Errorf("meshanics_heartbeats_total = %v, want 3", got)
	}
	counts := map[string]uint64{}
	for _, m := range mfs["meshanics_device_rpc_duration_seconds"].GetMetric() {
		key := ""
		for _, l := range m.GetLabel() {
			key += l.GetName() + "=" + l.GetValue() + " "
		}
		counts[key] = m.GetHistogram().GetSampleCount()
	}
	if counts["code=OK method=Heartbeat "] != 3 || counts["code=NotFound method=ReportArtifactStatus "] != 1 {
		t.Errorf("rpc duration sample counts = %v, want 3 OK heartbeats and 1 NotFound report", counts)
	}
	if _, ok := mfs["meshanics_devices_online"]; !ok {
		t.Error("meshanics_devices_online not exported")
	}
}

func TestNewRefusesBadConfig(t *testing.T) {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	e := newEnv(t, envOpts{})
	good := Config{Fleet: "fleet.example", Identity: e.ca, Devices: e.devices, Logs: e.logs, Log: log, HeartbeatInterval: 30 * time.Second}
	if _, err := New(good); err != nil {
		t.Fatalf("New(good config) = %v", err)
	}
	for name, mutate := range map[string]func(*Config){
		"no identity":         func(c *Config) { c.Identity = nil },
		"no store":            func(c *Config) { c.Devices = nil },
		"no interval":         func(c *Config) { c.HeartbeatInterval = 0 },
		"flush over interval": func(c *Config) { c.FlushInterval = time.Minute },
		"negative budget":     func(c *Config) { c.HeartbeatBudget = -1 },
	} {
		c := good
		mutate(&c)
		if _, err := New(c); err == nil {
			t.Errorf("New(%s) = nil error, want refusal", name)
		}
	}
	srv, _ := New(good)
	if _, err := srv.GRPCServer(&tls.Config{}); err == nil {
		t.Error("GRPCServer(TLS without client certificates) = nil error, want refusal")
	}
}
