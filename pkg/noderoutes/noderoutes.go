// Package noderoutes owns the routes a node keeps toward other nodes' pod
// subnets (the article's router routes: "10.0.0.0/24 via 172.16.0.2") in the
// main routing table of one network namespace: the plugin's hostRoutes,
// which it ensures and never removes, and the agent's routes, which it syncs
// to the cluster's nodes.
//
// Each owner tags its routes with its own route protocol number (the plugin
// 86, the agent 87) and only ever replaces or deletes routes that carry it:
// routes of the kernel, of the administrator, of the other owner or of any
// other daemon are read, never changed.
package noderoutes

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"

	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/vethroute/vethroute/pkg/routing"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// ErrUnreachableGateway reports a gateway that is not on a subnet directly
// connected to the node, which the kernel refuses as a next hop.
var ErrUnreachableGateway = errors.New("gateway not on a directly connected subnet")

// Route is one route toward another node: destination prefix through a
// gateway of the same address family.
type Route struct {
	Dst netip.Prefix
	Gw  netip.Addr
	// Priority is the route's metric; 0 leaves the kernel's default.
	Priority int
}

func (r Route) String() string { return r.Dst.String() + " via " + r.Gw.String() }

// Result counts what one Sync did and found.
type Result struct {
	// Programmed is the number of desired routes present after the sync.
	Programmed int
	// Added, Replaced and Removed count the changes the sync made.
	Added, Replaced, Removed int
	// Conflicts lists desired routes that were not installed because a
	// route of someone else's already holds the destination.
	Conflicts []Conflict
}

// Conflict is a desired route blocked by a foreign route to the same
// destination.
type Conflict struct {
	Want     Route
	Existing string
}

// Unwrap makes errors.Is(c, routing.ErrForeign) hold.
func (c Conflict) Unwrap() error { return routing.ErrForeign }

func (c Conflict) Error() string {
	return fmt.Sprintf("route %s: the node already has %s: %v", c.Want, c.Existing, routing.ErrForeign)
}

// Table programs the routes of one network namespace through a netlink
// handle opened on it. The handle decides the namespace, so no goroutine
// ever has to switch namespaces.
type Table struct {
	h     netlinksafe.Handle
	proto netlink.RouteProtocol
}

// Open returns a Table on the network namespace of the calling thread,
// tagging routes with proto.
func Open(proto netlink.RouteProtocol) (*Table, error) {
	h, err := netlinksafe.NewHandle(unix.NETLINK_ROUTE)
	if err != nil {
		return nil, fmt.Errorf("open netlink: %w", err)
	}
	return New(h, proto), nil
}

// New returns a Table that uses h (which it then owns) and proto.
func New(h netlinksafe.Handle, proto netlink.RouteProtocol) *Table {
	return &Table{h: h, proto: proto}
}

// Close releases the netlink handle.
func (t *Table) Close() { t.h.Close() }

// Protocol is the route protocol number this table owns.
func (t *Table) Protocol() netlink.RouteProtocol { return t.proto }

func (t *Table) netlinkRoute(r Route) *netlink.Route {
	return &netlink.Route{
		Dst:      ipNet(r.Dst),
		Gw:       net.IP(r.Gw.AsSlice()),
		Protocol: t.proto,
		Priority: r.Priority,
		Table:    unix.RT_TABLE_MAIN,
	}
}

func describe(r netlink.Route) string {
	var b strings.Builder
	b.WriteString(r.Dst.String())
	if r.Gw != nil {
		b.WriteString(" via " + r.Gw.String())
	}
	if r.LinkIndex > 0 {
		fmt.Fprintf(&b, " ifindex %d", r.LinkIndex)
	}
	fmt.Fprintf(&b, " proto %s", r.Protocol)
	return b.String()
}

func gwEqual(r netlink.Route, gw netip.Addr) bool {
	a, ok := netip.AddrFromSlice(r.Gw)
	return ok && len(r.MultiPath) == 0 && a.Unmap() == gw.Unmap()
}

// wrapUnreach marks the kernel's "gateway not reachable" answer so callers
// can tell a topology problem from a failing netlink.
func wrapUnreach(err error) error {
	if errors.Is(err, unix.ENETUNREACH) {
		return fmt.Errorf("%w: %w", ErrUnreachableGateway, err)
	}
	return err
}

func prefixOf(n *net.IPNet) (netip.Prefix, bool) {
	if n == nil {
		return netip.Prefix{}, false
	}
	a, ok := netip.AddrFromSlice(n.IP)
	if !ok {
		return netip.Prefix{}, false
	}
	ones, bits := n.Mask.Size()
	a = a.Unmap()
	if bits != a.BitLen() {
		return netip.Prefix{}, false
	}
	return netip.PrefixFrom(a, ones).Masked(), true
}

func ipNet(p netip.Prefix) *net.IPNet {
	p = p.Masked()
	return &net.IPNet{IP: net.IP(p.Addr().AsSlice()), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

func family(a netip.Addr) int {
	if a.Is4() {
		return netlink.FAMILY_V4
	}
	return netlink.FAMILY_V6
}

// Sorted returns routes ordered by destination, for stable logs and tests.
func Sorted(routes []Route) []Route {
	out := slices.Clone(routes)
	slices.SortFunc(out, func(a, b Route) int {
		if c := a.Dst.Addr().Compare(b.Dst.Addr()); c != 0 {
			return c
		}
		return a.Dst.Bits() - b.Dst.Bits()
	})
	return out
}
