// Command vethroute-agent is the per-node daemon of vethroute: it writes the
// node's CNI configuration from its Node's spec.podCIDRs and keeps the
// node's routes toward every other node's pod CIDRs in sync with the
// cluster (docs/kubernetes.md).
//
// `vethroute-agent install-cni --from=SRC --to=DIR` copies the plugin
// binary, or every file of the directory SRC (the plugin and the plugins its
// conflist chains), into the node's CNI binary directory and exits; the DaemonSet's
// init container runs it, so the image needs no shell.
//
// `vethroute-agent uninstall` removes from the node what vethroute put
// there (package uninstall); docs/kubernetes.md has the procedure.
//
// `vethroute-agent reaper --socket=PATH` runs only the reaper (package
// reaper) in the current network namespace, for nodes without Kubernetes;
// the plugin's reaperSocket names the same path.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"

	"github.com/vethroute/vethroute/internal/buildinfo"
	"github.com/vethroute/vethroute/pkg/agent"
	"github.com/vethroute/vethroute/pkg/agent/cniconf"
	"github.com/vethroute/vethroute/pkg/agent/reaperhost"
	"github.com/vethroute/vethroute/pkg/agent/uninstall"
	"github.com/vethroute/vethroute/pkg/netconf"
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == "install-cni" {
		os.Exit(installCNI(os.Args[2:]))
	}
	if len(os.Args) > 1 && os.Args[1] == "reaper" {
		os.Exit(runReaper(os.Args[2:]))
	}
	if len(os.Args) > 1 && os.Args[1] == "uninstall" {
		os.Exit(runUninstall(os.Args[2:]))
	}
	var o agent.Options
	fs := flag.NewFlagSet("vethroute-agent", flag.ExitOnError)
	o.AddFlags(fs)
	showVersion := fs.Bool("version", false, "print the version and exit")
	_ = fs.Parse(os.Args[1:])
	if *showVersion {
		fmt.Println("vethroute-agent", buildinfo.Version)
		return
	}
	log, err := agent.NewLogger(os.Stderr, o.LogFormat, o.LogLevel)
	if err != nil {
		fmt.Fprintln(os.Stderr, "vethroute-agent:", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if err := agent.Run(ctx, o, buildinfo.Version, log); err != nil {
		log.Error("exiting", "err", err)
		os.Exit(1)
	}
}

func installCNI(args []string) int {
	fs := flag.NewFlagSet("vethroute-agent install-cni", flag.ExitOnError)
	from := fs.String("from", "/opt/vethroute/bin", "plugin binary to install, or a directory whose every file is installed (the plugin and the plugins its conflist chains)")
	to := fs.String("to", "/host/opt/cni/bin", "the node's CNI binary directory")
	_ = fs.Parse(args)
	wrote, err := cniconf.InstallPlugins(*from, *to)
	if err != nil {
		fmt.Fprintln(os.Stderr, "vethroute-agent install-cni:", err)
		return 1
	}
	fmt.Printf("vethroute-agent install-cni: %s into %s, changed: %v\n", *from, *to, wrote)
	return 0
}

func runReaper(args []string) int {
	fs := flag.NewFlagSet("vethroute-agent reaper", flag.ExitOnError)
	socket := fs.String("socket", "/run/vethroute/reaper.sock", "Unix socket to serve; the plugin's reaperSocket")
	level := fs.String("log-level", "info", "log level: debug, info, warn, error")
	format := fs.String("log-format", "text", "log format: text or json")
	_ = fs.Parse(args)
	log, err := agent.NewLogger(os.Stderr, *format, *level)
	if err != nil {
		fmt.Fprintln(os.Stderr, "vethroute-agent reaper:", err)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if err := reaperhost.Run(ctx, *socket, log); err != nil {
		log.Error("exiting", "err", err)
		return 1
	}
	return 0
}

func runUninstall(args []string) int {
	fs := flag.NewFlagSet("vethroute-agent uninstall", flag.ExitOnError)
	confDir := fs.String("cni-conf-dir", "/etc/cni/net.d", "directory the agent wrote its conflist to")
	confName := fs.String("cni-conf-name", "10-vethroute.conflist", "file name of the conflist")
	binDir := fs.String("cni-bin-dir", "/opt/cni/bin", "the node's CNI binary directory install-cni wrote to")
	from := fs.String("from", "/opt/vethroute/bin", "the image's plugin directory: its other files are removed from --cni-bin-dir only where identical")
	dataDir := fs.String("ipam-data-dir", netconf.DefaultDataDir, "the built-in IPAM's store")
	purge := fs.Bool("purge-data", false, "also remove --ipam-data-dir")
	socket := fs.String("reaper-socket", "/run/vethroute/reaper.sock", "the agent's reaper socket; empty for none")
	proto := fs.Int("route-protocol", netconf.AgentRouteProtocol, "the agent's route protocol (the plugin's, 86, is always removed)")
	force := fs.Bool("force", false, "remove everything although pods still use vethroute veths (cuts them off)")
	wait := fs.Bool("wait", false, "after a successful uninstall, wait for SIGTERM instead of exiting (the uninstall DaemonSet's pods stay Running rather than being restarted)")
	level := fs.String("log-level", "info", "log level: debug, info, warn, error")
	_ = fs.Parse(args)
	log, err := agent.NewLogger(os.Stderr, "text", *level)
	if err != nil {
		fmt.Fprintln(os.Stderr, "vethroute-agent uninstall:", err)
		return 2
	}
	done, err := uninstall.Run(context.Background(), uninstall.Options{
		ConfPath: filepath.Join(*confDir, *confName),
		BinDir:   *binDir, PluginDir: *from,
		DataDir: *dataDir, PurgeData: *purge,
		ReaperSocket:   *socket,
		RouteProtocols: []int{netconf.PluginRouteProtocol, *proto},
		Force:          *force,
	}, log)
	for _, d := range done {
		fmt.Println("removed", d)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "vethroute-agent uninstall:", err)
		return 1
	}
	fmt.Printf("vethroute-agent uninstall: done, %d removed\n", len(done))
	if *wait {
		ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
		defer stop()
		<-ctx.Done()
	}
	return 0
}
