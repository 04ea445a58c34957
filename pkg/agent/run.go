package agent

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"

	"github.com/vishvananda/netlink"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/client-go/tools/record"
	"k8s.io/klog/v2"
	"sigs.k8s.io/knftables"

	"github.com/vethroute/vethroute/pkg/agent/cniconf"
	"github.com/vethroute/vethroute/pkg/agent/masquerade"
	"github.com/vethroute/vethroute/pkg/agent/monitor"
	"github.com/vethroute/vethroute/pkg/agent/netpolicy"
	"github.com/vethroute/vethroute/pkg/agent/nodesync"
	"github.com/vethroute/vethroute/pkg/agent/reaperhost"
	"github.com/vethroute/vethroute/pkg/netpol"
	"github.com/vethroute/vethroute/pkg/noderoutes"
	"github.com/vethroute/vethroute/pkg/routing"
	"github.com/vethroute/vethroute/pkg/uplink"
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

	client, err := newClient(o.Kubeconfig, version)
	if err != nil {
		return err
	}

	table, err := noderoutes.Open(netlink.RouteProtocol(o.RouteProtocol))
	if err != nil {
		return err
	}
	defer table.Close()

	cfg := controllerConfig(o)
	if o.MTU == 0 {
		// The agent runs in the node's network namespace (hostNetwork),
		// so its own namespace holds the node's uplinks.
		uplinks, err := uplink.Open()
		if err != nil {
			return err
		}
		defer uplinks.Close()
		cfg.FindUplinks = uplinks.Find
	}

	masq, err := setupMasquerade(ctx, o, log)
	if err != nil {
		return err
	}

	metrics := monitor.NewMetrics()
	recorder, stopEvents := nodesync.NewEventRecorder(ctx, client, component, o.NodeName)
	defer stopEvents()

	// No informer resync: the controller's own resync re-applies the
	// desired state from the cache, which costs the API nothing.
	factory := informers.NewSharedInformerFactory(client, 0)
	ctrl, err := nodesync.NewController(cfg, factory.Core().V1().Nodes(), table, masq, recorder, metrics, log)
	if err != nil {
		return err
	}

	runPolicy, err := setupNetworkPolicy(ctx, o, client, recorder, metrics, log)
	if err != nil {
		return err
	}

	var live []func() error
	if o.ReaperSocket != "" {
		stopReaper, reaperAlive, err := reaperhost.Start(ctx, o.ReaperSocket, metrics, log)
		if err != nil {
			return err
		}
		defer stopReaper()
		live = append(live, reaperAlive)
	}

	stopHTTP, err := startHTTP(o, metrics, ctrl.Ready, live, log)
	if err != nil {
		return err
	}
	defer stopHTTP()

	log.Info("starting", "version", version, "conf", cfg.ConfPath, "mtu", mtuSetting(o.MTU), "routeProtocol", o.RouteProtocol, "masquerade", o.Masquerade, "networkPolicy", o.NetworkPolicy, "resync", o.ResyncPeriod)
	factory.Start(ctx.Done())
	policyCtx, stopPolicy := context.WithCancel(ctx)
	defer stopPolicy()
	policyDone := make(chan error, 1)
	go func() { policyDone <- runPolicy(policyCtx) }()
	runErr := ctrl.Run(ctx)
	stopPolicy()
	if err := <-policyDone; err != nil && ctx.Err() == nil && runErr == nil {
		runErr = err
	}

	log.Info("shutting down")
	factory.Shutdown()
	if runErr != nil && ctx.Err() == nil {
		return runErr
	}
	log.Info("stopped")
	return nil
}

// mtuSetting describes --mtu for the start-up log.
func mtuSetting(mtu int) any {
	if mtu == 0 {
		return "detect"
	}
	return mtu
}

// component is the name the agent gives itself to the API server: the
// user agent of its requests and the source of its Events.
const component = "vethroute-agent"

// controllerConfig is the Node controller's share of the options.
func controllerConfig(o Options) nodesync.Config {
	clusterCIDRs, _ := o.clusterCIDRs()
	chain, _ := o.chain()
	cfg := nodesync.Config{
		NodeName: o.NodeName,
		ConfPath: filepath.Join(o.CNIConfDir, o.CNIConfName),
		ConfBase: cniconf.ConfData{
			CNIVersion: o.CNIVersion, Network: o.Network, MTU: o.MTU,
			DataDir: o.IPAMDataDir, LogFile: o.PluginLogFile, ReaperSocket: o.ReaperSocket,
			Chain: chain,
		},
		ResyncPeriod: o.ResyncPeriod,
		ClusterCIDRs: clusterCIDRs,
	}
	if o.EnableForwarding {
		cfg.EnableForwarding = routing.EnableForwarding
	}
	return cfg
}

