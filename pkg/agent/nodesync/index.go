package nodesync

import (
	"cmp"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"

	"github.com/vethroute/vethroute/pkg/agent/cniconf"
	"github.com/vethroute/vethroute/pkg/noderoutes"
)

// routeIndex decides the routes toward other nodes one node at a time. The
// routes of one node depend on every other node (whose pod CIDRs overlap
// its own, whose addresses its pod CIDRs contain), so the index keeps the
// cluster-wide lookups those checks need: every pod CIDR that passes the
// checks of its own, in (address, length, node) order, and every node
// address in order. A Node's change then re-decides that node and the few
// whose decision can depend on it (see update), whatever the cluster's
// size; only a change of this node's own pod CIDRs re-decides them all.
type routeIndex struct {
	self  string
	scope podCIDRScope
	// own are this node's pod CIDRs: no other node's claim may overlap
	// them.
	own   []netip.Prefix
	nodes map[string]*corev1.Node
	// claims are the other nodes' pod CIDRs inside the cluster's CIDRs and
	// clear of the node network, sorted by claimCompare; lengths counts
	// the prefix lengths in use per family, so that the claims containing
	// a prefix are a binary search for each length in use (a cluster uses
	// one or two).
	claims  []claimRef
	lengths [2][129]int
	// addrs are all nodes' addresses, sorted, repeated when two nodes
	// report the same one.
	addrs []netip.Addr
}

// claimRef is one pod CIDR a node claims.
type claimRef struct {
	prefix netip.Prefix
	node   string
	// own marks a claim overlapping this node's own pod CIDRs: refused,
	// so it contests nothing.
	own bool
}

func claimCompare(a, b claimRef) int {
	if c := a.prefix.Addr().Compare(b.prefix.Addr()); c != 0 {
		return c
	}
	if c := cmp.Compare(a.prefix.Bits(), b.prefix.Bits()); c != 0 {
		return c
	}
	return strings.Compare(a.node, b.node)
}

func family(p netip.Prefix) int {
	if p.Addr().Is4() {
		return 0
	}
	return 1
}

// newRouteIndex indexes nodes for self within scope.
func newRouteIndex(self string, scope podCIDRScope, nodes []*corev1.Node) *routeIndex {
	x := &routeIndex{self: self, scope: scope, nodes: make(map[string]*corev1.Node, len(nodes))}
	for _, n := range nodes {
		x.nodes[n.Name] = n
	}
	x.reindex()
	return x
}

// reindex rebuilds every lookup from x.nodes.
func (x *routeIndex) reindex() {
	x.own = ownPrefixes(x.nodes[x.self])
	x.claims, x.addrs = x.claims[:0], x.addrs[:0]
	x.lengths = [2][129]int{}
	for _, n := range x.nodes {
		x.addrs = append(x.addrs, nodeAddrs(n)...)
		for _, c := range x.claimsOf(n) {
			x.claims = append(x.claims, c)
			x.lengths[family(c.prefix)][c.prefix.Bits()]++
		}
	}
	// Sorted, so that the addresses inside a prefix are one run found by
	// binary search, as are the claims inside a prefix.
	slices.SortFunc(x.addrs, netip.Addr.Compare)
	slices.SortFunc(x.claims, claimCompare)
	x.addrs = slices.Clip(x.addrs)
	x.claims = slices.Clip(x.claims)
}

func ownPrefixes(self *corev1.Node) []netip.Prefix {
	if self == nil {
		return nil
	}
	var own []netip.Prefix
	for _, c := range cniconf.PodCIDRs(self) {
		if p, err := netip.ParsePrefix(c); err == nil {
			own = append(own, p.Masked())
		}
	}
	return own
}

// claimsOf returns the pod CIDRs of n that pass the checks involving no
// other node: well-formed, not IPv4-mapped, inside the cluster's CIDRs and
// clear of this node's connected subnets. Self claims nothing.
func (x *routeIndex) claimsOf(n *corev1.Node) []claimRef {
	if n.Name == x.self {
		return nil
	}
	var out []claimRef
	for _, c := range cniconf.PodCIDRs(n) {
		p, err := netip.ParsePrefix(c)
		if err != nil {
			continue
		}
		p = p.Masked()
		if p.Addr().Is4In6() || !insideAny(x.scope.ClusterCIDRs, p) {
			continue
		}
		if _, ok := overlapsAny(x.scope.Connected, p); ok {
			continue
		}
		_, own := overlapsAny(x.own, p)
		out = append(out, claimRef{prefix: p, node: n.Name, own: own})
	}
	return out
}

