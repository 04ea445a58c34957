package nodesync

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"path/filepath"
	"testing"

	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/vethroute/vethroute/pkg/agent/cniconf"
	"github.com/vethroute/vethroute/pkg/agent/monitor"
)

// BenchmarkReconcileChange is one Node event's reconcile in a dual-stack
// cluster of n nodes, the routing table faked: what the agent's worker
// spends per change before the kernel's few netlink writes.
//
//	go test -run '^$' -bench ReconcileChange ./pkg/agent/nodesync/
func BenchmarkReconcileChange(b *testing.B) {
	for _, n := range []int{100, 1000, 5000} {
		b.Run(fmt.Sprintf("nodes=%d", n), func(b *testing.B) {
			factory := informers.NewSharedInformerFactory(fake.NewClientset(), 0)
			inf := factory.Core().V1().Nodes()
			cfg := Config{
				NodeName:     "node-00000",
				ConfPath:     filepath.Join(b.TempDir(), "10-vethroute.conflist"),
				ConfBase:     cniconf.ConfData{CNIVersion: "1.1.0", Network: "vethroute", DataDir: "/var/lib/cni/vethroute", MTU: 1500},
				ClusterCIDRs: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("fd00:10::/48")},
			}
			table := &fakeTable{connected: []netip.Prefix{netip.MustParsePrefix("172.20.0.0/16"), netip.MustParsePrefix("fd00:172:20::/64")}}
			c, err := NewController(cfg, inf, table, nil, nil, monitor.NewMetrics(), slog.New(slog.NewTextHandler(io.Discard, nil)))
			if err != nil {
				b.Fatal(err)
			}
			store := inf.Informer().GetIndexer()
			mk := func(i int, v4 string) {
				nd := node(fmt.Sprintf("node-%05d", i),
					[]string{v4, fmt.Sprintf("fd00:10:0:%x::/64", i)},
					fmt.Sprintf("172.20.%d.%d", (i+1)>>8, (i+1)&255), fmt.Sprintf("fd00:172:20::%x", i+1))
				if err := store.Update(nd); err != nil {
					b.Fatal(err)
				}
				c.nodeChanged(nd)
			}
			for i := range n {
				mk(i, fmt.Sprintf("10.%d.%d.0/24", i>>8, i&255))
			}
			ctx := context.Background()
			if err := c.reconcile(ctx, true); err != nil {
				b.Fatal(err)
			}
			b.ResetTimer()
			for k := range b.N {
				i := 1 + k%(n-1)
				mk(i, fmt.Sprintf("10.%d.%d.0/24", 128+i>>8, i&255))
				if err := c.reconcile(ctx, false); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
