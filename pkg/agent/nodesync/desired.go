package nodesync

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"

	"github.com/vethroute/vethroute/pkg/agent/cniconf"
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

// desiredRoutes computes the routes this node (self) needs: for every other
// node, one route per pod subnet through that node's InternalIP of the same
// family. A subnet is refused, with a problem, when it is malformed or an
// IPv4-mapped IPv6 prefix, when it lies outside scope's cluster CIDRs, when
// it overlaps a connected subnet of this node or contains any Node's
// address, when it overlaps this node's own pod subnets, and when it
// overlaps another node's: then neither node gets a route, since nothing
// in the Node objects tells which claim is true. It is skipped, also with a
// problem, when the node has no InternalIP of its family or that InternalIP
// is outside every connected subnet (the kernel would refuse it as a next
// hop).
func desiredRoutes(self string, nodes []*corev1.Node, scope podCIDRScope) ([]nodeRoute, []problem) {
	sorted := slices.Clone(nodes)
	slices.SortFunc(sorted, func(a, b *corev1.Node) int { return strings.Compare(a.Name, b.Name) })

	var problems []problem
	report := func(n *corev1.Node, reason, format string, a ...any) {
		problems = append(problems, problem{Node: n.Name, Reason: reason, Message: fmt.Sprintf(format, a...)})
	}
	var own []netip.Prefix
	var addrs []netip.Addr
	for _, n := range sorted {
		if n.Name == self {
			for _, c := range cniconf.PodCIDRs(n) {
				if p, err := netip.ParsePrefix(c); err == nil {
					own = append(own, p.Masked())
				}
			}
		}
		addrs = append(addrs, nodeAddrs(n)...)
	}
	// Sorted, so that the addresses inside a prefix are one run found by
	// binary search: the check stays O(log n) per pod CIDR at any cluster
	// size.
	slices.SortFunc(addrs, func(a, b netip.Addr) int { return a.Compare(b) })

	// Every claim that is acceptable on its own, before claims are
	// compared with each other.
	var claims []claim
	for _, n := range sorted {
		if n.Name == self {
			continue
		}
		for _, c := range cniconf.PodCIDRs(n) {
			p, err := netip.ParsePrefix(c)
			if err != nil {
				report(n, reasonBadPodCIDR, "pod CIDR %q of node %s is not a prefix; no route to it from %s", c, n.Name, self)
				continue
			}
			p = p.Masked()
			switch {
			case p.Addr().Is4In6():
				report(n, reasonBadPodCIDR, "pod CIDR %s of node %s is an IPv4-mapped IPv6 prefix, which no pod can use; no route to it from %s", p, n.Name, self)
			case !insideAny(scope.ClusterCIDRs, p):
				report(n, reasonOutsideCluster, "pod CIDR %s of node %s is outside the cluster's pod CIDRs %v (vethroute-agent --cluster-cidrs); no route to it from %s", p, n.Name, scope.ClusterCIDRs, self)
			default:
				if c, ok := overlapsAny(scope.Connected, p); ok {
					report(n, reasonCoversNodeNetwork, "pod CIDR %s of node %s overlaps %s, a subnet directly connected to node %s; no route to it from %s", p, n.Name, c, self, self)
					continue
				}
				if a, ok := containsAny(p, addrs); ok {
					report(n, reasonCoversNodeNetwork, "pod CIDR %s of node %s contains %s, a node's address; no route to it from %s", p, n.Name, a, self)
					continue
				}
				if o, ok := overlapsAny(own, p); ok {
					report(n, reasonOverlap, "pod CIDR %s of node %s overlaps %s of node %s itself; no route to it from %s", p, n.Name, o, self, self)
					continue
				}
				claims = append(claims, claim{prefix: p, node: n})
			}
		}
	}

	var routes []nodeRoute
	contest := contestedClaims(claims)
	for i, cl := range claims {
		n, p := cl.node, cl.prefix
		if other, ok := contest[i]; ok {
			report(n, reasonOverlap, "pod CIDR %s of node %s overlaps %s of node %s; neither gets a route from %s until one of them is corrected", p, n.Name, other.prefix, other.node.Name, self)
			continue
		}
		v4, v6 := internalIPs(n)
		gw, fam := v4, "IPv4"
		if p.Addr().Is6() {
			gw, fam = v6, "IPv6"
		}
		if !gw.IsValid() {
			report(n, reasonNoInternalIP, "node %s has no %s InternalIP to route its pod CIDR %s through; no route to it from %s", n.Name, fam, p, self)
			continue
		}
		if !containedIn(scope.Connected, gw) {
			report(n, reasonUnreachable, "InternalIP %s of node %s is not on a subnet directly connected to node %s; no route to pod CIDR %s from %s", gw, n.Name, self, p, self)
			continue
		}
		routes = append(routes, nodeRoute{Node: n.Name, Route: noderoutes.Route{Dst: p, Gw: gw}})
	}
	return routes, problems
}

// nodeRoute is a desired route and the node whose pod CIDR it reaches.
type nodeRoute struct {
	Node string
	noderoutes.Route
}

type claim struct {
	prefix netip.Prefix
	node   *corev1.Node
}

// contestedClaims returns, for every claim that overlaps a claim of another
// node, one such claim. Two prefixes overlap only when one contains the
// other, so in (address, length) order the prefixes containing a claim are
// a nested chain of earlier claims: one sorted pass with a stack of that
// chain finds every overlap, O(n log n) rather than comparing every pair.
func contestedClaims(claims []claim) map[int]claim {
	order := make([]int, len(claims))
	for i := range order {
		order[i] = i
	}
	slices.SortFunc(order, func(a, b int) int {
		pa, pb := claims[a].prefix, claims[b].prefix
		if c := pa.Addr().Compare(pb.Addr()); c != 0 {
			return c
		}
		return pa.Bits() - pb.Bits()
	})
	out := map[int]claim{}
	var chain []int
	for _, i := range order {
		p := claims[i].prefix
		for len(chain) > 0 && !claims[chain[len(chain)-1]].prefix.Contains(p.Addr()) {
			chain = chain[:len(chain)-1]
		}
		// Every claim left on the chain contains p: each one of another
		// node contests it and is contested by it. The chain holds one
		// prefix per length, plus claims repeating the same prefix.
		for k := len(chain) - 1; k >= 0; k-- {
			j := chain[k]
			if claims[j].node.Name == claims[i].node.Name {
				continue
			}
			if _, ok := out[i]; !ok {
				out[i] = claims[j]
			}
			if _, ok := out[j]; !ok {
				out[j] = claims[i]
			}
		}
		chain = append(chain, i)
	}
	return out
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
