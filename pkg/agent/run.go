package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/net/netutil"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/klog/v2"
	"sigs.k8s.io/knftables"

	"github.com/vethroute/vethroute/pkg/noderoutes"
	"github.com/vethroute/vethroute/pkg/routing"
)

// Run runs the agent until ctx ends (SIGTERM), then shuts down gracefully:
// the HTTP server drains, the event sink stops and the informers stop. The
// CNI configuration, routes and masquerade rules stay in place, so pods
// keep their network while the agent is restarted or upgraded; the next
// agent reconciles them against the cluster as it finds it.
func Run(ctx context.Context, o Options, version string, log *slog.Logger) error {
	if err := o.Validate(os.Getenv); err != nil {
		return err
	}
	// client-go logs through klog; send it to the same structured log.
	klog.SetSlogLogger(log)
	log = log.With("node", o.NodeName)

	restCfg, err := clientcmd.BuildConfigFromFlags("", o.Kubeconfig)
	if err != nil {
		return fmt.Errorf("load kubeconfig: %w", err)
	}
	restCfg.UserAgent = Component + "/" + version
	client, err := kubernetes.NewForConfig(restCfg)
	if err != nil {
		return fmt.Errorf("create clientset: %w", err)
	}

	table, err := noderoutes.Open(netlink.RouteProtocol(o.RouteProtocol))
	if err != nil {
		return err
	}
	defer table.Close()

	masq, err := setupMasquerade(ctx, o, log)
	if err != nil {
		return err
	}

	clusterCIDRs, _ := o.clusterCIDRs()
	cfg := Config{
		NodeName: o.NodeName,
		ConfPath: filepath.Join(o.CNIConfDir, o.CNIConfName),
		ConfBase: ConfData{
			CNIVersion: o.CNIVersion, Network: o.Network, MTU: o.MTU,
			DataDir: o.IPAMDataDir, LogFile: o.PluginLogFile, ReaperSocket: o.ReaperSocket,
		},
		ResyncPeriod: o.ResyncPeriod,
		ClusterCIDRs: clusterCIDRs,
	}
	if o.EnableForwarding {
		cfg.EnableForwarding = routing.EnableForwarding
	}

	metrics := NewMetrics()
	recorder, stopEvents := NewEventRecorder(ctx, client, o.NodeName)
	defer stopEvents()

	// No informer resync: the controller's own resync re-applies the
	// desired state from the cache, which costs the API nothing.
	factory := informers.NewSharedInformerFactory(client, 0)
	ctrl, err := NewController(cfg, factory.Core().V1().Nodes(), table, masq, recorder, metrics, log)
	if err != nil {
		return err
	}

	var live []func() error
	if o.ReaperSocket != "" {
		stopReaper, reaperAlive, err := startReaper(ctx, o.ReaperSocket, metrics, log)
		if err != nil {
			return err
		}
		defer stopReaper()
		live = append(live, reaperAlive)
	}

	var servers []*http.Server
	defer func() {
		shutCtx, cancel := context.WithTimeout(context.Background(), o.ShutdownTimeout)
		defer cancel()
		for _, srv := range servers {
			if err := srv.Shutdown(shutCtx); err != nil {
				log.Warn("HTTP server shutdown", "addr", srv.Addr, "err", err)
			}
		}
	}()
	if o.HealthAddr != "" {
		h := Handler(metrics, ctrl.Ready, live...)
		if o.MetricsAddr != "" {
			// /metrics only on its own address; health stays local.
			h = Handler(nil, ctrl.Ready, live...)
		}
		srv, err := serveHTTP(o.HealthAddr, h, log)
		if err != nil {
			return fmt.Errorf("--health-addr: %w", err)
		}
		servers = append(servers, srv)
	}
	if o.MetricsAddr != "" {
		srv, err := serveHTTP(o.MetricsAddr, MetricsHandler(metrics), log)
		if err != nil {
			return fmt.Errorf("--metrics-addr: %w", err)
		}
		servers = append(servers, srv)
	}

	log.Info("starting", "version", version, "conf", cfg.ConfPath, "routeProtocol", o.RouteProtocol, "masquerade", o.Masquerade, "resync", o.ResyncPeriod)
	factory.Start(ctx.Done())
	runErr := ctrl.Run(ctx)

	log.Info("shutting down")
	factory.Shutdown()
	if runErr != nil && ctx.Err() == nil {
		return runErr
	}
	log.Info("stopped")
	return nil
}

// HTTP limits of the health and metrics servers. Anything on the node, or
// any pod where the address is reachable, can connect: idle or slow
// connections are cut and their number capped, so that they cannot exhaust
// the agent's memory or descriptors. Health and metrics have separate
// servers, so connections to one never hold the other's slots.
const (
	maxHTTPConns      = 64
	httpHeaderTimeout = 5 * time.Second
	httpIOTimeout     = 10 * time.Second
	httpIdleTimeout   = 30 * time.Second
	httpMaxHeader     = 8 << 10
)

// serveHTTP serves h on addr, with the limits above, until the returned
// server is shut down.
func serveHTTP(addr string, h http.Handler, log *slog.Logger) (*http.Server, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", addr, err)
	}
	srv := &http.Server{
		Addr:              ln.Addr().String(),
		Handler:           h,
		ReadHeaderTimeout: httpHeaderTimeout,
		ReadTimeout:       httpIOTimeout,
		WriteTimeout:      httpIOTimeout,
		IdleTimeout:       httpIdleTimeout,
		MaxHeaderBytes:    httpMaxHeader,
	}
	go func() {
		if err := srv.Serve(netutil.LimitListener(ln, maxHTTPConns)); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("HTTP server stopped", "addr", srv.Addr, "err", err)
		}
	}()
	log.Info("serving HTTP", "addr", srv.Addr)
	return srv, nil
}

// setupMasquerade returns the masquerader when --masquerade is on. When it
// is off, a table left by an earlier run with it on is removed, best
// effort: without the nft binary there is nothing to remove either.
func setupMasquerade(ctx context.Context, o Options, log *slog.Logger) (MasqSyncer, error) {
	nft, err := knftables.New(knftables.InetFamily, MasqTable)
	if err != nil {
		if o.Masquerade {
			return nil, fmt.Errorf("--masquerade needs nftables: %w", err)
		}
		log.Debug("nftables unavailable; no masquerade table to clean up", "err", err)
		return nil, nil
	}
	m := NewMasquerader(nft)
	if !o.Masquerade {
		if err := m.Delete(ctx); err != nil {
			log.Warn("remove stale masquerade table", "err", err)
		}
		return nil, nil
	}
	return m, nil
}
