package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/vishvananda/netns"

	"github.com/vethroute/vethroute/pkg/reaper"
)

// startReaper serves the plugin's DEL requests on socket (package reaper)
// in the agent's network namespace, the node's, and exports the server's
// counts and the deletions still in the kernel as metrics. The returned stop
// function stops the server and waits for deletions still in the kernel;
// alive reports why the server stopped serving, if it did (for /healthz:
// without a reaper every DEL waits for its timeout).
func startReaper(ctx context.Context, socket string, m *Metrics, log *slog.Logger) (stop func(), alive func() error, err error) {
	nsh, err := netns.Get()
	if err != nil {
		return nil, nil, fmt.Errorf("reaper: open own network namespace: %w", err)
	}
	srv, err := reaper.NewServer(nsh, 0, log.With("component", "reaper"))
	if err != nil {
		nsh.Close()
		return nil, nil, fmt.Errorf("reaper: %w", err)
	}
	ln, err := reaper.Listen(socket)
	if err != nil {
		nsh.Close()
		return nil, nil, fmt.Errorf("reaper: %w", err)
	}
	if m != nil {
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
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	var serveErr atomic.Pointer[error]
	go func() {
		defer close(done)
		err := srv.Serve(ctx, ln)
		if ctx.Err() == nil {
			if err == nil {
				err = errors.New("reaper stopped serving")
			}
			serveErr.Store(&err)
			log.Error("reaper stopped", "err", err)
		}
	}()
	log.Info("serving the reaper", "socket", socket)
	stop = func() {
		cancel()
		<-done
		nsh.Close()
	}
	alive = func() error {
		if e := serveErr.Load(); e != nil {
			return fmt.Errorf("reaper on %s: %w", socket, *e)
		}
		return nil
	}
	return stop, alive, nil
}

// RunReaper serves only the reaper on socket until ctx ends: the
// `vethroute-agent reaper` command, for nodes that run no Kubernetes.
func RunReaper(ctx context.Context, socket string, log *slog.Logger) error {
	stop, _, err := startReaper(ctx, socket, nil, log)
	if err != nil {
		return err
	}
	<-ctx.Done()
	stop()
	log.Info("stopped")
	return nil
}
