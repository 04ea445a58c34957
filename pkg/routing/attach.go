package routing

import (
	"errors"
	"fmt"
	"net"

	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/containernetworking/plugins/pkg/utils/sysctl"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Setup creates the attachment: a veth pair whose ends are created directly in
// their namespaces (no create-then-move), the container's addresses and
// routes, and on the node the gateway addresses, a host route per container
// address and IP forwarding. On error everything Setup created is removed.
func Setup(a *Attachment) (ifs *Interfaces, err error) {
	cont, err := openContainer(a.NetNS)
	if err != nil {
		return nil, err
	}
	defer cont.close()
	// NETLINK_ROUTE only, here and for every handle of this package: a
	// handle opens one socket per family asked for, all of route, xfrm and
	// netfilter by default, and vethroute needs only route.
	host, err := netlinksafe.NewHandle(unix.NETLINK_ROUTE)
	if err != nil {
		return nil, fmt.Errorf("open netlink in node netns: %w", err)
	}
	defer host.Close()

	// Forwarding goes on before the veth exists: an interface created while
	// the namespace was not yet a router keeps host behaviour for IPv6 and
	// answers its container's first neighbour solicitation a second late.
	if err := EnableForwarding(families(a.Addresses)); err != nil {
		return nil, err
	}
	hostLink, err := createVeth(host, cont, a)
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			// Deleting one end deletes both, and every address and route on them.
			_ = host.LinkDel(hostLink)
		}
	}()

	contLink, err := cont.LinkByName(a.IfName)
	if err != nil {
		return nil, fmt.Errorf("find %s in netns %s: %w", a.IfName, a.NetNS, err)
	}
	if err := configureContainer(cont, contLink, a); err != nil {
		return nil, err
	}
	if err := configureHost(host, hostLink, a); err != nil {
		return nil, err
	}
	return &Interfaces{
		Host:      linkInfo(hostLink),
		Container: linkInfo(contLink),
	}, nil
}

// createVeth creates the pair with one netlink request: the node end in the
// node's namespace, the peer straight in the container's. A leftover node end
// of the same attachment (a killed ADD being retried) is replaced; an
// interface of that name that vethroute did not create for this attachment is
// left alone and reported.
func createVeth(host netlinksafe.Handle, cont *container, a *Attachment) (netlink.Link, error) {
	name := a.HostVeth()
	attrs := netlink.NewLinkAttrs()
	attrs.Name = name
	attrs.MTU = a.MTU
	attrs.Group = LinkGroup
	veth := &netlink.Veth{
		LinkAttrs:     attrs,
		PeerName:      a.IfName,
		PeerNamespace: netlink.NsFd(int(cont.ns.Fd())),
		PeerMTU:       uint32(a.MTU),
		PeerTxQLen:    -1,
	}
	// Try first, look only on a clash: the common case costs one request.
	err := host.LinkAdd(veth)
	if isExist(err) {
		old, lerr := host.LinkByName(name)
		switch {
		case isNotFound(lerr):
			return nil, fmt.Errorf("create veth %s: an interface named %s already exists in netns %s: %w", name, a.IfName, a.NetNS, err)
		case lerr != nil:
			return nil, fmt.Errorf("look up %s: %w", name, lerr)
		case !ownedBy(old, a.alias()):
			return nil, fmt.Errorf("interface %s exists on the node (group %d, alias %q): %w; remove it or free the name", name, old.Attrs().Group, old.Attrs().Alias, ErrForeign)
		}
		// The node end of an earlier, interrupted ADD of this attachment.
		if err := host.LinkDel(old); err != nil {
			return nil, fmt.Errorf("remove leftover %s of an earlier ADD: %w", name, err)
		}
		veth.Index = 0
		err = host.LinkAdd(veth)
	}
	if err != nil {
		if isExist(err) {
			return nil, fmt.Errorf("create veth %s: an interface named %s already exists in netns %s: %w", name, a.IfName, a.NetNS, err)
		}
		return nil, fmt.Errorf("create veth %s with peer %s in netns %s: %w", name, a.IfName, a.NetNS, err)
	}
	link, err := host.LinkByName(name)
	if err != nil {
		_ = host.LinkDel(veth)
		return nil, fmt.Errorf("find new veth %s: %w", name, err)
	}
	// The kernel ignores IFLA_IFALIAS when it creates a link, so the alias
	// takes a second request.
	if err := host.LinkSetAlias(link, a.alias()); err != nil {
		_ = host.LinkDel(link)
		return nil, fmt.Errorf("set alias of %s: %w", name, err)
	}
	link.Attrs().Alias = a.alias()
	return link, nil
}