// newClient returns a clientset for kubeconfig (in-cluster when empty).
func newClient(kubeconfig, version string) (*kubernetes.Clientset, error) {
	restCfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		return nil, fmt.Errorf("load kubeconfig: %w", err)
	}
	restCfg.UserAgent = component + "/" + version
	client, err := kubernetes.NewForConfig(restCfg)
	if err != nil {
		return nil, fmt.Errorf("create clientset: %w", err)
	}
	return client, nil
}

// startHTTP serves health on --health-addr and metrics on --metrics-addr
// (or with health when that is empty). stop shuts the servers down within
// --shutdown-timeout.
func startHTTP(o Options, metrics *monitor.Metrics, ready func() bool, live []func() error, log *slog.Logger) (stop func(), err error) {
	var servers []*http.Server
	shutdown := func() {
		shutCtx, cancel := context.WithTimeout(context.Background(), o.ShutdownTimeout)
		defer cancel()
		for _, srv := range servers {
			if err := srv.Shutdown(shutCtx); err != nil {
				log.Warn("HTTP server shutdown", "addr", srv.Addr, "err", err)
			}
		}
	}
	defer func() {
		if err != nil {
			shutdown()
		}
	}()
	if o.HealthAddr != "" {
		h := monitor.Handler(metrics, ready, live...)
		if o.MetricsAddr != "" {
			// /metrics only on its own address; health stays local.
			h = monitor.Handler(nil, ready, live...)
		}
		srv, err := monitor.Serve(o.HealthAddr, h, log)
		if err != nil {
			return nil, fmt.Errorf("--health-addr: %w", err)
		}
		servers = append(servers, srv)
	}
	if o.MetricsAddr != "" {
		srv, err := monitor.Serve(o.MetricsAddr, monitor.MetricsHandler(metrics), log)
		if err != nil {
			return nil, fmt.Errorf("--metrics-addr: %w", err)
		}
		servers = append(servers, srv)
	}
	return shutdown, nil
}

// setupMasquerade returns the masquerader when --masquerade is on (the
// default). When it is off, a table left by an earlier run with it on is removed, best
// effort: without the nft binary there is nothing to remove either.
func setupMasquerade(ctx context.Context, o Options, log *slog.Logger) (nodesync.MasqSyncer, error) {
	nft, err := knftables.New(knftables.InetFamily, masquerade.Table)
	if err != nil {
		if o.Masquerade {
			return nil, fmt.Errorf("masquerading needs nftables (the nft binary); install it or run with --masquerade=false: %w", err)
		}
		log.Debug("nftables unavailable; no masquerade table to clean up", "err", err)
		return nil, nil
	}
	exempt, _ := o.noMasqueradeCIDRs()
	m := masquerade.New(nft, exempt)
	if !o.Masquerade {
		if err := m.Delete(ctx); err != nil {
			log.Warn("remove stale masquerade table", "err", err)
		}
		return nil, nil
	}
	return m, nil
}

// setupNetworkPolicy returns the NetworkPolicy controller's run function
// when --network-policy is on (the default). When it is off, a table left
// by an earlier run with it on is removed, best effort, and the function
// does nothing.
func setupNetworkPolicy(ctx context.Context, o Options, client kubernetes.Interface, recorder record.EventRecorder, metrics *monitor.Metrics, log *slog.Logger) (func(context.Context) error, error) {
	idle := func(context.Context) error { return nil }
	nft, err := knftables.New(knftables.InetFamily, netpol.Table)
	if err != nil {
		if o.NetworkPolicy {
			return nil, fmt.Errorf("network policy needs nftables (the nft binary); install it or run with --network-policy=false: %w", err)
		}
		log.Debug("nftables unavailable; no network policy table to clean up", "err", err)
		return idle, nil
	}
	engine := netpol.New(nft)
	if !o.NetworkPolicy {
		if err := engine.Delete(ctx); err != nil {
			log.Warn("remove stale network policy table", "err", err)
		}
		return idle, nil
	}
	veths, err := netpolicy.NewNetlink()
	if err != nil {
		return nil, err
	}
	factory := netpolicy.NewInformerFactory(client)
	ctrl, err := netpolicy.NewController(netpolicy.Config{NodeName: o.NodeName, DriftPeriod: o.ResyncPeriod},
		factory, engine, veths, recorder, netpolicy.NewMetrics(metrics.Registry), log.With("job", "network-policy"))
	if err != nil {
		veths.Close()
		return nil, err
	}
	return func(ctx context.Context) error {
		defer veths.Close()
		if err := netpolicy.Watch(ctx, ctrl.Enqueue, func(err error) { log.Warn("route watch", "err", err) }); err != nil {
			// Pods wired after their IPs reach the API then wait for the
			// controller's retry instead.
			log.Warn("no route watch for network policy", "err", err)
		}
		factory.Start(ctx.Done())
		defer factory.Shutdown()
		return ctrl.Run(ctx)
	}, nil
}
