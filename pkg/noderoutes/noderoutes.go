// Package noderoutes programs a node's routes toward other nodes' pod
// subnets (the article's router routes: "10.0.0.0/24 via 172.16.0.2") in
// the main routing table of one network namespace.
//
// Every route it installs carries a dedicated route protocol number, and it
// only ever replaces or deletes routes that carry that number: routes of the
// kernel, of the administrator, of the vethroute plugin (protocol 86) or of
// any other daemon are read, never changed.
package noderoutes

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"

	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// DefaultProtocol is the route protocol the agent tags its routes with
// (`ip route show proto 87`). The plugin's own node routes use 86, so the
// two never mistake each other's routes for their own.
const DefaultProtocol netlink.RouteProtocol = 87

// ErrForeign reports a route that stands where a desired route would go but
// that this table did not create; it is left as it is.
var ErrForeign = errors.New("route not created by this agent")

// ErrUnreachableGateway reports a gateway that is not on a subnet directly
// connected to the node, which the kernel refuses as a next hop.
var ErrUnreachableGateway = errors.New("gateway not on a directly connected subnet")

// Route is one desired route: destination prefix through a gateway of the
// same address family.
type Route struct {
	Dst netip.Prefix
	Gw  netip.Addr
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

// Unwrap makes errors.Is(c, ErrForeign) hold.
func (c Conflict) Unwrap() error { return ErrForeign }

func (c Conflict) Error() string {
	return fmt.Sprintf("route %s: the node already has %s: %v", c.Want, c.Existing, ErrForeign)
}

// Table programs the routes of one network namespace through a netlink
// handle opened on it. The handle decides the namespace, so no goroutine
// ever has to switch namespaces.
type Table struct {
	h     netlinksafe.Handle
	proto netlink.RouteProtocol
}

// Open returns a Table on the namespace of the calling process, tagging
// routes with proto.
func Open(proto netlink.RouteProtocol) (*Table, error) {
	h, err := netlinksafe.NewHandle()
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

// Connected returns the prefixes of the main table that the node reaches
// directly, without a gateway (the subnets of its interfaces): a gateway
// outside all of them is one the kernel would refuse.
func (t *Table) Connected() ([]netip.Prefix, error) {
	routes, err := t.h.RouteListFiltered(netlink.FAMILY_ALL, &netlink.Route{Table: unix.RT_TABLE_MAIN}, netlink.RT_FILTER_TABLE)
	if err != nil {
		return nil, fmt.Errorf("list main routing table: %w", err)
	}
	var out []netip.Prefix
	for _, r := range routes {
		if r.Dst == nil || r.Gw != nil || len(r.MultiPath) > 0 || r.LinkIndex <= 0 || r.Type != unix.RTN_UNICAST || r.Protocol == t.proto {
			continue
		}
		if p, ok := prefixOf(r.Dst); ok {
			out = append(out, p)
		}
	}
	return out, nil
}

// Owned returns the routes of the main table that carry this table's
// protocol, in netlink's form.
func (t *Table) Owned() ([]netlink.Route, error) {
	routes, err := t.h.RouteListFiltered(netlink.FAMILY_ALL, &netlink.Route{Table: unix.RT_TABLE_MAIN, Protocol: t.proto}, netlink.RT_FILTER_TABLE|netlink.RT_FILTER_PROTOCOL)
	if err != nil {
		return nil, fmt.Errorf("list routes with protocol %d: %w", t.proto, err)
	}
	return routes, nil
}

// Sync makes the table's own routes exactly desired: missing routes are
// added, own routes through another gateway are replaced, and own routes
// that are no longer desired are deleted. A desired route whose destination
// is held by a foreign route is reported in Result.Conflicts and skipped.
// Every route is attempted; the error joins the failures, so one bad route
// never keeps the others from being programmed.
func (t *Table) Sync(desired []Route) (Result, error) {
	var res Result
	owned, err := t.Owned()
	if err != nil {
		return res, err
	}
	mine := map[netip.Prefix]netlink.Route{}
	for _, r := range owned {
		if p, ok := prefixOf(r.Dst); ok {
			mine[p] = r
		}
	}
	want := map[netip.Prefix]bool{}
	var errs []error
	for _, d := range desired {
		d.Dst = d.Dst.Masked()
		if want[d.Dst] {
			errs = append(errs, fmt.Errorf("route %s: destination listed twice", d))
			continue
		}
		want[d.Dst] = true
		if cur, ok := mine[d.Dst]; ok {
			if gwEqual(cur, d.Gw) {
				res.Programmed++
				continue
			}
			if err := t.h.RouteReplace(t.netlinkRoute(d)); err != nil {
				errs = append(errs, fmt.Errorf("replace route %s (was via %s): %w", d, cur.Gw, wrapUnreach(err)))
				continue
			}
			res.Replaced++
			res.Programmed++
			continue
		}
		foreign, err := t.foreign(d.Dst)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if foreign != "" {
			res.Conflicts = append(res.Conflicts, Conflict{Want: d, Existing: foreign})
			continue
		}
		if err := t.h.RouteAdd(t.netlinkRoute(d)); err != nil {
			errs = append(errs, fmt.Errorf("add route %s: %w", d, wrapUnreach(err)))
			continue
		}
		res.Added++
		res.Programmed++
	}
	for p, r := range mine {
		if want[p] {
			continue
		}
		if err := t.h.RouteDel(&r); err != nil && !errors.Is(err, unix.ESRCH) {
			errs = append(errs, fmt.Errorf("delete route %s via %s: %w", p, r.Gw, err))
			continue
		}
		res.Removed++
	}
	return res, errors.Join(errs...)
}

// foreign describes a route of someone else to exactly dst in the main
// table, or returns "" when there is none.
func (t *Table) foreign(dst netip.Prefix) (string, error) {
	ipn := ipNet(dst)
	routes, err := t.h.RouteListFiltered(family(dst.Addr()), &netlink.Route{Dst: ipn, Table: unix.RT_TABLE_MAIN}, netlink.RT_FILTER_DST|netlink.RT_FILTER_TABLE)
	if err != nil {
		return "", fmt.Errorf("list routes to %s: %w", dst, err)
	}
	var descs []string
	for _, r := range routes {
		if r.Protocol == t.proto {
			continue
		}
		descs = append(descs, describe(r))
	}
	return strings.Join(descs, "; "), nil
}

func (t *Table) netlinkRoute(r Route) *netlink.Route {
	return &netlink.Route{
		Dst:      ipNet(r.Dst),
		Gw:       net.IP(r.Gw.AsSlice()),
		Protocol: t.proto,
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
