package uplink

import (
	"net/netip"
	"slices"
	"testing"

	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/vishvananda/netns"

	"github.com/vethroute/vethroute/internal/testutil"
)

// TestFind builds a node namespace with an IPv4 uplink on a veth (MTU 1400)
// and an IPv6 one on a bridge (MTU 9000), and checks that each address
// leads to its own interface and that an MTU change shows on the next call.
func TestFind(t *testing.T) {
	node := testutil.NewNS(t)
	ip := func(args ...string) string { return testutil.MustRunIn(t, node, "ip", args...) }
	ip("link", "add", "up4", "mtu", "1400", "type", "veth", "peer", "name", "up4-peer")
	ip("addr", "add", "172.16.0.1/24", "dev", "up4")
	ip("link", "add", "br6", "type", "bridge")
	ip("link", "set", "br6", "mtu", "9000")
	ip("addr", "add", "fd00:172:16::1/64", "dev", "br6", "nodad")
	// A second address on the IPv4 uplink, and an interface with neither
	// address, which must not be taken for either.
	ip("addr", "add", "172.16.1.1/24", "dev", "up4")
	ip("link", "add", "other", "mtu", "1300", "type", "veth", "peer", "name", "other-peer")
	ip("addr", "add", "192.0.2.1/24", "dev", "other")

	h, err := netlinksafe.NewHandleAt(netns.NsHandle(node.Fd()))
	if err != nil {
		t.Fatal(err)
	}
	f := New(h)
	t.Cleanup(f.Close)

	v4 := netip.MustParseAddr("172.16.0.1")
	v6 := netip.MustParseAddr("fd00:172:16::1")
	missing := netip.MustParseAddr("172.16.0.9")
	index := func(name string) int {
		t.Helper()
		l, err := h.LinkByName(name)
		if err != nil {
			t.Fatal(err)
		}
		return l.Attrs().Index
	}
	up4 := Uplink{Addr: v4, Name: "up4", Index: index("up4"), MTU: 1400}
	br6 := Uplink{Addr: v6, Name: "br6", Index: index("br6"), MTU: 9000}

	tests := []struct {
		name  string
		addrs []netip.Addr
		want  []Uplink
	}{
		{name: "IPv4", addrs: []netip.Addr{v4}, want: []Uplink{up4}},
		{name: "IPv6", addrs: []netip.Addr{v6}, want: []Uplink{br6}},
		{name: "dual stack, in the order asked", addrs: []netip.Addr{v6, v4}, want: []Uplink{br6, up4}},
		{name: "IPv4-mapped IPv6 is the IPv4 address", addrs: []netip.Addr{netip.MustParseAddr("::ffff:172.16.0.1")}, want: []Uplink{up4}},
		{name: "an address no interface carries is left out", addrs: []netip.Addr{missing, v4}, want: []Uplink{up4}},
		{name: "nothing found", addrs: []netip.Addr{missing}},
		{name: "the same address twice", addrs: []netip.Addr{v4, v4}, want: []Uplink{up4}},
		{name: "no address", addrs: []netip.Addr{{}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := f.Find(tc.addrs...)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(got, tc.want) {
				t.Errorf("Find(%v) = %+v, want %+v", tc.addrs, got, tc.want)
			}
		})
	}

	// The MTU is read on every call, not remembered.
	ip("link", "set", "up4", "mtu", "1500")
	got, err := f.Find(v4)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got[0].MTU != 1500 {
		t.Errorf("after ip link set up4 mtu 1500: Find = %+v, want MTU 1500", got)
	}

	// An address that moves to another interface is found there.
	ip("addr", "del", "172.16.0.1/24", "dev", "up4")
	ip("addr", "add", "172.16.0.1/24", "dev", "other")
	got, err = f.Find(v4)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got[0].Name != "other" || got[0].MTU != 1300 {
		t.Errorf("after moving 172.16.0.1 to other: Find = %+v, want other with MTU 1300", got)
	}
}
