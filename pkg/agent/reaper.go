package agent

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/vishvananda/netns"

	"github.com/vethroute/vethroute/pkg/reaper"
)

// startReaper serves the plugin's DEL requests on socket (package reaper)
// in the agent's network namespace, the node's, and exports the server's
// counts as vethroute_agent_reaper_requests_total. The returned function
// stops the server and waits for deletions still in the kernel.
func startReaper(ctx context.Context, socket string, m *Metrics, log *slog.Logger) (func(), error) {
	nsh, err := netns.Get()
	if err != nil {
		return nil, fmt.Errorf("reaper: open own network namespace: %w", err)
	}
	srv, err := reaper.NewServer(nsh, 0, log.With("component", "reaper"))
	if err != nil {
		nsh.Close()
		return nil, fmt.Errorf("reaper: %w", err)
	}
	ln, err := reaper.Listen(socket)
	if err != nil {
		nsh.Close()
		return nil, fmt.Errorf("reaper: %w", err)
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
	}
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := srv.Serve(ctx, ln); err != nil {
			log.Error("reaper stopped", "err", err)
		}
	}()
	log.Info("serving the reaper", "socket", socket)
	return func() {
		cancel()
		<-done
		nsh.Close()
	}, nil
}

// RunReaper serves only the reaper on socket until ctx ends: the
// `vethroute-agent reaper` command, for nodes that run no Kubernetes.
func RunReaper(ctx context.Context, socket string, log *slog.Logger) error {
	stop, err := startReaper(ctx, socket, nil, log)
	if err != nil {
		return err
	}
	<-ctx.Done()
	stop()
	log.Info("stopped")
	return nil
}
