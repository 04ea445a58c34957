package noderoutes_test

import (
	"fmt"
	"net"
	"net/netip"
	"testing"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/vethroute/vethroute/internal/testutil"
	"github.com/vethroute/vethroute/pkg/noderoutes"
	"github.com/vethroute/vethroute/pkg/routing"
)

// BenchmarkEnsure is the plugin's hostRoutes check, the one every ADD makes,
// in-process on a node already holding N container host routes: its cost
// must not follow N. It needs root, as everything that creates namespaces:
//
//	go test -run '^$' -bench . ./pkg/noderoutes/
func BenchmarkEnsure(b *testing.B) {
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
			uplink, err := netlink.ParseIPNet("172.16.0.1/24")
			if err != nil {
				b.Fatal(err)
			}
			if err := h.AddrAdd(up, &netlink.Addr{IPNet: uplink}); err != nil {
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
			routes := []noderoutes.Route{{Dst: netip.MustParsePrefix("10.200.0.0/20"), Gw: netip.MustParseAddr("172.16.0.2")}}
			b.ResetTimer()
			err = node.Do(func(ns.NetNS) error {
				for range b.N {
					if _, err := noderoutes.Ensure(routing.RouteProtocol, routes); err != nil {
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
