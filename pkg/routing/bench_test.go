package routing_test

import (
	"net"
	"testing"

	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vethroute/vethroute/internal/testutil"
	"github.com/vethroute/vethroute/pkg/routing"
)

// These benchmarks time the netlink hot paths of ADD and DEL in-process,
// without exec and IPAM; `go run ./test/bench` compares whole plugins.
// They need root (they create namespaces) and skip without it:
//
//	go test -run '^$' -bench . ./pkg/routing/

func mustCIDR(b *testing.B, s string) net.IPNet {
	b.Helper()
	ip, n, err := net.ParseCIDR(s)
	if err != nil {
		b.Fatal(err)
	}
	if v4 := ip.To4(); v4 != nil {
		ip = v4
	}
	return net.IPNet{IP: ip, Mask: n.Mask}
}

// BenchmarkSetupTeardown is one attachment created and removed: the whole
// netlink work of an ADD and a DEL on an otherwise empty node.
func BenchmarkSetupTeardown(b *testing.B) {
	for _, tc := range []struct {
		name  string
		addrs []routing.Address
	}{
		{"v4", []routing.Address{{IPNet: mustCIDR(b, "10.60.0.2/24"), Gateway: net.ParseIP("10.60.0.254").To4()}}},
		{"dual", []routing.Address{
			{IPNet: mustCIDR(b, "10.60.0.2/24"), Gateway: net.ParseIP("10.60.0.254").To4()},
			{IPNet: mustCIDR(b, "fd60::2/64"), Gateway: net.ParseIP("fd60::fffe")},
		}},
	} {
		b.Run(tc.name, func(b *testing.B) {
			node, cont := testutil.NewNS(b), testutil.NewNS(b)
			_, def, _ := net.ParseCIDR("0.0.0.0/0")
			att := &routing.Attachment{Network: "bench", ContainerID: "bench", IfName: "eth0", NetNS: cont.Path(),
				MTU: 1500, Addresses: tc.addrs, Routes: []*types.Route{{Dst: *def}}}
			b.ResetTimer()
			err := node.Do(func(ns.NetNS) error {
				for range b.N {
					if _, err := routing.Setup(att); err != nil {
						return err
					}
					if err := routing.Teardown(att.Network, att.ContainerID, att.IfName); err != nil {
						return err
					}
				}
				return nil
			})
			if err != nil {
				b.Fatal(err)
			}
		})
	}
}
