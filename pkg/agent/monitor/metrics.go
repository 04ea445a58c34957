package monitor

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/vethroute/vethroute/pkg/reaper"
)

// Metrics are the agent's Prometheus metrics, registered on their own
// registry so tests can read them without global state.
type Metrics struct {
	// Registry holds every metric below plus the Go and process collectors.
	Registry *prometheus.Registry

	// RoutesProgrammed is the number of routes toward other nodes' pod
	// CIDRs present after the last reconcile.
	RoutesProgrammed prometheus.Gauge
	// RouteProblems is the number of pod CIDRs skipped in the last
	// reconcile (unreachable InternalIP, conflicting route, ...).
	RouteProblems prometheus.Gauge
	// PodCIDRsRefused is the number of other nodes' pod CIDRs skipped in
	// the last reconcile, by the reason of the Event on the Node.
	PodCIDRsRefused *prometheus.GaugeVec
	// Reconciles counts reconciles by result ("success" or "error").
	Reconciles *prometheus.CounterVec
	// ReconcileErrors counts failed reconciles.
	ReconcileErrors prometheus.Counter
	// ReconcileDuration observes how long reconciles take.
	ReconcileDuration prometheus.Histogram
	// LastSuccess is the Unix time of the last successful reconcile.
	LastSuccess prometheus.Gauge
	// ConfWrites counts rewrites of the CNI configuration file.
	ConfWrites prometheus.Counter
}

// NewMetrics creates and registers the agent's metrics.
func NewMetrics() *Metrics {
	const ns = "vethroute_agent"
	m := &Metrics{
		Registry: prometheus.NewRegistry(),
		RoutesProgrammed: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: ns, Name: "routes_programmed",
			Help: "Routes toward other nodes' pod CIDRs present on this node after the last reconcile.",
		}),
		RouteProblems: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: ns, Name: "route_problems",
			Help: "Pod CIDRs of other nodes skipped in the last reconcile (see the Node's Events).",
		}),
		PodCIDRsRefused: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: ns, Name: "pod_cidrs_refused",
			Help: "Pod CIDRs of other nodes given no route in the last reconcile, by reason (the Event reason on the Node).",
		}, []string{"reason"}),
		Reconciles: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Name: "reconciles_total",
			Help: "Reconciles of routes, CNI configuration and masquerade rules, by result.",
		}, []string{"result"}),
		ReconcileErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: ns, Name: "reconcile_errors_total",
			Help: "Reconciles that failed and were retried with backoff.",
		}),
		ReconcileDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: ns, Name: "reconcile_duration_seconds",
			Help:    "Duration of reconciles.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 14),
		}),
		LastSuccess: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: ns, Name: "last_successful_sync_timestamp_seconds",
			Help: "Unix time of the last successful reconcile.",
		}),
		ConfWrites: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: ns, Name: "cni_config_writes_total",
			Help: "Times the CNI configuration file was (re)written.",
		}),
	}
	m.Registry.MustRegister(
		m.RoutesProgrammed, m.RouteProblems, m.PodCIDRsRefused, m.Reconciles, m.ReconcileErrors,
		m.ReconcileDuration, m.LastSuccess, m.ConfWrites,
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	return m
}

// WatchReaper exports the counters of srv, the reaper the agent runs, from
// now on: at zero until the first DEL, so alerts on them work at once.
func (m *Metrics) WatchReaper(srv *reaper.Server) {
	for result, c := range map[string]func() uint64{
		"deleted": srv.Stats.Deleted.Load, "refused": srv.Stats.Refused.Load, "failed": srv.Stats.Failed.Load,
	} {
		m.Registry.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{
			Namespace: "vethroute_agent", Name: "reaper_requests_total",
			Help:        "Host veth deletions requested by the plugin's DEL, by result (deleted, refused, failed).",
			ConstLabels: prometheus.Labels{"result": result},
		}, func() float64 { return float64(c()) }))
	}
	m.Registry.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Namespace: "vethroute_agent", Name: "reaper_deletions_in_flight",
		Help: "Host veth deletions the kernel has not finished; one that only grows means devices that are never released.",
	}, func() float64 { return float64(srv.InFlight()) }))
	m.Registry.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{
		Namespace: "vethroute_agent", Name: "reaper_slow_deletions_total",
		Help: "Host veth deletions that have been in the kernel for 30 s (a leaked device reference; see unregister_netdevice in the kernel log), counted when they reach it.",
	}, func() float64 { return float64(srv.Stats.Slow.Load()) }))
}
