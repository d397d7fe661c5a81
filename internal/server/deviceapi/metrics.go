package deviceapi

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the device API's Prometheus series. They exist (and count)
// even when no registry was given, so the code paths do not branch.
type metrics struct {
	rpcDuration *prometheus.HistogramVec
	heartbeats  prometheus.Counter
	online      prometheus.GaugeFunc
	connections prometheus.GaugeFunc
	interval    prometheus.GaugeFunc
}

func newMetrics(s *Server) *metrics {
	return &metrics{
		rpcDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "meshanics_device_rpc_duration_seconds",
			Help:    "Latency of device gRPC calls by method and status code.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5},
		}, []string{"method", "code"}),
		heartbeats: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "meshanics_heartbeats_total",
			Help: "Heartbeats accepted by this replica.",
		}),
		online: prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "meshanics_devices_online",
			Help: "Devices that heartbeated this replica within 3x the heartbeat interval.",
		}, func() float64 { return float64(s.interval.onlineCount()) }),
		connections: prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "meshanics_device_connections",
			Help: "Device connections open on this replica (counted as online by the adaptive heartbeat interval).",
		}, func() float64 { return float64(s.conns.Load()) }),
		interval: prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "meshanics_heartbeat_interval_seconds",
			Help: "Heartbeat interval currently handed to devices (widened for large fleets).",
		}, func() float64 { return s.interval.current().Seconds() }),
	}
}

func (m *metrics) register(r prometheus.Registerer) error {
	for _, c := range []prometheus.Collector{m.rpcDuration, m.heartbeats, m.online, m.connections, m.interval} {
		if err := r.Register(c); err != nil {
			return err
		}
	}
	return nil
}

func (m *metrics) observe(method string, err error, d time.Duration) {
	m.rpcDuration.WithLabelValues(method, codeOf(err)).Observe(d.Seconds())
}
