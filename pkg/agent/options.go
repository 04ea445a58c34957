package agent

import (
	"errors"
	"flag"
	"fmt"
	"net"
	"net/netip"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/containernetworking/cni/pkg/utils"
	"github.com/containernetworking/cni/pkg/version"

	"github.com/vethroute/vethroute/pkg/agent/cniconf"
	"github.com/vethroute/vethroute/pkg/netconf"
)

// Options are the agent's command-line settings. docs/kubernetes.md lists
// them; AddFlags is the single place their names and defaults live.
type Options struct {
	Kubeconfig       string
	NodeName         string
	CNIConfDir       string
	CNIConfName      string
	CNIVersion       string
	Network          string
	MTU              int
	Chain            string
	IPAMDataDir      string
	PluginLogFile    string
	ReaperSocket     string
	RouteProtocol    int
	ResyncPeriod     time.Duration
	Masquerade       bool
	NoMasqCIDRs      string
	ClusterCIDRs     string
	EnableForwarding bool
	NetworkPolicy    bool
	HealthAddr       string
	MetricsAddr      string
	LogLevel         string
	LogFormat        string
	ShutdownTimeout  time.Duration
}

// AddFlags registers every option on fs with its default.
func (o *Options) AddFlags(fs *flag.FlagSet) {
	fs.StringVar(&o.Kubeconfig, "kubeconfig", "", "kubeconfig file; empty uses the in-cluster service account")
	fs.StringVar(&o.NodeName, "node-name", "", "name of the Node this agent runs on (default $NODE_NAME)")
	fs.StringVar(&o.CNIConfDir, "cni-conf-dir", "/etc/cni/net.d", "directory the CNI configuration is written to")
	fs.StringVar(&o.CNIConfName, "cni-conf-name", "10-vethroute.conflist", "file name of the CNI configuration")
	fs.StringVar(&o.CNIVersion, "cni-version", cniconf.AutoCNIVersion, `cniVersion of the written conflist; "auto" picks the newest the node's container runtime reads (1.1.0 on containerd 2+, else 1.0.0)`)
	fs.StringVar(&o.Network, "network-name", "vethroute", "network name of the written conflist")
	fs.IntVar(&o.MTU, "mtu", 0, fmt.Sprintf("pod interface MTU written to the conflist; 0 takes the MTU of the interface carrying the node's InternalIP (the smaller of two on a dual-stack node), re-read on every resync, or the plugin's default (%d) when none does", netconf.DefaultMTU))
	fs.StringVar(&o.Chain, "chain", "portmap", "comma-separated plugin types chained after vethroute in the conflist, in order (portmap serves hostPort, bandwidth the bandwidth annotations); their binaries must be in the node's CNI bin directory; empty chains none")
	fs.StringVar(&o.IPAMDataDir, "ipam-data-dir", netconf.DefaultDataDir, "reservation directory of the plugin's built-in IPAM")
	fs.StringVar(&o.PluginLogFile, "plugin-log-file", "", "log file the plugin writes to (conflist logFile); empty logs to the runtime")
	fs.StringVar(&o.ReaperSocket, "reaper-socket", "", "Unix socket on which the agent deletes host veths for the plugin's DEL, so DEL need not wait for the kernel to release them; written to the conflist. Must be the same path on the host; empty disables")
	fs.IntVar(&o.RouteProtocol, "route-protocol", netconf.AgentRouteProtocol, "route protocol number that tags (and marks as the agent's) the routes to other nodes")
	fs.DurationVar(&o.ResyncPeriod, "resync-period", 30*time.Second, "how often routes are re-applied against drift without an API change")
	fs.BoolVar(&o.Masquerade, "masquerade", true, "masquerade pod traffic leaving the cluster's pod CIDRs to the node's address (nftables table inet vethroute-agent; needs the nft binary)")
	fs.StringVar(&o.NoMasqCIDRs, "no-masquerade-cidrs", "", "comma-separated destinations, besides the cluster's pod CIDRs, that pod traffic reaches with the pod's own address (networks that route the pod CIDRs back)")
	fs.StringVar(&o.ClusterCIDRs, "cluster-cidrs", "", "comma-separated pod CIDRs of the cluster (kube-controller-manager's --cluster-cidr), required: a Node's pod CIDR outside them gets no route, and masquerading treats them as inside the cluster")
	fs.BoolVar(&o.EnableForwarding, "enable-forwarding", true, "turn on IP forwarding for the families of this node's pod CIDRs")
	fs.BoolVar(&o.NetworkPolicy, "network-policy", true, "enforce Kubernetes NetworkPolicy for this node's pods (nftables table inet vethroute-netpol; needs the nft binary); false removes the table")
	fs.StringVar(&o.HealthAddr, "health-addr", "127.0.0.1:9387", "listen address of /healthz and /readyz (and /metrics unless --metrics-addr is set); empty disables")
	fs.StringVar(&o.MetricsAddr, "metrics-addr", "", "listen address of /metrics alone, e.g. the node's address for Prometheus; empty serves /metrics on --health-addr")
	fs.StringVar(&o.LogLevel, "log-level", "info", "log level: debug, info, warn, error")
	fs.StringVar(&o.LogFormat, "log-format", "text", "log format: text or json")
	fs.DurationVar(&o.ShutdownTimeout, "shutdown-timeout", 10*time.Second, "how long a SIGTERM waits for the HTTP server and event sink to drain")
}