// configureContainer gives the container end its addresses and routes: each
// gateway reachable on-link, the subnet and the configured routes via it.
func configureContainer(h *container, link netlink.Link, a *Attachment) error {
	name := a.IfName
	for _, addr := range a.Addresses {
		ipn := addr.IPNet
		if err := h.AddrAdd(link, &netlink.Addr{IPNet: &ipn, Flags: addrFlags(ipn.IP)}); err != nil && !isExist(err) {
			return fmt.Errorf("add address %s to %s in netns %s: %w", ipn.String(), name, a.NetNS, err)
		}
	}
	if err := h.LinkSetUp(link); err != nil {
		return fmt.Errorf("set %s up in netns %s: %w", name, a.NetNS, err)
	}
	idx := link.Attrs().Index
	for _, r := range containerRoutes(a, idx) {
		if err := h.RouteReplace(r); err != nil {
			return fmt.Errorf("add route %s in netns %s: %w", routeString(r), a.NetNS, err)
		}
	}
	return nil
}

// containerRoutes lists the container's routes in the order they must be
// added: the on-link gateway routes first, since the others go through them.
func containerRoutes(a *Attachment, idx int) []*netlink.Route {
	var out []*netlink.Route
	for _, addr := range a.Addresses {
		out = append(out, &netlink.Route{LinkIndex: idx, Dst: hostPrefix(addr.Gateway), Scope: netlink.SCOPE_LINK})
	}
	for _, addr := range a.Addresses {
		subnet := &net.IPNet{IP: addr.IPNet.IP.Mask(addr.IPNet.Mask), Mask: addr.IPNet.Mask}
		out = append(out, &netlink.Route{LinkIndex: idx, Dst: subnet, Gw: addr.Gateway})
	}
	for _, r := range a.Routes {
		gw := r.GW
		if gw == nil {
			gw = gatewayFor(a, r.Dst.IP)
		}
		if gw == nil {
			continue // no address of that family: nothing can use the route
		}
		dst := r.Dst
		nr := &netlink.Route{LinkIndex: idx, Dst: &dst, Gw: gw, Priority: r.Priority}
		if ones, _ := dst.Mask.Size(); ones == 0 {
			nr.Dst = nil // the default route
			nr.Family = familyOf(dst.IP)
		}
		out = append(out, nr)
	}
	return out
}

// gatewayFor returns the gateway of the attachment's address of ip's family.
func gatewayFor(a *Attachment, ip net.IP) net.IP {
	for _, addr := range a.Addresses {
		if (addr.IPNet.IP.To4() == nil) == (ip.To4() == nil) {
			return addr.Gateway
		}
	}
	return nil
}

// configureHost makes the node the container's router: the node end carries
// each gateway as a single-address address (so the container's ARP or
// neighbour solicitation for its gateway is answered by the node end itself,
// with no proxy ARP), a host route sends each container address down the
// veth, and forwarding is on for the families in use.
func configureHost(h netlinksafe.Handle, link netlink.Link, a *Attachment) error {
	name := link.Attrs().Name
	_, v6 := families(a.Addresses)
	for _, addr := range a.Addresses {
		gw := hostPrefix(addr.Gateway)
		if err := h.AddrAdd(link, &netlink.Addr{IPNet: gw, Flags: addrFlags(gw.IP)}); err != nil && !isExist(err) {
			return fmt.Errorf("add gateway %s to %s: %w", gw.String(), name, err)
		}
	}
	if v6 {
		// The node end's link-local address would otherwise stay tentative
		// for a second or two after the link comes up, and the node cannot
		// send neighbour solicitations toward the container until it is
		// not: the container's IPv6 would be unreachable at first.
		if _, err := sysctl.Sysctl("net/ipv6/conf/"+name+"/accept_dad", "0"); err != nil {
			return fmt.Errorf("disable DAD on %s: %w", name, err)
		}
	}
	if err := h.LinkSetUp(link); err != nil {
		return fmt.Errorf("set %s up: %w", name, err)
	}
	for _, addr := range a.Addresses {
		if err := ensureContainerRoute(h, link, addr.IPNet.IP); err != nil {
			return err
		}
	}
	return nil
}

// ensureContainerRoute installs the node's route to one container address.
// A route to the same address that vethroute installed earlier (a stale one
// whose veth survived somehow) is replaced, so a reused address never meets
// it; a route someone else installed is left alone and reported.
func ensureContainerRoute(h netlinksafe.Handle, link netlink.Link, ip net.IP) error {
	r := &netlink.Route{LinkIndex: link.Attrs().Index, Dst: hostPrefix(ip), Scope: netlink.SCOPE_LINK, Protocol: RouteProtocol}
	err := h.RouteAdd(r)
	if err == nil || !isExist(err) {
		if err != nil {
			return fmt.Errorf("add node route %s: %w", routeString(r), err)
		}
		return nil
	}
	existing, lerr := h.RouteListFiltered(familyOf(ip), &netlink.Route{Dst: r.Dst}, netlink.RT_FILTER_DST)
	if lerr != nil {
		return fmt.Errorf("list node routes to %s: %w", r.Dst, lerr)
	}
	for _, e := range existing {
		if e.Protocol != RouteProtocol {
			return fmt.Errorf("node route to %s via ifindex %d (proto %s): %w; remove it before reusing the address", r.Dst, e.LinkIndex, e.Protocol, ErrForeign)
		}
	}
	if err := h.RouteReplace(r); err != nil {
		return fmt.Errorf("replace stale node route %s: %w", routeString(r), err)
	}
	return nil
}

