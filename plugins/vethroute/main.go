// Command vethroute is a CNI plugin that makes the node the router of each
// container: a veth pair into the container's namespace, the node's gateway
// address on the node's end, the container's default route through it, and
// the node's routes to the container and toward other nodes' pod subnets.
package main

import (
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"strings"
	"syscall"
	"time"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/cni/pkg/version"
	"github.com/containernetworking/plugins/pkg/ip"
	"github.com/vethroute/vethroute/internal/buildinfo"
	"github.com/vethroute/vethroute/pkg/ipam"
	"github.com/vethroute/vethroute/pkg/netconf"
	"github.com/vethroute/vethroute/pkg/noderoutes"
	"github.com/vethroute/vethroute/pkg/reaper"
	"github.com/vethroute/vethroute/pkg/routing"
	"github.com/vishvananda/netlink"
)

func main() {
	skel.PluginMainFuncs(skel.CNIFuncs{
		Add:    cmdAdd,
		Del:    cmdDel,
		Check:  cmdCheck,
		GC:     cmdGC,
		Status: cmdStatus,
	}, version.PluginSupports("0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"), "vethroute CNI plugin "+buildinfo.Version)
}

func cmdAdd(args *skel.CmdArgs) (err error) {
	conf, err := netconf.Load(args.StdinData, args.Args)
	if err != nil {
		return err
	}
	log, closer := newLogger(conf, "verb", "ADD", "container", args.ContainerID, "ifname", args.IfName)
	defer closer.Close()
	defer func() { logOutcome(log, err) }()

	// A bad CNI_CONTAINERID or CNI_NETNS is refused before anything is
	// allocated, so that it leaves the store and the node as they were.
	if err := checkContainerID(args.ContainerID); err != nil {
		return err
	}
	if err := routing.CheckNetNS(args.Netns); err != nil {
		return cniError(err)
	}
	addresses := allocatorFor(conf, args)
	addrs, routes, err := allocate(conf, addresses)
	if err != nil {
		return cniError(err)
	}
	defer func() {
		if err != nil {
			if rerr := addresses.Release(); rerr != nil {
				log.Error("release addresses after failed ADD", "err", rerr)
			}
		}
	}()

	att := &routing.Attachment{
		Network: conf.Name, ContainerID: args.ContainerID, IfName: args.IfName,
		NetNS: args.Netns, MTU: conf.MTU, Addresses: addrs, Routes: routes,
	}
	ifs, err := routing.Setup(att)
	if err != nil {
		return cniError(err)
	}
	defer func() {
		if err != nil {
			_ = routing.Teardown(conf.Name, args.ContainerID, args.IfName)
		}
	}()

	// hostRoutes are node configuration shared by every attachment: a
	// failed ADD leaves those it added, which a concurrent ADD may already
	// rely on (noderoutes.Table.Ensure).
	added, err := noderoutes.Ensure(routing.RouteProtocol, noderoutes.FromCNI(conf.HostRoutes))
	if len(added) > 0 {
		log.Info("added node routes", "hostRoutes", len(added))
	}
	if err != nil {
		return cniError(err)
	}

	if conf.IPMasq {
		if err := ip.SetupIPMasqForNetworks(conf.IPMasqBackend, masqNets(addrs), conf.Name, args.IfName, args.ContainerID); err != nil {
			return types.NewError(types.ErrInternal, fmt.Sprintf("set up ipMasq for %s: %v", args.ContainerID, err), "")
		}
	}

	result := buildResult(conf, args, ifs, addrs, routes)
	log.Info("attached", "hostVeth", ifs.Host.Name, "addresses", addressList(addrs))
	return types.PrintResult(result, conf.CNIVersion)
}

func cmdDel(args *skel.CmdArgs) (err error) {
	conf, err := netconf.Load(args.StdinData, args.Args)
	if err != nil {
		return err
	}
	log, closer := newLogger(conf, "verb", "DEL", "container", args.ContainerID, "ifname", args.IfName)
	defer closer.Close()
	defer func() { logOutcome(log, err) }()
	if checkContainerID(args.ContainerID) != nil {
		return nil // ADD refuses such an ID before creating anything
	}

	// The node end goes first: once it is gone nothing can use the
	// addresses, so releasing them afterwards can never hand out an address
	// that still carries traffic.
	if err := routing.TeardownVia(conf.Name, args.ContainerID, args.IfName, unlinker(conf, log)); err != nil {
		if !errors.Is(err, routing.ErrForeign) {
			return cniError(err)
		}
		log.Warn("left a foreign interface in place", "err", err)
	}
	addresses := allocatorFor(conf, args)
	if conf.IPMasq {
		if ips, gerr := addresses.Held(); gerr == nil && len(ips) > 0 {
			if err := ip.TeardownIPMasqForNetworks(ips, conf.Name, args.IfName, args.ContainerID); err != nil {
				log.Warn("tear down ipMasq", "err", err)
			}
		}
	}
	if err := addresses.Release(); err != nil {
		return cniError(err)
	}
	log.Info("detached")
	return nil
}

