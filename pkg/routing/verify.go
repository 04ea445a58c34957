package routing

import (
	"errors"
	"fmt"
	"net"
	"strings"

	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Verify compares the live state of an attachment with what Setup created and
// returns an error naming every difference: a missing or foreign interface,
// a wrong MAC, a missing address, a missing route, on either side. want holds
// the interfaces of the previous result; an empty MAC is not compared.
func Verify(a *Attachment, want Interfaces) error {
	var drift []string
	cont, err := openContainer(a.NetNS)
	if err != nil {
		return err
	}
	defer cont.close()
	drift = append(drift, verifyContainer(cont, a, want.Container)...)

	host, err := netlinksafe.NewHandle(unix.NETLINK_ROUTE)
	if err != nil {
		return fmt.Errorf("open netlink in node netns: %w", err)
	}
	defer host.Close()
	drift = append(drift, verifyHost(host, a, want.Host)...)

	if len(drift) > 0 {
		return errors.New(strings.Join(drift, "; "))
	}
	return nil
}

func verifyContainer(h *container, a *Attachment, want Link) []string {
	where := fmt.Sprintf("in netns %s", a.NetNS)
	link, err := h.LinkByName(a.IfName)
	if err != nil {
		return []string{fmt.Sprintf("container interface %s is missing %s", a.IfName, where)}
	}
	var drift []string
	if _, ok := link.(*netlink.Veth); !ok {
		drift = append(drift, fmt.Sprintf("container interface %s %s is a %s, not a veth", a.IfName, where, link.Type()))
	}
	if want.MAC != "" && !strings.EqualFold(link.Attrs().HardwareAddr.String(), want.MAC) {
		drift = append(drift, fmt.Sprintf("container interface %s %s has MAC %s, not %s", a.IfName, where, link.Attrs().HardwareAddr, want.MAC))
	}
	if link.Attrs().Flags&net.FlagUp == 0 {
		drift = append(drift, fmt.Sprintf("container interface %s %s is down", a.IfName, where))
	}
	addrs, err := h.AddrList(link, netlink.FAMILY_ALL)
	if err != nil {
		return append(drift, fmt.Sprintf("list addresses of %s %s: %v", a.IfName, where, err))
	}
	for _, want := range a.Addresses {
		if !hasAddr(addrs, want.IPNet) {
			drift = append(drift, fmt.Sprintf("container address %s on %s %s is missing", want.IPNet.String(), a.IfName, where))
		}
	}
	live, err := linkRoutes(h.Handle, link)
	if err != nil {
		return append(drift, fmt.Sprintf("list routes %s: %v", where, err))
	}
	for _, r := range containerRoutes(a, link.Attrs().Index) {
		if !hasRoute(live, r) {
			drift = append(drift, fmt.Sprintf("container route %s on %s %s is missing", routeString(r), a.IfName, where))
		}
	}
	return drift
}

func verifyHost(h netlinksafe.Handle, a *Attachment, want Link) []string {
	name := a.HostVeth()
	link, err := h.LinkByName(name)
	if err != nil {
		return []string{fmt.Sprintf("node interface %s is missing", name)}
	}
	if link.Attrs().Alias != a.alias() {
		return []string{fmt.Sprintf("node interface %s has alias %q, not %q: not this attachment's", name, link.Attrs().Alias, a.alias())}
	}
	var drift []string
	if want.MAC != "" && !strings.EqualFold(link.Attrs().HardwareAddr.String(), want.MAC) {
		drift = append(drift, fmt.Sprintf("node interface %s has MAC %s, not %s", name, link.Attrs().HardwareAddr, want.MAC))
	}
	if link.Attrs().Flags&net.FlagUp == 0 {
		drift = append(drift, fmt.Sprintf("node interface %s is down", name))
	}
	addrs, err := h.AddrList(link, netlink.FAMILY_ALL)
	if err != nil {
		return append(drift, fmt.Sprintf("list addresses of %s: %v", name, err))
	}
	live, err := linkRoutes(h, link)
	if err != nil {
		return append(drift, fmt.Sprintf("list node routes: %v", err))
	}
	for _, addr := range a.Addresses {
		if !hasAddr(addrs, *hostPrefix(addr.Gateway)) {
			drift = append(drift, fmt.Sprintf("gateway address %s on node interface %s is missing", addr.Gateway, name))
		}
		r := &netlink.Route{LinkIndex: link.Attrs().Index, Dst: hostPrefix(addr.IPNet.IP)}
		if !hasRoute(live, r) {
			drift = append(drift, fmt.Sprintf("node route %s dev %s is missing", r.Dst, name))
		}
	}
	return drift
}

// linkRoutes returns the main-table routes through link, both families.
func linkRoutes(h netlinksafe.Handle, link netlink.Link) ([]netlink.Route, error) {
	return h.RouteList(link, netlink.FAMILY_ALL)
}

func hasAddr(addrs []netlink.Addr, want net.IPNet) bool {
	for _, a := range addrs {
		if a.IPNet != nil && a.IP.Equal(want.IP) && a.Mask.String() == want.Mask.String() {
			return true
		}
	}
	return false
}

// hasRoute reports whether live has a route with r's destination and gateway
// through r's interface. A nil or all-zero prefix both mean the default route.
func hasRoute(live []netlink.Route, r *netlink.Route) bool {
	for _, l := range live {
		if l.LinkIndex == r.LinkIndex && routeFamily(&l) == routeFamily(r) &&
			dstString(l.Dst) == dstString(r.Dst) && l.Gw.Equal(r.Gw) {
			return true
		}
	}
	return false
}

func routeFamily(r *netlink.Route) int {
	switch {
	case r.Dst != nil:
		return familyOf(r.Dst.IP)
	case r.Gw != nil:
		return familyOf(r.Gw)
	default:
		return r.Family
	}
}

func dstString(n *net.IPNet) string {
	if n == nil {
		return "default"
	}
	if ones, _ := n.Mask.Size(); ones == 0 {
		return "default"
	}
	return n.String()
}