// update records n as the Node called name (nil: deleted) and adds to
// affected every node whose routes or problems may have changed: the node
// itself; the nodes whose claims overlap its old or new claims (whether
// they are contested); the nodes whose claims contain its old or new
// addresses (whether they cover a node's address), with the nodes whose
// claims overlap those (whether they are contested by them). A change of
// this node itself changes what every claim is checked against: all
// nodes are affected.
func (x *routeIndex) update(name string, n *corev1.Node, affected map[string]struct{}) {
	old := x.nodes[name]
	if old == n {
		return
	}
	if n == nil {
		delete(x.nodes, name)
	} else {
		x.nodes[name] = n
	}
	if name == x.self {
		x.reindex()
		for nm := range x.nodes {
			affected[nm] = struct{}{}
		}
		affected[name] = struct{}{}
		return
	}
	affected[name] = struct{}{}
	if old != nil {
		x.collect(old, affected)
		x.remove(old)
	}
	if n != nil {
		x.insert(n)
		x.collect(n, affected)
	}
}

// collect adds to affected the nodes whose decision depends on n's claims
// and addresses as the index holds them now.
func (x *routeIndex) collect(n *corev1.Node, affected map[string]struct{}) {
	add := func(c claimRef) bool {
		affected[c.node] = struct{}{}
		return true
	}
	for _, c := range x.claimsOf(n) {
		x.overlapping(c.prefix, add)
	}
	for _, a := range nodeAddrs(n) {
		host := netip.PrefixFrom(a, a.BitLen())
		x.overlapping(host, func(c claimRef) bool {
			affected[c.node] = struct{}{}
			x.overlapping(c.prefix, add)
			return true
		})
	}
}

func (x *routeIndex) insert(n *corev1.Node) {
	for _, a := range nodeAddrs(n) {
		i, _ := slices.BinarySearchFunc(x.addrs, a, netip.Addr.Compare)
		x.addrs = slices.Insert(x.addrs, i, a)
	}
	for _, c := range x.claimsOf(n) {
		i, _ := slices.BinarySearchFunc(x.claims, c, claimCompare)
		x.claims = slices.Insert(x.claims, i, c)
		x.lengths[family(c.prefix)][c.prefix.Bits()]++
	}
}

// remove takes out what insert(n) put in, one entry for each.
func (x *routeIndex) remove(n *corev1.Node) {
	for _, a := range nodeAddrs(n) {
		if i, ok := slices.BinarySearchFunc(x.addrs, a, netip.Addr.Compare); ok {
			x.addrs = slices.Delete(x.addrs, i, i+1)
		}
	}
	for _, c := range x.claimsOf(n) {
		if i, ok := slices.BinarySearchFunc(x.claims, c, claimCompare); ok {
			x.claims = slices.Delete(x.claims, i, i+1)
		}
		x.lengths[family(c.prefix)][c.prefix.Bits()]--
	}
}

// overlapping calls fn with every claim overlapping p, in claimCompare
// order, until fn returns false. Two prefixes overlap only when one
// contains the other: the claims containing p are found by length among
// the lengths in use, the ones p contains (and those of p's address) are
// one run of the sorted claims.
func (x *routeIndex) overlapping(p netip.Prefix, fn func(claimRef) bool) {
	for l := 0; l < p.Bits(); l++ {
		if x.lengths[family(p)][l] == 0 {
			continue
		}
		q, _ := p.Addr().Prefix(l)
		if q.Addr() == p.Addr() {
			continue // in the run below
		}
		i, _ := slices.BinarySearchFunc(x.claims, claimRef{prefix: q}, claimCompare)
		for ; i < len(x.claims) && x.claims[i].prefix == q; i++ {
			if !fn(x.claims[i]) {
				return
			}
		}
	}
	i, _ := slices.BinarySearchFunc(x.claims, p.Addr(), func(c claimRef, a netip.Addr) int { return c.prefix.Addr().Compare(a) })
	for ; i < len(x.claims) && p.Contains(x.claims[i].prefix.Addr()); i++ {
		if !fn(x.claims[i]) {
			return
		}
	}
}

