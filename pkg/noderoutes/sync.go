package noderoutes

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

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
// never keeps the others from being programmed. The main table is read
// once, whatever the number of routes.
func (t *Table) Sync(desired []Route) (Result, error) {
	var res Result
	all, err := t.h.RouteListFiltered(netlink.FAMILY_ALL, &netlink.Route{Table: unix.RT_TABLE_MAIN}, netlink.RT_FILTER_TABLE)
	if err != nil {
		return res, fmt.Errorf("list main routing table: %w", err)
	}
	mine := map[netip.Prefix]netlink.Route{}
	others := map[netip.Prefix][]string{}
	for _, r := range all {
		p, ok := prefixOf(r.Dst)
		if !ok {
			continue
		}
		if r.Protocol == t.proto {
			mine[p] = r
		} else {
			others[p] = append(others[p], describe(r))
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
		if foreign := others[d.Dst]; len(foreign) > 0 {
			res.Conflicts = append(res.Conflicts, Conflict{Want: d, Existing: strings.Join(foreign, "; ")})
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

// Apply changes only the destinations it is given, without reading the
// whole table: each route of set is added, or replaced when the table's own
// route there has another gateway (a foreign route there is a Conflict, left
// alone), and the table's own route to each destination of remove is
// deleted. Its cost follows the number of changes, not of routes, so one
// node's change costs the same in any cluster; Sync, run periodically,
// catches what changed behind its back. Result.Programmed is not counted.
// Every change is attempted; the error joins the failures.
func (t *Table) Apply(set []Route, remove []netip.Prefix) (Result, error) {
	var res Result
	var errs []error
	for _, p := range remove {
		r := t.netlinkRoute(Route{Dst: p})
		r.Gw = nil
		// The kernel deletes only a route of this protocol.
		switch err := t.h.RouteDel(r); {
		case err == nil:
			res.Removed++
		case !errors.Is(err, unix.ESRCH):
			errs = append(errs, fmt.Errorf("delete route to %s: %w", p, err))
		}
	}
	for _, d := range set {
		d.Dst = d.Dst.Masked()
		existing, err := t.routesTo(d.Dst)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if len(existing) == 0 {
			err := t.h.RouteAdd(t.netlinkRoute(d))
			if err == nil {
				res.Added++
				continue
			}
			if !errors.Is(err, unix.EEXIST) {
				errs = append(errs, fmt.Errorf("add route %s: %w", d, wrapUnreach(err)))
				continue
			}
			// A more specific route hid it from the lookup.
			if existing, err = t.exactRoutes(d.Dst); err != nil {
				errs = append(errs, err)
				continue
			}
		}
		var own *netlink.Route
		var foreign []string
		for i, e := range existing {
			if e.Protocol == t.proto {
				own = &existing[i]
			} else {
				foreign = append(foreign, describe(e))
			}
		}
		switch {
		case len(foreign) > 0:
			res.Conflicts = append(res.Conflicts, Conflict{Want: d, Existing: strings.Join(foreign, "; ")})
		case own != nil && gwEqual(*own, d.Gw):
		default:
			if err := t.h.RouteReplace(t.netlinkRoute(d)); err != nil {
				errs = append(errs, fmt.Errorf("replace route %s: %w", d, wrapUnreach(err)))
				continue
			}
			res.Replaced++
		}
	}
	return res, errors.Join(errs...)
}