// reaperTimeout bounds the wait for the agent's reaper. It answers within
// milliseconds; past this the plugin deletes the link itself.
const reaperTimeout = 2 * time.Second

// unlinker returns how DEL deletes the host veth: through the node agent's
// reaper when the configuration names one, so that DEL does not wait for the
// kernel to release the device (package reaper says why), and nil (delete
// in-process) otherwise.
func unlinker(conf *netconf.NetConf, log *slog.Logger) func(netlink.Link, string) error {
	if conf.ReaperSocket == "" {
		return nil
	}
	return func(link netlink.Link, alias string) error {
		ino, err := reaper.NetNSInode("/proc/self/ns/net")
		if err == nil {
			err = reaper.Delete(conf.ReaperSocket, reaper.Request{NetNS: ino, Name: link.Attrs().Name, Index: link.Attrs().Index, Alias: alias}, reaperTimeout)
		}
		if err != nil {
			log.Warn("deleting the host veth in-process instead", "err", err)
		}
		return err
	}
}

func cmdCheck(args *skel.CmdArgs) (err error) {
	conf, err := netconf.Load(args.StdinData, args.Args)
	if err != nil {
		return err
	}
	log, closer := newLogger(conf, "verb", "CHECK", "container", args.ContainerID, "ifname", args.IfName)
	defer closer.Close()
	defer func() { logOutcome(log, err) }()
	if err := checkContainerID(args.ContainerID); err != nil {
		return err
	}

	if conf.PrevResult == nil {
		return netconf.ConfigError("prevResult", "missing; CHECK compares the node with the result of ADD")
	}
	prev, err := current.NewResultFromResult(conf.PrevResult)
	if err != nil {
		return types.NewError(types.ErrDecodingFailure, fmt.Sprintf("convert prevResult: %v", err), "")
	}
	att, want, err := attachmentFromResult(conf, args, prev)
	if err != nil {
		return err
	}
	held := make([]net.IP, len(att.Addresses))
	for i, a := range att.Addresses {
		held[i] = a.IPNet.IP
	}
	if err := allocatorFor(conf, args).Check(held); err != nil {
		return cniError(err)
	}
	if err := routing.Verify(att, want); err != nil {
		return cniError(fmt.Errorf("check %s: %w", args.ContainerID, err))
	}
	if err := noderoutes.Verify(routing.RouteProtocol, noderoutes.FromCNI(conf.HostRoutes)); err != nil {
		return cniError(fmt.Errorf("check %s: %w", args.ContainerID, err))
	}
	return nil
}

func cmdGC(args *skel.CmdArgs) (err error) {
	conf, err := netconf.Load(args.StdinData, args.Args)
	if err != nil {
		return err
	}
	log, closer := newLogger(conf, "verb", "GC")
	defer closer.Close()
	defer func() { logOutcome(log, err) }()

	valid := map[ipam.Owner]bool{}
	for _, a := range conf.Attachments() {
		valid[ipam.Owner{ContainerID: a.ContainerID, IfName: a.IfName}] = true
	}
	keep := func(id, ifName string) bool { return valid[ipam.Owner{ContainerID: id, IfName: ifName}] }

	removed, err := routing.CollectGarbageVia(conf.Name, keep, unlinker(conf, log))
	if err != nil {
		return cniError(err)
	}
	if conf.IPMasq {
		if err := ip.GCIPMasqForNetwork(conf.Name, conf.Attachments()); err != nil {
			log.Warn("collect ipMasq rules", "err", err)
		}
	}
	released, err := allocatorFor(conf, args).Collect(func(o ipam.Owner) bool { return valid[o] })
	if err != nil {
		return cniError(err)
	}
	log.Info("collected", "interfaces", len(removed), "reservations", released)
	return nil
}

func cmdStatus(args *skel.CmdArgs) error {
	conf, err := netconf.Load(args.StdinData, args.Args)
	if err != nil {
		return err
	}
	return allocatorFor(conf, args).Status()
}

// buildResult assembles the CNI result: the node end without a sandbox, the
// container end with one, and every address pointing at the container end,
// so chained plugins (portmap, bandwidth, tuning, firewall) find what they
// need.
func buildResult(conf *netconf.NetConf, args *skel.CmdArgs, ifs *routing.Interfaces, addrs []routing.Address, routes []*types.Route) *current.Result {
	contIdx := 1
	res := &current.Result{
		CNIVersion: current.ImplementedSpecVersion,
		Interfaces: []*current.Interface{
			{Name: ifs.Host.Name, Mac: ifs.Host.MAC, Mtu: ifs.Host.MTU},
			{Name: ifs.Container.Name, Mac: ifs.Container.MAC, Mtu: ifs.Container.MTU, Sandbox: args.Netns},
		},
		DNS: conf.DNS,
	}
	for _, a := range addrs {
		res.IPs = append(res.IPs, &current.IPConfig{Interface: &contIdx, Address: a.IPNet, Gateway: a.Gateway})
	}
	for _, r := range routes {
		rr := *r
		if rr.GW == nil {
			for _, a := range addrs {
				if (a.IPNet.IP.To4() == nil) == (r.Dst.IP.To4() == nil) {
					rr.GW = a.Gateway
					break
				}
			}
		}
		res.Routes = append(res.Routes, &rr)
	}
	return res
}

