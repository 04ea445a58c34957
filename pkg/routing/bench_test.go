package routing_test

import (
	"fmt"
	"net"
	"testing"

	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vethroute/vethroute/internal/testutil"
	"github.com/vethroute/vethroute/pkg/routing"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
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

// BenchmarkEnsureHostRoutes is the router-route check every ADD makes, on a
// node already holding N container host routes: its cost must not follow N.
func BenchmarkEnsureHostRoutes(b *testing.B) {
	for _, n := range []int{10, 1000} {
		b.Run(fmt.Sprintf("routes=%d", n), func(b *testing.B) {
			node := testutil.NewNS(b)
			h, err := netlink.NewHandleAt(netns.NsHandle(node.Fd()))
			if err != nil {
				b.Fatal(err)
			}
			defer h.Close()
			attrs := netlink.NewLinkAttrs()
			attrs.Name = "up0"
			up := &netlink.Veth{LinkAttrs: attrs, PeerName: "up1"}
			if err := h.LinkAdd(up); err != nil {
				b.Fatal(err)
			}
			uplink := mustCIDR(b, "172.16.0.1/24")
			if err := h.AddrAdd(up, &netlink.Addr{IPNet: &uplink}); err != nil {
				b.Fatal(err)
			}
			for _, name := range []string{"up0", "up1"} {
				if err := h.LinkSetUp(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: name}}); err != nil {
					b.Fatal(err)
				}
			}
			// Host routes like the ones vethroute installs per container.
			for i := range n {
				dst := &net.IPNet{IP: net.IPv4(10, 61, byte(i>>8), byte(i)).To4(), Mask: net.CIDRMask(32, 32)}
				r := &netlink.Route{LinkIndex: up.Attrs().Index, Dst: dst, Scope: netlink.SCOPE_LINK, Protocol: routing.RouteProtocol}
				if err := h.RouteAdd(r); err != nil {
					b.Fatal(err)
				}
			}
			_, peer, _ := net.ParseCIDR("10.200.0.0/20")
			routes := []*types.Route{{Dst: *peer, GW: net.ParseIP("172.16.0.2")}}
			b.ResetTimer()
			err = node.Do(func(ns.NetNS) error {
				for range b.N {
					if _, err := routing.EnsureHostRoutes(routes); err != nil {
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
