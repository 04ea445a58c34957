package noderoutes

import (
	"errors"
	"fmt"
	"net"
	"net/netip"

	"github.com/containernetworking/cni/pkg/types"
	"github.com/vethroute/vethroute/pkg/routing"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// FromCNI converts the plugin's hostRoutes. An entry without a usable
// destination or gateway becomes a Route that Ensure and Verify refuse.
func FromCNI(routes []*types.Route) []Route {
	out := make([]Route, 0, len(routes))
	for _, r := range routes {
		dst, _ := prefixOf(&r.Dst)
		gw, _ := netip.AddrFromSlice(r.GW)
		out = append(out, Route{Dst: dst, Gw: gw.Unmap(), Priority: r.Priority})
	}
	return out
}

// Ensure opens a Table with proto on the calling thread's namespace (the
// node's, for the plugin) and ensures routes there. Without routes it opens
// nothing.
func Ensure(proto netlink.RouteProtocol, routes []Route) ([]Route, error) {
	if len(routes) == 0 {
		return nil, nil
	}
	t, err := Open(proto)
	if err != nil {
		return nil, fmt.Errorf("open netlink in node netns: %w", err)
	}
	defer t.Close()
	return t.Ensure(routes)
}

// Verify opens a Table on the calling thread's namespace and verifies routes
// there. Without routes it opens nothing.
func Verify(proto netlink.RouteProtocol, routes []Route) error {
	if len(routes) == 0 {
		return nil
	}
	t, err := Open(proto)
	if err != nil {
		return fmt.Errorf("open netlink in node netns: %w", err)
	}
	defer t.Close()
	return t.Verify(routes)
}

// Ensure makes sure the node has each of routes (the plugin's hostRoutes).
// A route that is already there with the same gateway is left as it is,
// whoever installed it; a missing one is added with the table's protocol.
// It returns the routes it added. A route to the same destination through
// another gateway is a conflict (routing.ErrForeign) that is never resolved here.
//
// Concurrent ADDs on a fresh node all find a route missing and all add it:
// the kernel's EEXIST then means another ADD won, and is success when the
// route it installed has this gateway. On error the routes already added
// stay: they are node configuration, like after DEL, and another ADD may
// already have found them present and rely on them, so Ensure never removes
// a route.
func (t *Table) Ensure(routes []Route) (added []Route, err error) {
	for _, r := range routes {
		if !r.Dst.IsValid() || !r.Gw.IsValid() {
			return added, fmt.Errorf("hostRoutes entry %s: a destination prefix and a gateway address are required", r)
		}
		want := t.netlinkRoute(r)
		existing, err := t.routesTo(r.Dst)
		if err != nil {
			return added, err
		}
		if len(existing) == 0 {
			err = t.h.RouteAdd(want)
			switch {
			case err == nil:
				added = append(added, r)
				continue
			case errors.Is(err, unix.ENETUNREACH):
				return added, fmt.Errorf("hostRoutes entry %s: the gateway is not on a subnet directly connected to the node: %w", r, wrapUnreach(err))
			case !errors.Is(err, unix.EEXIST):
				return added, fmt.Errorf("add node route %s: %w", r, err)
			}
			// Another ADD added it since the lookup, or a more specific
			// route hid it from the lookup: see what is there.
			if existing, err = t.exactRoutes(r.Dst); err != nil {
				return added, err
			}
		}
		if sameGateway(existing, want.Gw) {
			continue
		}
		if len(existing) == 0 {
			return added, fmt.Errorf("add node route %s: the kernel reports a route to %s that the node's main table does not list", r, r.Dst)
		}
		e := existing[0]
		return added, fmt.Errorf("hostRoutes entry %s conflicts with the node's route %s via %s (proto %s); remove one of them: %w", r, r.Dst, e.Gw, e.Protocol, routing.ErrForeign)
	}
	return added, nil
}

// Verify reports every route of routes that the node lacks.
func (t *Table) Verify(routes []Route) error {
	var errs []error
	for _, r := range routes {
		if !r.Dst.IsValid() || !r.Gw.IsValid() {
			return fmt.Errorf("hostRoutes entry %s: a destination prefix and a gateway address are required", r)
		}
		gw := net.IP(r.Gw.AsSlice())
		existing, err := t.routesTo(r.Dst)
		if err == nil && !sameGateway(existing, gw) {
			// A more specific route can hide it from the lookup.
			existing, err = t.exactRoutes(r.Dst)
		}
		if err != nil {
			return err
		}
		if !sameGateway(existing, gw) {
			errs = append(errs, fmt.Errorf("node route %s (hostRoutes) is missing", r))
		}
	}
	return errors.Join(errs...)
}

// routesTo returns the node's routes for exactly the prefix dst. It asks the
// kernel for the FIB entry that matches dst (RTM_F_FIB_MATCH) instead of
// dumping the routing table, so the cost of an ADD does not grow with the
// number of containers (each has a route) on the node.
func (t *Table) routesTo(dst netip.Prefix) ([]netlink.Route, error) {
	found, err := t.h.RouteGetWithOptions(net.IP(dst.Addr().AsSlice()), &netlink.RouteGetOptions{FIBMatch: true})
	if err != nil {
		if errors.Is(err, unix.ENETUNREACH) || errors.Is(err, unix.EHOSTUNREACH) || errors.Is(err, unix.ESRCH) {
			return nil, nil
		}
		return nil, fmt.Errorf("look up node route to %s: %w", dst, err)
	}
	var out []netlink.Route
	for _, r := range found {
		if p, ok := prefixOf(r.Dst); ok && p == dst.Masked() {
			out = append(out, r)
		}
	}
	return out, nil
}

// exactRoutes lists the main table's routes for exactly the prefix dst. It
// dumps the table, so it serves only the paths where routesTo's lookup was
// not enough.
func (t *Table) exactRoutes(dst netip.Prefix) ([]netlink.Route, error) {
	found, err := t.h.RouteListFiltered(family(dst.Addr()), &netlink.Route{Dst: ipNet(dst), Table: unix.RT_TABLE_MAIN}, netlink.RT_FILTER_DST|netlink.RT_FILTER_TABLE)
	if err != nil {
		return nil, fmt.Errorf("list node routes to %s: %w", dst, err)
	}
	return found, nil
}

func sameGateway(routes []netlink.Route, gw net.IP) bool {
	for _, e := range routes {
		if e.Gw.Equal(gw) {
			return true
		}
		for _, nh := range e.MultiPath {
			if nh.Gw.Equal(gw) {
				return true
			}
		}
	}
	return false
}
