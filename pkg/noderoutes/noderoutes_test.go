package noderoutes

import (
	"errors"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/vethroute/vethroute/internal/testutil"
	"github.com/vethroute/vethroute/pkg/netconf"
	"github.com/vethroute/vethroute/pkg/routing"
)

// nodeNS makes a namespace with an "uplink" on 172.16.0.1/24 and
// fd00:172:16::1/64, where 172.16.0.2 and 172.16.0.3 are valid gateways, and
// returns it with a runner of `ip` inside it.
func nodeNS(t testing.TB) (ns.NetNS, func(args ...string) string) {
	t.Helper()
	nodeNS := testutil.NewNS(t)
	ip := func(args ...string) string { return testutil.MustRunIn(t, nodeNS, "ip", args...) }
	// A veth pair inside the namespace: this kernel may lack the dummy
	// driver, and both ends up give the uplink a carrier.
	ip("link", "add", "uplink", "type", "veth", "peer", "name", "uplink-peer")
	ip("link", "set", "uplink-peer", "up")
	ip("addr", "add", "172.16.0.1/24", "dev", "uplink")
	ip("addr", "add", "fd00:172:16::1/64", "dev", "uplink", "nodad")
	ip("link", "set", "uplink", "up")
	return nodeNS, ip
}

// tableIn returns a Table with proto working on node through a handle,
// never from inside it.
func tableIn(t testing.TB, node ns.NetNS, proto netlink.RouteProtocol) *Table {
	t.Helper()
	h, err := netlinksafe.NewHandleAt(netns.NsHandle(node.Fd()))
	if err != nil {
		t.Fatal(err)
	}
	tab := New(h, proto)
	t.Cleanup(tab.Close)
	return tab
}

// openTable returns the agent's Table on a new nodeNS.
func openTable(t *testing.T) (*Table, func(args ...string) string) {
	t.Helper()
	node, ip := nodeNS(t)
	return tableIn(t, node, netconf.AgentRouteProtocol), ip
}

func route(dst, gw string) Route {
	return Route{Dst: netip.MustParsePrefix(dst), Gw: netip.MustParseAddr(gw)}
}

func TestConnected(t *testing.T) {
	tab, _ := openTable(t)
	got, err := tab.Connected()
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"172.16.0.0/24", "fd00:172:16::/64"} {
		if !slices.Contains(got, netip.MustParsePrefix(want)) {
			t.Errorf("Connected() = %v, lacks %s", got, want)
		}
	}
}

func TestSync(t *testing.T) {
	tab, ip := openTable(t)
	// Routes of others: a static route, one of the plugin (proto 86), and
	// a foreign route where the agent will want one of its own.
	ip("route", "add", "10.9.0.0/24", "via", "172.16.0.9", "proto", "static")
	ip("route", "add", "10.8.0.0/24", "via", "172.16.0.8", "proto", "86")
	ip("route", "add", "10.7.0.0/24", "via", "172.16.0.7", "proto", "dhcp")

	steps := []struct {
		name    string
		desired []Route
		// want is `ip route show proto 87` for both families, sorted.
		want                    []string
		added, replaced, removd int
		conflicts               []string
		wantErr                 error
	}{
		{
			name:    "add",
			desired: []Route{route("10.0.0.0/24", "172.16.0.2"), route("fd00:2::/64", "fd00:172:16::2")},
			want:    []string{"10.0.0.0/24 via 172.16.0.2 dev uplink", "fd00:2::/64 via fd00:172:16::2 dev uplink metric 1024 pref medium"},
			added:   2,
		},
		{
			name:    "unchanged",
			desired: []Route{route("fd00:2::/64", "fd00:172:16::2"), route("10.0.0.0/24", "172.16.0.2")},
			want:    []string{"10.0.0.0/24 via 172.16.0.2 dev uplink", "fd00:2::/64 via fd00:172:16::2 dev uplink metric 1024 pref medium"},
		},
		{
			name:     "gateway moves, v6 removed",
			desired:  []Route{route("10.0.0.0/24", "172.16.0.3")},
			want:     []string{"10.0.0.0/24 via 172.16.0.3 dev uplink"},
			replaced: 1, removd: 1,
		},
		{
			name:      "foreign route holds the destination",
			desired:   []Route{route("10.0.0.0/24", "172.16.0.3"), route("10.7.0.0/24", "172.16.0.2")},
			want:      []string{"10.0.0.0/24 via 172.16.0.3 dev uplink"},
			conflicts: []string{"10.7.0.0/24 via 172.16.0.2"},
		},
		{
			name:    "unreachable gateway fails alone",
			desired: []Route{route("10.1.0.0/24", "198.51.100.1"), route("10.2.0.0/24", "172.16.0.4")},
			want:    []string{"10.2.0.0/24 via 172.16.0.4 dev uplink"},
			added:   1, removd: 1,
			wantErr: ErrUnreachableGateway,
		},
		{
			name:   "nothing desired",
			removd: 1,
		},
	}
	for _, s := range steps {
		res, err := tab.Sync(s.desired)
		if s.wantErr == nil && err != nil {
			t.Fatalf("%s: %v", s.name, err)
		}
		if s.wantErr != nil && !errors.Is(err, s.wantErr) {
			t.Fatalf("%s: err = %v, want %v", s.name, err, s.wantErr)
		}
		var got []string
		for _, fam := range []string{"-4", "-6"} {
			for _, l := range strings.Split(strings.TrimSpace(ip(fam, "route", "show", "proto", "87")), "\n") {
				if l = strings.TrimSpace(l); l != "" {
					got = append(got, l)
				}
			}
		}
		if !slices.Equal(got, s.want) {
			t.Errorf("%s: proto 87 routes = %q, want %q", s.name, got, s.want)
		}
		if res.Added != s.added || res.Replaced != s.replaced || res.Removed != s.removd || res.Programmed != len(s.want) {
			t.Errorf("%s: result %+v, want added %d replaced %d removed %d programmed %d", s.name, res, s.added, s.replaced, s.removd, len(s.want))
		}
		var conflicts []string
		for _, c := range res.Conflicts {
			conflicts = append(conflicts, c.Want.String())
			if !strings.Contains(c.Existing, "proto dhcp") || !errors.Is(c, routing.ErrForeign) {
				t.Errorf("%s: conflict %v does not describe the foreign route", s.name, c)
			}
		}
		if !slices.Equal(conflicts, s.conflicts) {
			t.Errorf("%s: conflicts = %v, want %v", s.name, conflicts, s.conflicts)
		}
	}
	// Never touched: every route the agent did not create.
	all := ip("-4", "route", "show")
	for _, want := range []string{"10.9.0.0/24 via 172.16.0.9 dev uplink proto static", "10.8.0.0/24 via 172.16.0.8 dev uplink proto 86", "10.7.0.0/24 via 172.16.0.7 dev uplink proto dhcp"} {
		if !strings.Contains(all, want) {
			t.Errorf("foreign route %q disappeared:\n%s", want, all)
		}
	}
}

func TestSyncRejectsDuplicateDestination(t *testing.T) {
	tab, _ := openTable(t)
	_, err := tab.Sync([]Route{route("10.0.0.0/24", "172.16.0.2"), route("10.0.0.0/24", "172.16.0.3")})
	if err == nil || !strings.Contains(err.Error(), "twice") {
		t.Fatalf("err = %v, want a duplicate-destination error", err)
	}
}