func families(addrs []Address) (v4, v6 bool) {
	for _, a := range addrs {
		if a.IPNet.IP.To4() != nil {
			v4 = true
		} else {
			v6 = true
		}
	}
	return v4, v6
}

func linkInfo(l netlink.Link) Link {
	at := l.Attrs()
	return Link{Name: at.Name, MAC: at.HardwareAddr.String(), Index: at.Index, MTU: at.MTU}
}

func routeString(r *netlink.Route) string {
	dst := "default"
	if r.Dst != nil {
		dst = r.Dst.String()
	}
	if r.Gw != nil {
		return fmt.Sprintf("%s via %s", dst, r.Gw)
	}
	return fmt.Sprintf("%s dev #%d", dst, r.LinkIndex)
}

// Teardown removes the attachment's host veth, which takes the container end,
// every address and every route on either end with it. It succeeds when there
// is nothing to remove (DEL is idempotent) and never removes an interface
// that vethroute did not create for this very attachment. The container's
// namespace is not needed, so DEL works after the namespace is gone.
func Teardown(network, containerID, ifName string) error {
	return TeardownVia(network, containerID, ifName, nil)
}

// TeardownVia is Teardown with the deletion handed to unlink when it is not
// nil: unlink must return nil only once the node no longer lists the link
// (the reaper package's Delete does). When unlink fails, TeardownVia deletes
// the link itself, so a missing or refusing helper costs time, never a leak.
func TeardownVia(network, containerID, ifName string, unlink func(link netlink.Link, alias string) error) error {
	host, err := netlinksafe.NewHandle(unix.NETLINK_ROUTE)
	if err != nil {
		return fmt.Errorf("open netlink in node netns: %w", err)
	}
	defer host.Close()
	name := HostVethName(containerID, ifName)
	link, err := host.LinkByName(name)
	if err != nil {
		if isNotFound(err) {
			return nil
		}
		return fmt.Errorf("look up %s: %w", name, err)
	}
	want := Alias(network, containerID, ifName)
	if !ownedBy(link, want) {
		return fmt.Errorf("interface %s (group %d, alias %q) is not %q: %w; left in place", name, link.Attrs().Group, link.Attrs().Alias, want, ErrForeign)
	}
	if unlink != nil && unlink(link, want) == nil {
		return nil
	}
	if err := host.LinkDel(link); err != nil && !isNotFound(err) {
		return fmt.Errorf("delete %s: %w", name, err)
	}
	return nil
}

// CollectGarbageVia deletes every host veth of network whose owner keep
// rejects and returns their names. Interfaces of other networks and
// interfaces without vethroute's alias are never touched. The deletions are
// handed to unlink when it is set, as in TeardownVia; after unlink's first
// failure the rest are deleted in-process: a helper that is down or hung
// costs one timeout, not one per stale interface.
func CollectGarbageVia(network string, keep func(containerID, ifName string) bool, unlink func(link netlink.Link, alias string) error) ([]string, error) {
	host, err := netlinksafe.NewHandle(unix.NETLINK_ROUTE)
	if err != nil {
		return nil, fmt.Errorf("open netlink in node netns: %w", err)
	}
	defer host.Close()
	links, err := host.LinkList()
	if err != nil {
		return nil, fmt.Errorf("list node interfaces: %w", err)
	}
	var removed []string
	var errs []error
	for _, l := range links {
		net, id, ifName, ok := parseAlias(l.Attrs().Alias)
		if !ok || l.Attrs().Group != LinkGroup || net != network || keep(id, ifName) {
			continue
		}
		if unlink != nil {
			if unlink(l, l.Attrs().Alias) == nil {
				removed = append(removed, l.Attrs().Name)
				continue
			}
			unlink = nil
		}
		if err := host.LinkDel(l); err != nil && !isNotFound(err) {
			errs = append(errs, fmt.Errorf("delete stale %s of %s:%s: %w", l.Attrs().Name, id, ifName, err))
			continue
		}
		removed = append(removed, l.Attrs().Name)
	}
	return removed, errors.Join(errs...)
}
