package nodesync

import (
	"math/rand/v2"
	"net/netip"
	"slices"
	"testing"
)

// bruteContested is the pairwise definition contestedClaims must agree with.
func bruteContested(claims []claim, i int) bool {
	for j, c := range claims {
		if j != i && c.node.Name != claims[i].node.Name && c.prefix.Overlaps(claims[i].prefix) {
			return true
		}
	}
	return false
}

func TestContestedClaimsMatchesPairwise(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	names := []string{"a", "b", "c", "d", "e", "f"}
	for round := range 300 {
		var claims []claim
		for range 1 + rng.IntN(12) {
			var p netip.Prefix
			if rng.IntN(4) == 0 {
				b := [16]byte{0xfd, 0, 0, byte(rng.IntN(4)), 0, byte(rng.IntN(4))}
				p = netip.PrefixFrom(netip.AddrFrom16(b), 24+rng.IntN(30)).Masked()
			} else {
				p = netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(rng.IntN(4)), byte(rng.IntN(8)), 0}), 14+rng.IntN(12)).Masked()
			}
			claims = append(claims, claim{prefix: p, node: node(names[rng.IntN(len(names))], nil)})
		}
		got := contestedClaims(claims)
		for i := range claims {
			want := bruteContested(claims, i)
			other, ok := got[i]
			if ok != want {
				t.Fatalf("round %d: claim %s of %s contested = %v, want %v (claims %v)", round, claims[i].prefix, claims[i].node.Name, ok, want, claims)
			}
			if ok && (other.node.Name == claims[i].node.Name || !other.prefix.Overlaps(claims[i].prefix)) {
				t.Fatalf("round %d: claim %s of %s names %s of %s, which does not contest it", round, claims[i].prefix, claims[i].node.Name, other.prefix, other.node.Name)
			}
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
