package routing

import (
	"errors"
	"fmt"
	"net"

	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/plugins/pkg/ip"
	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// EnableForwarding turns on IP forwarding in the node's namespace for the
// families in use: the node routes between its containers and beyond. The
// sysctl is only written when it is not already 1 (a new namespace starts
// with forwarding off; a configured node already has it on).
func EnableForwarding(v4, v6 bool) error {
	if v4 {
		if err := ip.EnableIP4Forward(); err != nil {
			return fmt.Errorf("enable net.ipv4.ip_forward: %w", err)
		}
	}
	if v6 {
		if err := ip.EnableIP6Forward(); err != nil {
			return fmt.Errorf("enable net.ipv6.conf.all.forwarding: %w", err)
		}
	}
	return nil
}

// EnsureHostRoutes makes sure the node has each route of routes (the
// article's router routes toward other nodes' pod subnets). A route that is
// already there with the same gateway is left as it is, whoever installed
// it; a missing one is added with RouteProtocol. It returns the routes it
// added. A route to the same destination through another gateway is a
// conflict that vethroute refuses to resolve by itself.
//
// Concurrent ADDs on a fresh node all find a route missing and all add it:
// the kernel's EEXIST then means another ADD won, and is success when the
// route it installed has this gateway. On error the routes already added
// stay: they are node configuration, like after DEL, and another ADD may
// already have found them present and rely on them, so no ADD ever removes
// a node-wide route.
func EnsureHostRoutes(routes []*types.Route) (added []*netlink.Route, err error) {
	if len(routes) == 0 {
		return nil, nil
	}
	h, err := netlinksafe.NewHandle(unix.NETLINK_ROUTE)
	if err != nil {
		return nil, fmt.Errorf("open netlink in node netns: %w", err)
	}
	defer h.Close()
	for _, r := range routes {
		dst := r.Dst
		want := &netlink.Route{Dst: &dst, Gw: r.GW, Protocol: RouteProtocol, Priority: r.Priority}
		existing, err := routesTo(h, &dst)
		if err != nil {
			return added, err
		}
		if len(existing) == 0 {
			err = h.RouteAdd(want)
			switch {
			case err == nil:
				added = append(added, want)
				continue
			case errors.Is(err, unix.ENETUNREACH):
				return added, fmt.Errorf("hostRoutes entry %s via %s: the gateway is not on a subnet directly connected to the node: %w", dst.String(), r.GW, err)
			case !isExist(err):
				return added, fmt.Errorf("add node route %s via %s: %w", dst.String(), r.GW, err)
			}
			// Another ADD added it since the lookup, or a more specific
			// route hid it from the lookup: see what is there.
			if existing, err = exactRoutes(h, &dst); err != nil {
				return added, err
			}
		}
		if sameGateway(existing, r.GW) {
			continue
		}
		if len(existing) == 0 {
			return added, fmt.Errorf("add node route %s via %s: the kernel reports a route to %s that the node's main table does not list", dst.String(), r.GW, dst.String())
		}
		e := existing[0]
		return added, fmt.Errorf("hostRoutes entry %s via %s conflicts with the node's route %s via %s (proto %s); remove one of them", dst.String(), r.GW, dst.String(), e.Gw, e.Protocol)
	}
	return added, nil
}

// VerifyHostRoutes reports every route of routes that the node lacks.
func VerifyHostRoutes(routes []*types.Route) error {
	if len(routes) == 0 {
		return nil
	}
	h, err := netlinksafe.NewHandle(unix.NETLINK_ROUTE)
	if err != nil {
		return fmt.Errorf("open netlink in node netns: %w", err)
	}
	defer h.Close()
	var errs []error
	for _, r := range routes {
		dst := r.Dst
		existing, err := routesTo(h, &dst)
		if err == nil && !sameGateway(existing, r.GW) {
			// A more specific route can hide it from the lookup.
			existing, err = exactRoutes(h, &dst)
		}
		if err != nil {
			return err
		}
		if !sameGateway(existing, r.GW) {
			errs = append(errs, fmt.Errorf("node route %s via %s (hostRoutes) is missing", dst.String(), r.GW))
		}
	}
	return errors.Join(errs...)
}

// routesTo returns the node's routes for exactly the prefix dst. It asks the
// kernel for the FIB entry that matches dst (RTM_F_FIB_MATCH) instead of
// dumping the routing table, so the cost of an ADD does not grow with the
// number of containers (each has a route) on the node.
func routesTo(h netlinksafe.Handle, dst *net.IPNet) ([]netlink.Route, error) {
	found, err := h.RouteGetWithOptions(dst.IP, &netlink.RouteGetOptions{FIBMatch: true})
	if err != nil {
		if errors.Is(err, unix.ENETUNREACH) || errors.Is(err, unix.EHOSTUNREACH) || errors.Is(err, unix.ESRCH) {
			return nil, nil
		}
		return nil, fmt.Errorf("look up node route to %s: %w", dst.String(), err)
	}
	var out []netlink.Route
	for _, r := range found {
		if r.Dst != nil && r.Dst.String() == dst.String() {
			out = append(out, r)
		}
	}
	return out, nil
}

// exactRoutes lists the main table's routes for exactly the prefix dst. It
// dumps the table, so it serves only the paths where routesTo's lookup was
// not enough.
func exactRoutes(h netlinksafe.Handle, dst *net.IPNet) ([]netlink.Route, error) {
	found, err := h.RouteListFiltered(familyOf(dst.IP), &netlink.Route{Dst: dst, Table: unix.RT_TABLE_MAIN}, netlink.RT_FILTER_DST|netlink.RT_FILTER_TABLE)
	if err != nil {
		return nil, fmt.Errorf("list node routes to %s: %w", dst.String(), err)
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
