package nodesync

import (
	"math/rand/v2"
	"net/netip"
	"reflect"
	"slices"
	"testing"

	corev1 "k8s.io/api/core/v1"
)

// randomNode is a Node of a small random cluster whose pod CIDRs and
// addresses often overlap, contain each other or are malformed.
func randomNode(rng *rand.Rand, name string) *corev1.Node {
	var cidrs []string
	for range rng.IntN(3) {
		switch rng.IntN(8) {
		case 0:
			cidrs = append(cidrs, "10.0.0.0/33")
		case 1, 2:
			b := [16]byte{0xfd, 0, 0, byte(rng.IntN(3)), 0, byte(rng.IntN(3))}
			cidrs = append(cidrs, netip.PrefixFrom(netip.AddrFrom16(b), 24+rng.IntN(30)).Masked().String())
		default:
			cidrs = append(cidrs, netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(rng.IntN(4)), byte(rng.IntN(4)), 0}), 12+rng.IntN(14)).Masked().String())
		}
	}
	var ips []string
	for range rng.IntN(3) {
		switch rng.IntN(3) {
		case 0:
			ips = append(ips, netip.AddrFrom4([4]byte{172, 16, 0, byte(1 + rng.IntN(8))}).String())
		case 1:
			ips = append(ips, netip.AddrFrom4([4]byte{10, byte(rng.IntN(4)), byte(rng.IntN(4)), 7}).String())
		default:
			ips = append(ips, netip.AddrFrom16([16]byte{0xfd, 0, 0, byte(rng.IntN(3)), 0, byte(rng.IntN(3)), 15: 9}).String())
		}
	}
	return node(name, cidrs, ips...)
}

var randomScope = podCIDRScope{
	ClusterCIDRs: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/14"), netip.MustParsePrefix("fd00::/16")},
	Connected:    []netip.Prefix{netip.MustParsePrefix("172.16.0.0/24"), netip.MustParsePrefix("10.3.3.0/24")},
}

// TestContesterMatchesPairwise checks the index's overlap lookup against
// its definition: every claim of another node overlapping the prefix that
// is itself acceptable, compared pair by pair.
func TestContesterMatchesPairwise(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	names := []string{"self", "a", "b", "c", "d", "e"}
	for round := range 500 {
		var nodes []*corev1.Node
		for _, name := range names {
			nodes = append(nodes, randomNode(rng, name))
		}
		x := newRouteIndex("self", randomScope, nodes)
		for _, n := range nodes {
			for _, c := range x.claimsOf(n) {
				var want []claimRef
				for _, o := range x.claims {
					if _, covers := containsAny(o.prefix, x.addrs); o.node != n.Name && !o.own && !covers && o.prefix.Overlaps(c.prefix) {
						want = append(want, o)
					}
				}
				got, ok := x.contester(c.prefix, n.Name)
				if ok != (len(want) > 0) || ok && got != want[0] {
					t.Fatalf("round %d: contester(%s, %s) = %v, %v; want the first of %v (claims %v)", round, c.prefix, n.Name, got, ok, want, x.claims)
				}
			}
		}
	}
}

// TestRouteIndexUpdate checks the incremental path against a fresh index:
// after every change, each node's decision equals the one an index built
// from scratch makes, and every node whose decision changed was reported
// affected.
func TestRouteIndexUpdate(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	names := []string{"self", "a", "b", "c", "d", "e", "f", "g"}
	type decision struct {
		routes   []nodeRoute
		problems []problem
	}
	decideAll := func(x *routeIndex) map[string]decision {
		out := map[string]decision{}
		for _, name := range names {
			r, p := x.decide(name)
			out[name] = decision{r, p}
		}
		return out
	}
	for round := range 200 {
		current := map[string]*corev1.Node{}
		x := newRouteIndex("self", randomScope, nil)
		before := decideAll(x)
		for step := range 40 {
			name := names[rng.IntN(len(names))]
			var n *corev1.Node
			if rng.IntN(4) != 0 {
				n = randomNode(rng, name)
				current[name] = n
			} else {
				delete(current, name)
			}
			affected := map[string]struct{}{}
			x.update(name, n, affected)

			var all []*corev1.Node
			for _, n := range current {
				all = append(all, n)
			}
			fresh := decideAll(newRouteIndex("self", randomScope, all))
			after := decideAll(x)
			for _, nm := range names {
				if !reflect.DeepEqual(after[nm], fresh[nm]) {
					t.Fatalf("round %d step %d (%s changed): %s decided %+v incrementally, %+v from scratch", round, step, name, nm, after[nm], fresh[nm])
				}
				if _, ok := affected[nm]; !ok && !reflect.DeepEqual(after[nm], before[nm]) {
					t.Fatalf("round %d step %d (%s changed): %s's decision changed from %+v to %+v but it was not reported affected", round, step, name, nm, before[nm], after[nm])
				}
			}
			before = after
		}
	}
}

func TestContainsAny(t *testing.T) {
	addrs := []netip.Addr{netip.MustParseAddr("10.0.0.5"), netip.MustParseAddr("10.0.2.1"), netip.MustParseAddr("172.16.0.1"), netip.MustParseAddr("fd00::1")}
	slices.SortFunc(addrs, func(a, b netip.Addr) int { return a.Compare(b) })
	tests := []struct {
		prefix string
		want   string
	}{
		{"10.0.0.0/24", "10.0.0.5"},
		{"10.0.1.0/24", ""},
		{"10.0.0.0/16", "10.0.0.5"},
		{"10.0.2.0/30", "10.0.2.1"},
		{"0.0.0.0/0", "10.0.0.5"},
		{"172.16.0.1/32", "172.16.0.1"},
		{"fd00::/64", "fd00::1"},
		{"fd01::/64", ""},
		{"::/0", "fd00::1"},
		{"192.168.0.0/16", ""},
	}
	for _, tc := range tests {
		a, ok := containsAny(netip.MustParsePrefix(tc.prefix), addrs)
		if tc.want == "" && ok || tc.want != "" && (!ok || a.String() != tc.want) {
			t.Errorf("containsAny(%s) = %v, %v; want %q", tc.prefix, a, ok, tc.want)
		}
	}
}