// attachmentFromResult rebuilds the attachment that ADD reported.
func attachmentFromResult(conf *netconf.NetConf, args *skel.CmdArgs, prev *current.Result) (*routing.Attachment, routing.Interfaces, error) {
	var want routing.Interfaces
	contIdx := -1
	for i, intf := range prev.Interfaces {
		switch {
		case intf.Name == args.IfName && intf.Sandbox == args.Netns:
			want.Container = routing.Link{Name: intf.Name, MAC: intf.Mac}
			contIdx = i
		case intf.Sandbox == "" && intf.Name == routing.HostVethName(args.ContainerID, args.IfName):
			want.Host = routing.Link{Name: intf.Name, MAC: intf.Mac}
		}
	}
	if contIdx < 0 {
		return nil, want, netconf.ConfigError("prevResult.interfaces", "no interface %s in sandbox %s", args.IfName, args.Netns)
	}
	att := &routing.Attachment{
		Network: conf.Name, ContainerID: args.ContainerID, IfName: args.IfName,
		NetNS: args.Netns, MTU: conf.MTU, Routes: prev.Routes,
	}
	for _, ipc := range prev.IPs {
		if ipc.Interface != nil && *ipc.Interface != contIdx {
			continue
		}
		if ipc.Gateway == nil {
			return nil, want, netconf.ConfigError("prevResult.ips", "address %s has no gateway", ipc.Address.String())
		}
		att.Addresses = append(att.Addresses, routing.Address{IPNet: ipc.Address, Gateway: ipc.Gateway})
	}
	if len(att.Addresses) == 0 {
		return nil, want, netconf.ConfigError("prevResult.ips", "no address on %s", args.IfName)
	}
	return att, want, nil
}

func masqNets(addrs []routing.Address) []*net.IPNet {
	out := make([]*net.IPNet, len(addrs))
	for i, a := range addrs {
		out[i] = &net.IPNet{IP: a.IPNet.IP, Mask: a.IPNet.Mask}
	}
	return out
}

func addressList(addrs []routing.Address) string {
	s := make([]string, len(addrs))
	for i, a := range addrs {
		s[i] = a.IPNet.String()
	}
	return strings.Join(s, ",")
}

func logOutcome(log *slog.Logger, err error) {
	if err != nil {
		log.Error("failed", "err", err)
	}
}

// maxContainerIDLen bounds CNI_CONTAINERID, which CNI leaves unbounded: the
// ID becomes part of a file name in the store and, with the network name and
// the interface name, of the host veth's alias, which the kernel limits to
// 255 bytes (10+netconf.MaxNetworkNameLen+1+128+1+15 = 255). Runtimes use 64 hex
// digits.
const maxContainerIDLen = 128

func checkContainerID(id string) error {
	if len(id) > maxContainerIDLen {
		return types.NewError(types.ErrInvalidEnvironmentVariables,
			fmt.Sprintf("CNI_CONTAINERID (containerID) is %d characters long; vethroute accepts at most %d", len(id), maxContainerIDLen), "")
	}
	return nil
}

// isIOErrno reports a file system that cannot take a write (read-only,
// full, out of inodes or quota, failing): the node's problem, not the
// configuration's, so CNI's I/O failure rather than a generic error.
func isIOErrno(err error) bool {
	for _, errno := range []syscall.Errno{syscall.EROFS, syscall.ENOSPC, syscall.EDQUOT, syscall.EIO} {
		if errors.Is(err, errno) {
			return true
		}
	}
	return false
}

// cniError maps an error to the CNI error code that tells the runtime what
// to do, keeping the message. Errors that already carry a code pass through.
func cniError(err error) error {
	if err == nil {
		return nil
	}
	var te *types.Error
	if errors.As(err, &te) {
		return te
	}
	code := types.ErrInternal
	switch {
	case errors.Is(err, ipam.ErrExhausted), errors.Is(err, ipam.ErrBusy):
		code = types.ErrTryAgainLater
	case errors.Is(err, ipam.ErrConflict):
		code = types.ErrInvalidNetworkConfig
	case errors.Is(err, ipam.ErrCorrupt), errors.Is(err, fs.ErrPermission), errors.Is(err, fs.ErrNotExist), isIOErrno(err):
		code = types.ErrIOFailure
	case errors.Is(err, routing.ErrNetNS):
		code = types.ErrInvalidNetNS
	}
	return types.NewError(code, err.Error(), "")
}