// Validate checks the options and fills the ones taken from elsewhere.
func (o *Options) Validate(getenv func(string) string) error {
	var errs []error
	if o.NodeName == "" {
		o.NodeName = getenv("NODE_NAME")
	}
	if o.NodeName == "" {
		errs = append(errs, errors.New("--node-name (or $NODE_NAME) is required"))
	}
	if !filepath.IsAbs(o.CNIConfDir) {
		errs = append(errs, fmt.Errorf("--cni-conf-dir %q is not absolute", o.CNIConfDir))
	}
	if ext := filepath.Ext(o.CNIConfName); ext != ".conflist" || strings.ContainsRune(o.CNIConfName, '/') {
		errs = append(errs, fmt.Errorf("--cni-conf-name %q must be a file name ending in .conflist", o.CNIConfName))
	}
	if err := utils.ValidateNetworkName(o.Network); err != nil {
		errs = append(errs, fmt.Errorf("--network-name: %w", err))
	}
	if o.CNIVersion != cniconf.AutoCNIVersion && !slices.Contains(version.All.SupportedVersions(), o.CNIVersion) {
		errs = append(errs, fmt.Errorf("--cni-version %q is neither auto nor one of %s", o.CNIVersion, strings.Join(version.All.SupportedVersions(), ", ")))
	}
	if o.ReaperSocket != "" && !filepath.IsAbs(o.ReaperSocket) {
		errs = append(errs, fmt.Errorf("--reaper-socket %q is not absolute", o.ReaperSocket))
	}
	if !filepath.IsAbs(o.IPAMDataDir) {
		errs = append(errs, fmt.Errorf("--ipam-data-dir %q is not absolute", o.IPAMDataDir))
	}
	if owner := routeProtocolOwner(o.RouteProtocol); owner != "" {
		errs = append(errs, fmt.Errorf("--route-protocol %d belongs to %s; the agent deletes every route of its protocol, so pick one no other program uses (5..7, 19..41, 43..98 without 86, 100..185, 193..255)", o.RouteProtocol, owner))
	}
	if o.MetricsAddr != "" {
		addr, err := normalizeHostPort(o.MetricsAddr)
		if err != nil {
			errs = append(errs, fmt.Errorf("--metrics-addr: %w", err))
		}
		o.MetricsAddr = addr
	}
	if o.ResyncPeriod < time.Second {
		errs = append(errs, fmt.Errorf("--resync-period %s is below 1s", o.ResyncPeriod))
	}
	if o.MTU != 0 && (o.MTU < netconf.MinMTU || o.MTU > netconf.MaxMTU) {
		errs = append(errs, fmt.Errorf("--mtu %d is outside %d..%d", o.MTU, netconf.MinMTU, netconf.MaxMTU))
	}
	if cidrs, err := o.clusterCIDRs(); err != nil {
		errs = append(errs, err)
	} else if len(cidrs) == 0 {
		errs = append(errs, errors.New("--cluster-cidrs is required: the cluster's pod CIDRs (kube-controller-manager's --cluster-cidr), e.g. 10.244.0.0/16,fd00:10:244::/56; Node pod CIDRs outside them get no route"))
	}
	if _, err := o.noMasqueradeCIDRs(); err != nil {
		errs = append(errs, err)
	}
	if _, err := o.chain(); err != nil {
		errs = append(errs, err)
	}
	if o.LogFormat != "text" && o.LogFormat != "json" {
		errs = append(errs, fmt.Errorf("--log-format %q is neither text nor json", o.LogFormat))
	}
	if _, err := ParseLevel(o.LogLevel); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// routeProtocolOwner names who owns route protocol p (the kernel's RTPROT_*
// list, as /etc/iproute2/rt_protos shows it), or "" when p is free for the
// agent. The agent deletes routes of its protocol that it does not want, so
// sharing one with a routing daemon would delete that daemon's routes.
func routeProtocolOwner(p int) string {
	switch {
	case p < 0 || p > 255:
		return "no one: it is outside 0..255"
	case p <= 4:
		return "the kernel (unspec, redirect, kernel, boot, static)"
	case p >= 8 && p <= 18:
		return "routing daemons (gated, ra, mrt, zebra, bird, dnrouted, xorp, ntk, dhcp, mrouted, keepalived)"
	case p == 42:
		return "babel"
	case p == netconf.PluginRouteProtocol:
		return "the vethroute plugin's hostRoutes"
	case p == 99:
		return "openr"
	case p >= 186 && p <= 192:
		return "routing daemons (bgp, isis, ospf, rip, eigrp)"
	}
	return ""
}

// normalizeHostPort accepts host:port, and also an IPv6 address without
// brackets followed by :port, which is what "$(HOST_IP):9387" becomes in a
// DaemonSet on an IPv6 node.
func normalizeHostPort(addr string) (string, error) {
	if _, _, err := net.SplitHostPort(addr); err == nil {
		return addr, nil
	}
	i := strings.LastIndexByte(addr, ':')
	if i < 0 {
		return "", fmt.Errorf("%q is not host:port", addr)
	}
	ip, err := netip.ParseAddr(addr[:i])
	if err != nil {
		return "", fmt.Errorf("%q is not host:port", addr)
	}
	return net.JoinHostPort(ip.String(), addr[i+1:]), nil
}

func (o *Options) clusterCIDRs() ([]netip.Prefix, error) {
	return prefixList("--cluster-cidrs", o.ClusterCIDRs, "would let any Node route every address; give the cluster's pod CIDRs")
}

// noMasqueradeCIDRs returns --no-masquerade-cidrs. A default route there
// would turn masquerading off for everything, which --masquerade=false says
// plainly.
func (o *Options) noMasqueradeCIDRs() ([]netip.Prefix, error) {
	return prefixList("--no-masquerade-cidrs", o.NoMasqCIDRs, "exempts every destination; use --masquerade=false")
}

// prefixList parses a comma-separated prefix flag, masked. A /0 is refused
// with why (its meaning differs per flag), and IPv4-mapped IPv6, which no
// packet of either family would match as written.
func prefixList(flag, value, whyNotDefault string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, s := range strings.Split(value, ",") {
		if s = strings.TrimSpace(s); s == "" {
			continue
		}
		p, err := netip.ParsePrefix(s)
		switch {
		case err != nil:
			return nil, fmt.Errorf("%s: %w", flag, err)
		case p.Bits() == 0:
			return nil, fmt.Errorf("%s: %s %s", flag, p, whyNotDefault)
		case p.Addr().Is4In6():
			return nil, fmt.Errorf("%s: %s is IPv4-mapped IPv6; write the IPv4 prefix", flag, p)
		}
		out = append(out, p.Masked())
	}
	return out, nil
}

// chain returns --chain's plugin types. A type becomes a file name the
// runtime executes from its CNI bin directory, so only a plain name is
// accepted; vethroute itself and repeats are refused.
func (o *Options) chain() ([]string, error) {
	var out []string
	for _, typ := range strings.Split(o.Chain, ",") {
		typ = strings.TrimSpace(typ)
		switch {
		case typ == "":
			continue
		case !chainType.MatchString(typ):
			return nil, fmt.Errorf("--chain: %q is not a plugin type (letters, digits, '-', '_', '.')", typ)
		case typ == netconf.PluginType:
			return nil, fmt.Errorf("--chain: %q is the conflist's first plugin already", typ)
		case slices.Contains(out, typ):
			return nil, fmt.Errorf("--chain: %q is listed twice", typ)
		}
		out = append(out, typ)
	}
	return out, nil
}

var chainType = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]*$`)
