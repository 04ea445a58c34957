package reaperhost

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"

	"github.com/vishvananda/netns"

	"github.com/vethroute/vethroute/pkg/agent/monitor"
	"github.com/vethroute/vethroute/pkg/reaper"
)

// Start serves the plugin's DEL requests on socket (package reaper)
// in the agent's network namespace, the node's, and exports the server's
// counts and the deletions still in the kernel as metrics. The returned stop
// function stops the server and waits for deletions still in the kernel;
// alive reports why the server stopped serving, if it did (for /healthz:
// without a reaper every DEL waits for its timeout).
func Start(ctx context.Context, socket string, m *monitor.Metrics, log *slog.Logger) (stop func(), alive func() error, err error) {
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
		m.WatchReaper(srv)
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

// Run serves only the reaper on socket until ctx ends: the
// `vethroute-agent reaper` command, for nodes that run no Kubernetes.
func Run(ctx context.Context, socket string, log *slog.Logger) error {
	stop, _, err := Start(ctx, socket, nil, log)
	if err != nil {
		return err
	}
	<-ctx.Done()
	stop()
	log.Info("stopped")
	return nil
}
