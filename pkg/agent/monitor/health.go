package monitor

import (
	"net/http"

	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Handler serves the agent's HTTP endpoints:
//
//	/healthz  200 while every part in live answers nil, else 503 (liveness)
//	/readyz   200 once ready() holds, 503 before (readiness)
//	/metrics  Prometheus metrics of m, when m is not nil
func Handler(m *Metrics, ready func() bool, live ...func() error) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		for _, l := range live {
			if err := l(); err != nil {
				w.WriteHeader(http.StatusServiceUnavailable)
				_, _ = w.Write([]byte(err.Error() + "\n"))
				return
			}
		}
		_, _ = w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		if !ready() {
			w.WriteHeader(http.StatusServiceUnavailable)
			_, _ = w.Write([]byte("not ready: waiting for the node cache and a first reconcile\n"))
			return
		}
		_, _ = w.Write([]byte("ok\n"))
	})
	if m != nil {
		mux.Handle("GET /metrics", MetricsHandler(m))
	}
	return mux
}

// MetricsHandler serves m in the Prometheus text format.
func MetricsHandler(m *Metrics) http.Handler {
	return promhttp.HandlerFor(m.Registry, promhttp.HandlerOpts{Registry: m.Registry})
}
