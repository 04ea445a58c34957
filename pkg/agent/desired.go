package agent

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"

	"github.com/vethroute/vethroute/pkg/noderoutes"
)

// Problem is a reason a node's pod subnet gets no route on this node. It is
// reported (an Event on that Node and a log line) and the subnet is skipped;
// the rest of the cluster is still routed.
type Problem struct {
	// Node is the Node the problem is about.
	Node string
	// Reason is a CamelCase Event reason.
	Reason string
	// Message says what is wrong and what is skipped.
	Message string
}

// Event reasons of the problems DesiredRoutes reports.
const (
	ReasonUnreachable   = "InternalIPNotConnected"
	ReasonNoInternalIP  = "NoInternalIP"
	ReasonBadPodCIDR    = "InvalidPodCIDR"
	ReasonOverlap       = "PodCIDROverlap"
	ReasonRouteConflict = "RouteConflict"
)

// PodCIDRs returns a node's pod subnets: spec.podCIDRs, or the older single
// spec.podCIDR when the list is empty.
func PodCIDRs(n *corev1.Node) []string {
	if len(n.Spec.PodCIDRs) > 0 {
		return n.Spec.PodCIDRs
	}
	if n.Spec.PodCIDR != "" {
		return []string{n.Spec.PodCIDR}
	}
	return nil
}

// InternalIPs returns the first InternalIP of each address family in a
// node's status (the invalid zero Addr when there is none of a family).
func InternalIPs(n *corev1.Node) (v4, v6 netip.Addr) {
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

// DesiredRoutes computes the routes this node (self) needs: for every other
// node, one route per pod subnet through that node's InternalIP of the same
// family. A subnet is skipped, with a Problem, when the node has no
// InternalIP of its family, when the InternalIP is outside every prefix in
// connected (the kernel would refuse it as a next hop), when the subnet is
// malformed, or when it overlaps this node's own pod subnets or a subnet
// already routed to another node (nodes are taken in name order, so the
// choice is stable).
func DesiredRoutes(self string, nodes []*corev1.Node, connected []netip.Prefix) ([]NodeRoute, []Problem) {
	sorted := slices.Clone(nodes)
	slices.SortFunc(sorted, func(a, b *corev1.Node) int { return strings.Compare(a.Name, b.Name) })

	var claimed []claim
	for _, n := range sorted {
		if n.Name != self {
			continue
		}
		for _, c := range PodCIDRs(n) {
			if p, err := netip.ParsePrefix(c); err == nil {
				claimed = append(claimed, claim{p.Masked(), n.Name})
			}
		}
	}

	var routes []NodeRoute
	var problems []Problem
	report := func(n *corev1.Node, reason, format string, a ...any) {
		problems = append(problems, Problem{Node: n.Name, Reason: reason, Message: fmt.Sprintf(format, a...)})
	}
	for _, n := range sorted {
		if n.Name == self {
			continue
		}
		v4, v6 := InternalIPs(n)
		for _, c := range PodCIDRs(n) {
			p, err := netip.ParsePrefix(c)
			if err != nil {
				report(n, ReasonBadPodCIDR, "pod CIDR %q of node %s is not a prefix; no route to it from %s", c, n.Name, self)
				continue
			}
			p = p.Masked()
			if other, ok := overlapping(claimed, p); ok {
				report(n, ReasonOverlap, "pod CIDR %s of node %s overlaps %s of node %s; no route to it from %s", p, n.Name, other.prefix, other.node, self)
				continue
			}
			gw, fam := v4, "IPv4"
			if p.Addr().Is6() {
				gw, fam = v6, "IPv6"
			}
			if !gw.IsValid() {
				report(n, ReasonNoInternalIP, "node %s has no %s InternalIP to route its pod CIDR %s through; no route to it from %s", n.Name, fam, p, self)
				continue
			}
			if !containedIn(connected, gw) {
				report(n, ReasonUnreachable, "InternalIP %s of node %s is not on a subnet directly connected to node %s; no route to pod CIDR %s from %s", gw, n.Name, self, p, self)
				continue
			}
			claimed = append(claimed, claim{p, n.Name})
			routes = append(routes, NodeRoute{Node: n.Name, Route: noderoutes.Route{Dst: p, Gw: gw}})
		}
	}
	return routes, problems
}

// NodeRoute is a desired route and the node whose pod CIDR it reaches.
type NodeRoute struct {
	Node string
	noderoutes.Route
}

type claim struct {
	prefix netip.Prefix
	node   string
}

func overlapping(claims []claim, p netip.Prefix) (claim, bool) {
	for _, c := range claims {
		if c.prefix.Overlaps(p) {
			return c, true
		}
	}
	return claim{}, false
}

func containedIn(prefixes []netip.Prefix, a netip.Addr) bool {
	for _, p := range prefixes {
		if p.Contains(a) {
			return true
		}
	}
	return false
}
