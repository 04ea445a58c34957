package uninstall

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
	"sigs.k8s.io/knftables"

	"github.com/vethroute/vethroute/pkg/agent/masquerade"
	"github.com/vethroute/vethroute/pkg/netpol"
	"github.com/vethroute/vethroute/pkg/noderoutes"
	"github.com/vethroute/vethroute/pkg/routing"
)

// Options say where the agent and the init container put things on the
// node; they match the agent's own flags of the same names.
type Options struct {
	// ConfPath is the conflist the agent wrote.
	ConfPath string
	// BinDir is the node's CNI binary directory, PluginDir the directory
	// the image installed from: the plugin binary (netconf.PluginType) is
	// removed from BinDir, and every other file of PluginDir only where
	// BinDir holds the same bytes, so a portmap someone else installed
	// stays.
	BinDir, PluginDir string
	// DataDir is the IPAM store; it is removed only with PurgeData.
	DataDir   string
	PurgeData bool
	// ReaperSocket is the agent's reaper socket; empty when none.
	ReaperSocket string
	// RouteProtocols are the protocols of vethroute's routes: the
	// plugin's hostRoutes and the agent's routes to other nodes.
	RouteProtocols []int
	// Force removes everything although vethroute veths remain, cutting
	// those pods off.
	Force bool
}

// ErrInUse reports vethroute veths on the node: pods still use vethroute.
var ErrInUse = errors.New("pods still use vethroute")

// Run removes what opts names from the node (the calling thread's network
// namespace and mount view) and returns one line per thing removed. It
// refuses, removing nothing, while pods use vethroute veths or an agent
// serves the reaper socket, unless opts.Force.
func Run(ctx context.Context, opts Options, log *slog.Logger) ([]string, error) {
	h, err := netlinksafe.NewHandle(unix.NETLINK_ROUTE)
	if err != nil {
		return nil, fmt.Errorf("open netlink: %w", err)
	}
	defer h.Close()
	veths, err := vethrouteLinks(h)
	if err != nil {
		return nil, err
	}
	if len(veths) > 0 && !opts.Force {
		return nil, fmt.Errorf("%d vethroute veths on this node (%s): %w; delete those pods first, or pass --force to cut them off", len(veths), strings.Join(veths, ", "), ErrInUse)
	}
	if opts.ReaperSocket != "" && serving(opts.ReaperSocket) && !opts.Force {
		return nil, fmt.Errorf("an agent serves the reaper socket %s: %w; delete the DaemonSet first, or pass --force", opts.ReaperSocket, ErrInUse)
	}

	var done []string
	var errs []error
	note := func(what string) {
		done = append(done, what)
		log.Info("removed", "what", what)
	}
	for _, name := range veths {
		if l, err := h.LinkByName(name); err == nil {
			if err := h.LinkDel(l); err != nil && !errors.Is(err, unix.ENODEV) {
				errs = append(errs, fmt.Errorf("delete veth %s: %w", name, err))
				continue
			}
			note("veth " + name)
		}
	}
	if err := removeFile(opts.ConfPath, note); err != nil {
		errs = append(errs, err)
	}
	if err := removeBinaries(opts.BinDir, opts.PluginDir, note); err != nil {
		errs = append(errs, err)
	}
	for _, proto := range opts.RouteProtocols {
		routes := noderoutes.New(h, netlink.RouteProtocol(proto))
		owned, err := routes.Owned()
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if _, err := routes.Sync(nil); err != nil {
			errs = append(errs, fmt.Errorf("remove routes of protocol %d: %w", proto, err))
			continue
		}
		for _, r := range owned {
			note(fmt.Sprintf("route %s via %s proto %d", r.Dst, r.Gw, proto))
		}
	}
	for _, table := range []string{masquerade.Table, netpol.Table} {
		if err := removeTable(ctx, table, note, log); err != nil {
			errs = append(errs, err)
		}
	}
	if opts.ReaperSocket != "" {
		if err := removeFile(opts.ReaperSocket, note); err != nil {
			errs = append(errs, err)
		}
	}
	if opts.PurgeData && opts.DataDir != "" {
		if _, err := os.Lstat(opts.DataDir); err == nil {
			if err := os.RemoveAll(opts.DataDir); err != nil {
				errs = append(errs, fmt.Errorf("remove IPAM store %s: %w", opts.DataDir, err))
			} else {
				note("IPAM store " + opts.DataDir)
			}
		}
	}
	return done, errors.Join(errs...)
}

// vethrouteLinks names the node's links in vethroute's link group: the
// node ends of pods' veths.
func vethrouteLinks(h netlinksafe.Handle) ([]string, error) {
	links, err := h.LinkList()
	if err != nil {
		return nil, fmt.Errorf("list links: %w", err)
	}
	var out []string
	for _, l := range links {
		if l.Attrs().Group == routing.LinkGroup {
			out = append(out, l.Attrs().Name)
		}
	}
	slices.Sort(out)
	return out, nil
}

// serving reports whether something accepts connections on a Unix socket.
func serving(path string) bool {
	c, err := net.DialTimeout("unix", path, time.Second)
	if err != nil {
		return false
	}
	c.Close()
	return true
}

func removeFile(path string, note func(string)) error {
	if path == "" {
		return nil
	}
	err := os.Remove(path)
	switch {
	case err == nil:
		note(path)
		return nil
	case errors.Is(err, fs.ErrNotExist):
		return nil
	}
	return fmt.Errorf("remove %s: %w", path, err)
}

// removeBinaries removes the plugin from binDir, and each other file of
// pluginDir whose copy in binDir has the same bytes.
func removeBinaries(binDir, pluginDir string, note func(string)) error {
	if binDir == "" {
		return nil
	}
	var errs []error
	if err := removeFile(filepath.Join(binDir, "vethroute"), note); err != nil {
		errs = append(errs, err)
	}
	entries, err := os.ReadDir(pluginDir)
	if err != nil {
		if pluginDir != "" && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, fmt.Errorf("read %s: %w", pluginDir, err))
		}
		return errors.Join(errs...)
	}
	for _, e := range entries {
		if !e.Type().IsRegular() || e.Name() == "vethroute" {
			continue
		}
		ours, err := os.ReadFile(filepath.Join(pluginDir, e.Name()))
		if err != nil {
			errs = append(errs, err)
			continue
		}
		target := filepath.Join(binDir, e.Name())
		theirs, err := os.ReadFile(target)
		if err != nil || !bytes.Equal(ours, theirs) {
			continue // not installed by vethroute, or replaced since
		}
		if err := removeFile(target, note); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// removeTable deletes one of the agent's tables (masquerade, network
// policy). Without nft there is no table the agent could have made.
func removeTable(ctx context.Context, table string, note func(string), log *slog.Logger) error {
	nft, err := knftables.New(knftables.InetFamily, table)
	if err != nil {
		log.Info("nftables unavailable; no table to remove", "table", table, "err", err)
		return nil
	}
	if _, err := nft.List(ctx, "chains"); err != nil {
		if knftables.IsNotFound(err) {
			return nil
		}
		return fmt.Errorf("list table inet %s: %w", table, err)
	}
	tx := nft.NewTransaction()
	tx.Delete(&knftables.Table{})
	if err := nft.Run(ctx, tx); err != nil && !knftables.IsNotFound(err) {
		return fmt.Errorf("delete table inet %s: %w", table, err)
	}
	note("nftables table inet " + table)
	return nil
}