// contester returns the first claim (claimCompare order) of a node other
// than name that overlaps p and is not refused itself.
func (x *routeIndex) contester(p netip.Prefix, name string) (claimRef, bool) {
	var found claimRef
	var ok bool
	x.overlapping(p, func(c claimRef) bool {
		if c.node == name || c.own {
			return true
		}
		if _, covers := containsAny(c.prefix, x.addrs); covers {
			return true
		}
		found, ok = c, true
		return false
	})
	return found, ok
}

// decide returns the routes toward the Node called name and the problems
// that keep its pod CIDRs from being routed (none for self or an unknown
// name). A pod CIDR is refused, with a problem, when it is malformed or an
// IPv4-mapped IPv6 prefix, when it lies outside scope's cluster CIDRs,
// when it overlaps a connected subnet of this node or contains any Node's
// address, when it overlaps this node's own pod CIDRs, and when it overlaps
// another node's: then neither node gets a route, since nothing in the
// Node objects tells which claim is true. It is skipped, also with a
// problem, when the node has no InternalIP of its family or that
// InternalIP is outside every connected subnet (the kernel would refuse it
// as a next hop).
func (x *routeIndex) decide(name string) ([]nodeRoute, []problem) {
	n := x.nodes[name]
	if n == nil || name == x.self {
		return nil, nil
	}
	self := x.self
	var routes []nodeRoute
	var problems []problem
	report := func(reason, format string, a ...any) {
		problems = append(problems, problem{Node: n.Name, Reason: reason, Message: fmt.Sprintf(format, a...)})
	}
	for _, c := range cniconf.PodCIDRs(n) {
		p, err := netip.ParsePrefix(c)
		if err != nil {
			report(reasonBadPodCIDR, "pod CIDR %q of node %s is not a prefix; no route to it from %s", c, n.Name, self)
			continue
		}
		p = p.Masked()
		if p.Addr().Is4In6() {
			report(reasonBadPodCIDR, "pod CIDR %s of node %s is an IPv4-mapped IPv6 prefix, which no pod can use; no route to it from %s", p, n.Name, self)
			continue
		}
		if !insideAny(x.scope.ClusterCIDRs, p) {
			report(reasonOutsideCluster, "pod CIDR %s of node %s is outside the cluster's pod CIDRs %v (vethroute-agent --cluster-cidrs); no route to it from %s", p, n.Name, x.scope.ClusterCIDRs, self)
			continue
		}
		if c, ok := overlapsAny(x.scope.Connected, p); ok {
			report(reasonCoversNodeNetwork, "pod CIDR %s of node %s overlaps %s, a subnet directly connected to node %s; no route to it from %s", p, n.Name, c, self, self)
			continue
		}
		if a, ok := containsAny(p, x.addrs); ok {
			report(reasonCoversNodeNetwork, "pod CIDR %s of node %s contains %s, a node's address; no route to it from %s", p, n.Name, a, self)
			continue
		}
		if o, ok := overlapsAny(x.own, p); ok {
			report(reasonOverlap, "pod CIDR %s of node %s overlaps %s of node %s itself; no route to it from %s", p, n.Name, o, self, self)
			continue
		}
		if other, ok := x.contester(p, n.Name); ok {
			report(reasonOverlap, "pod CIDR %s of node %s overlaps %s of node %s; neither gets a route from %s until one of them is corrected", p, n.Name, other.prefix, other.node, self)
			continue
		}
		v4, v6 := internalIPs(n)
		gw, fam := v4, "IPv4"
		if p.Addr().Is6() {
			gw, fam = v6, "IPv6"
		}
		if !gw.IsValid() {
			report(reasonNoInternalIP, "node %s has no %s InternalIP to route its pod CIDR %s through; no route to it from %s", n.Name, fam, p, self)
			continue
		}
		if !containedIn(x.scope.Connected, gw) {
			report(reasonUnreachable, "InternalIP %s of node %s is not on a subnet directly connected to node %s; no route to pod CIDR %s from %s", gw, n.Name, self, p, self)
			continue
		}
		routes = append(routes, nodeRoute{Node: n.Name, Route: noderoutes.Route{Dst: p, Gw: gw}})
	}
	return routes, problems
}

// names returns the names of the indexed Nodes in order.
func (x *routeIndex) names() []string {
	out := make([]string, 0, len(x.nodes))
	for name := range x.nodes {
		out = append(out, name)
	}
	slices.Sort(out)
	return out
}
