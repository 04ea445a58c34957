package cniconf

import (
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/cni/pkg/utils"
	"github.com/containernetworking/plugins/plugins/ipam/host-local/backend/allocator"
	corev1 "k8s.io/api/core/v1"

	"github.com/vethroute/vethroute/pkg/netconf"
)

// ConfData is what the agent writes into a node's conflist.
type ConfData struct {
	// CNIVersion and Network are the conflist's cniVersion and name.
	CNIVersion string
	Network    string
	// MTU is the pods' MTU; 0 leaves the plugin's default (netconf.DefaultMTU).
	MTU int
	// DataDir is the built-in IPAM's reservation directory.
	DataDir string
	// LogFile is the plugin's log file; empty logs to the runtime's stderr.
	LogFile string
	// ReaperSocket is the agent's reaper socket, which DEL hands host veths
	// to; empty when the agent runs no reaper.
	ReaperSocket string
	// Chain lists the plugin types chained after vethroute, in order.
	Chain []string
	// Ranges holds one entry per pod CIDR of the node, in spec order.
	Ranges []ConfRange
}

// ConfRange is one pod CIDR of the node as the plugin's IPAM range, with
// the family's default route (0.0.0.0/0 or ::/0) through its gateway.
type ConfRange struct {
	// Subnet is the pod CIDR.
	Subnet netip.Prefix
	// Gateway is the node's address in it, which the plugin puts on every
	// host veth: the last usable address of the subnet.
	Gateway netip.Addr
}

// gateway returns the address the node takes in a pod CIDR: the last usable
// one, as host-local's default range end (the broadcast address minus one
// for IPv4, the last address for IPv6). For 192.168.0.0/24 that is
// 192.168.0.254, the article's gateway. The plugin's allocator never hands
// the gateway to a pod. Subnets too small to hold a gateway and one pod
// (IPv4 longer than /30, IPv6 longer than /126) are refused.
func gateway(p netip.Prefix) (netip.Addr, error) {
	p = p.Masked()
	a := p.Addr()
	if (a.Is4() && p.Bits() > 30) || (a.Is6() && p.Bits() > 126) {
		return netip.Addr{}, fmt.Errorf("pod CIDR %s is too small for a gateway and a pod", p)
	}
	b := a.AsSlice()
	host := a.BitLen() - p.Bits()
	for i := len(b) - 1; host > 0; i-- {
		n := min(host, 8)
		b[i] |= byte(1<<n - 1)
		host -= n
	}
	last, _ := netip.AddrFromSlice(b)
	if last.Is4() {
		last = last.Prev()
	}
	return last, nil
}

// AutoCNIVersion is the --cni-version value that lets the agent choose the
// conflist's cniVersion from the node's container runtime.
const AutoCNIVersion = "auto"

// cniVersionFor picks the newest cniVersion the node's container runtime is
// known to read, from the version the kubelet reports in
// status.nodeInfo.containerRuntimeVersion. A runtime rejects a conflist
// whose cniVersion its libcni does not know ("unsupported CNI result
// version") and every pod on the node then fails to start: libcni learned
// 1.1.0 (GC, STATUS) in v1.2.0, which containerd ships from 2.0; containerd
// 1.6 and 1.7 stop at 1.0.0. Runtimes not recognised here get 1.0.0, which
// every libcni since v1.0.0 reads; --cni-version overrides the choice.
func cniVersionFor(node *corev1.Node) string {
	name, ver, ok := strings.Cut(node.Status.NodeInfo.ContainerRuntimeVersion, "://")
	if ok && name == "containerd" {
		major, _, _ := strings.Cut(strings.TrimPrefix(ver, "v"), ".")
		if n, err := strconv.Atoi(major); err == nil && n >= 2 {
			return "1.1.0"
		}
	}
	return "1.0.0"
}

