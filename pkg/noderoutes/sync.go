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
	routes, err := t.exactRoutes(dst)
	if err != nil {
		return "", err
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
