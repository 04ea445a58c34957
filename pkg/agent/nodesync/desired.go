package nodesync

import (
	"net/netip"
	"slices"

	corev1 "k8s.io/api/core/v1"

	"github.com/vethroute/vethroute/pkg/noderoutes"
)

// problem is a reason a node's pod subnet gets no route on this node. It is
// reported (an Event on that Node and a log line) and the subnet is skipped;
// the rest of the cluster is still routed.
type problem struct {
	// Node is the Node the problem is about.
	Node string
	// Reason is a CamelCase Event reason.
	Reason string
	// Message says what is wrong and what is skipped.
	Message string
}

// Event reasons of the problems desiredRoutes reports.
const (
	reasonUnreachable   = "InternalIPNotConnected"
	reasonNoInternalIP  = "NoInternalIP"
	reasonBadPodCIDR    = "InvalidPodCIDR"
	reasonOverlap       = "PodCIDROverlap"
	reasonRouteConflict = "RouteConflict"
	// reasonOutsideCluster: the pod CIDR lies outside --cluster-cidrs.
	reasonOutsideCluster = "PodCIDROutsideCluster"
	// reasonCoversNodeNetwork: the pod CIDR overlaps a subnet of the node
	// network or contains a node's address.
	reasonCoversNodeNetwork = "PodCIDRCoversNodeNetwork"
)

// internalIPs returns the first InternalIP of each address family in a
// node's status (the invalid zero Addr when there is none of a family).
func internalIPs(n *corev1.Node) (v4, v6 netip.Addr) {
	for _, a := range n.Status.Addresses {
		if a.Type != corev1.NodeInternalIP {
			continue
		}
		ip, err := netip.ParseAddr(a.Address)
		if err != nil {
			continue
		}
		ip = ip.Unmap()
		switch {
		case ip.Is4() && !v4.IsValid():
			v4 = ip
		case ip.Is6() && !v6.IsValid():
			v6 = ip
		}
	}
	return v4, v6
}

// podCIDRScope is what a node's pod CIDR must lie inside and keep clear of
// before any node routes toward it. Node objects can be written by anyone
// allowed to create or patch Nodes, so a pod CIDR is hostile input: without
// a scope a Node claiming 0.0.0.0/1, another node's address or the node
// network would pull that traffic toward itself on every node.
type podCIDRScope struct {
	// ClusterCIDRs are the cluster's pod CIDRs, set by the operator: every
	// accepted pod CIDR lies inside one of them.
	ClusterCIDRs []netip.Prefix
	// Connected are this node's directly connected subnets; a pod CIDR
	// overlapping one would take over the node's own network.
	Connected []netip.Prefix
}

// desiredRoutes decides the routes toward every other node at once, in
// the order of the nodes' names (routeIndex.decide says when a pod CIDR is
// refused or skipped).
func desiredRoutes(self string, nodes []*corev1.Node, scope podCIDRScope) ([]nodeRoute, []problem) {
	x := newRouteIndex(self, scope, nodes)
	var routes []nodeRoute
	var problems []problem
	for _, name := range x.names() {
		r, p := x.decide(name)
		routes = append(routes, r...)
		problems = append(problems, p...)
	}
	return routes, problems
}

// nodeRoute is a desired route and the node whose pod CIDR it reaches.
type nodeRoute struct {
	Node string
	noderoutes.Route
}

// nodeAddrs returns the IP addresses a Node reports of itself.
func nodeAddrs(n *corev1.Node) []netip.Addr {
	var out []netip.Addr
	for _, a := range n.Status.Addresses {
		if ip, err := netip.ParseAddr(a.Address); err == nil {
			out = append(out, ip.Unmap())
		}
	}
	return out
}

func overlapsAny(prefixes []netip.Prefix, p netip.Prefix) (netip.Prefix, bool) {
	for _, q := range prefixes {
		if q.Overlaps(p) {
			return q, true
		}
	}
	return netip.Prefix{}, false
}

// insideAny reports whether p lies wholly inside one of prefixes.
func insideAny(prefixes []netip.Prefix, p netip.Prefix) bool {
	for _, q := range prefixes {
		if q.Bits() <= p.Bits() && q.Contains(p.Addr()) {
			return true
		}
	}
	return false
}

// containsAny returns an address of sorted (ascending) that p contains.
func containsAny(p netip.Prefix, sorted []netip.Addr) (netip.Addr, bool) {
	first := p.Masked().Addr()
	i, _ := slices.BinarySearchFunc(sorted, first, func(a, b netip.Addr) int { return a.Compare(b) })
	if i < len(sorted) && p.Contains(sorted[i]) {
		return sorted[i], true
	}
	return netip.Addr{}, false
}

func containedIn(prefixes []netip.Prefix, a netip.Addr) bool {
	for _, p := range prefixes {
		if p.Contains(a) {
			return true
		}
	}
	return false
}