// NewConfData builds the conflist data for a node from its pod CIDRs.
func NewConfData(node *corev1.Node, base ConfData) (ConfData, error) {
	d := base
	d.Ranges = nil
	if d.CNIVersion == AutoCNIVersion {
		d.CNIVersion = cniVersionFor(node)
	}
	cidrs := PodCIDRs(node)
	if len(cidrs) == 0 {
		return d, fmt.Errorf("node %s has no spec.podCIDRs yet", node.Name)
	}
	for _, c := range cidrs {
		p, err := netip.ParsePrefix(c)
		if err != nil {
			return d, fmt.Errorf("node %s: pod CIDR %q: %w", node.Name, c, err)
		}
		gw, err := gateway(p)
		if err != nil {
			return d, fmt.Errorf("node %s: %w", node.Name, err)
		}
		d.Ranges = append(d.Ranges, ConfRange{Subnet: p.Masked(), Gateway: gw})
	}
	return d, nil
}

// PodCIDRs returns a node's pod subnets: spec.podCIDRs, or the older single
// spec.podCIDR when the list is empty. The routes toward a node are taken
// from the same reading, so they match the ranges its conflist hands out.
func PodCIDRs(n *corev1.Node) []string {
	if len(n.Spec.PodCIDRs) > 0 {
		return n.Spec.PodCIDRs
	}
	if n.Spec.PodCIDR != "" {
		return []string{n.Spec.PodCIDR}
	}
	return nil
}

// confList is the typed conflist of data: the vethroute plugin with its
// built-in IPAM, one range set per pod CIDR and a default route per address
// family, followed by the chained plugins.
func confList(data ConfData) netconf.ConfList {
	ipamConf := &allocator.IPAMConfig{DataDir: data.DataDir}
	for _, r := range data.Ranges {
		subnet := net.IPNet{IP: r.Subnet.Addr().AsSlice(), Mask: net.CIDRMask(r.Subnet.Bits(), r.Subnet.Addr().BitLen())}
		def := net.IPNet{IP: make(net.IP, len(subnet.IP)), Mask: net.CIDRMask(0, r.Subnet.Addr().BitLen())}
		ipamConf.Ranges = append(ipamConf.Ranges, allocator.RangeSet{{Subnet: types.IPNet(subnet), Gateway: r.Gateway.AsSlice()}})
		ipamConf.Routes = append(ipamConf.Routes, &types.Route{Dst: def})
	}
	plugin := &netconf.NetConf{
		PluginConf:   types.PluginConf{Type: netconf.PluginType, IPAM: types.IPAM{Type: netconf.BuiltinIPAM}},
		MTU:          data.MTU,
		LogFile:      data.LogFile,
		ReaperSocket: data.ReaperSocket,
		Builtin:      ipamConf,
	}
	l := netconf.ConfList{CNIVersion: data.CNIVersion, Name: data.Network, Plugins: []any{plugin}}
	for _, typ := range data.Chain {
		l.Plugins = append(l.Plugins, netconf.NewChained(typ))
	}
	return l
}

// RenderConfList writes the conflist of data and checks the result as the
// runtime and the plugin will: libcni must accept the list, and each
// vethroute entry must pass the plugin's own netconf.Load. The output is
// deterministic, so the file is only rewritten when data changes.
func RenderConfList(data ConfData) ([]byte, error) {
	b, err := json.MarshalIndent(confList(data), "", "  ")
	if err != nil {
		return nil, fmt.Errorf("render conflist: %w", err)
	}
	b = append(b, '\n')
	l, err := libcni.ConfListFromBytes(b)
	if err != nil {
		return nil, fmt.Errorf("rendered conflist is not a valid CNI configuration list: %w", err)
	}
	// libcni parses leniently; a runtime would fail on these later.
	if err := utils.ValidateNetworkName(l.Name); err != nil {
		return nil, fmt.Errorf("rendered conflist is not a valid CNI configuration list: %w", err)
	}
	if l.CNIVersion == "" || len(l.Plugins) == 0 {
		return nil, fmt.Errorf("rendered conflist is not a valid CNI configuration list: no cniVersion or no plugins")
	}
	if _, err := netconf.LoadConfList(b); err != nil {
		return nil, fmt.Errorf("rendered conflist would fail the plugin: %w", err)
	}
	return b, nil
}
