package nodesync

import (
	"fmt"
	"net/netip"
	"testing"

	corev1 "k8s.io/api/core/v1"
)

// BenchmarkDesiredRoutes is the in-memory part of a full reconcile (start,
// periodic resync): the routes of one node toward every other in a
// dual-stack cluster of n nodes, decided from the whole cache (make
// bench-scale measures the rest):
//
//	go test -run '^$' -bench DesiredRoutes ./pkg/agent/nodesync/
func BenchmarkDesiredRoutes(b *testing.B) {
	for _, n := range []int{100, 1000, 5000} {
		b.Run(fmt.Sprintf("nodes=%d", n), func(b *testing.B) {
			nodes := make([]*corev1.Node, n)
			for i := range n {
				nodes[i] = node(fmt.Sprintf("node-%05d", i),
					[]string{fmt.Sprintf("10.%d.%d.0/24", i>>8, i&255), fmt.Sprintf("fd00:10:0:%x::/64", i)},
					fmt.Sprintf("172.20.%d.%d", (i+1)>>8, (i+1)&255), fmt.Sprintf("fd00:172:20::%x", i+1))
			}
			scope := podCIDRScope{
				ClusterCIDRs: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("fd00:10::/48")},
				Connected:    []netip.Prefix{netip.MustParsePrefix("172.20.0.0/16"), netip.MustParsePrefix("fd00:172:20::/64")},
			}
			b.ResetTimer()
			for range b.N {
				routes, problems := desiredRoutes("node-00000", nodes, scope)
				if len(routes) != 2*(n-1) || len(problems) != 0 {
					b.Fatalf("%d routes, %d problems", len(routes), len(problems))
				}
			}
		})
	}
}
