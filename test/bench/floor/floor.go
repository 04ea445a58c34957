// Package floor is the benchmark's lower bound: the netlink requests that
// any plugin must make to give a container the vethroute topology (a veth
// pair created with its peer directly in the container's namespace, the
// container's address, on-link gateway route, subnet and default routes, the
// gateway address and host route on the node end, both ends up), and
// nothing else: no IPAM, no configuration parsing, no lookups for leftovers,
// no result. The benchmark times it in-process and as a tiny exec'd binary.
package floor

import (
	"bytes"
	"fmt"
	"net"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// Spec is one attachment: the node-side name, the container interface, the
// container's address (with its prefix) and the gateway the node answers on.
type Spec struct {
	HostName string
	IfName   string
	Addr     *net.IPNet
	Gateway  net.IP
	MTU      int
}

// Attach creates the attachment. The node side is the calling thread's
// namespace; the container's namespace is opened at netnsPath for this one
// call, as a plugin must.
func Attach(netnsPath string, s Spec) error {
	// Only NETLINK_ROUTE: a handle opens a socket per family asked for
	// (all of route, xfrm and netfilter by default), and in another
	// namespace each costs two setns.
	host, err := netlink.NewHandle(unix.NETLINK_ROUTE)
	if err != nil {
		return fmt.Errorf("open netlink in node netns: %w", err)
	}
	defer host.Close()
	target, err := netns.GetFromPath(netnsPath)
	if err != nil {
		return fmt.Errorf("open netns %s: %w", netnsPath, err)
	}
	defer target.Close()
	cont, err := netlink.NewHandleAt(target, unix.NETLINK_ROUTE)
	if err != nil {
		return fmt.Errorf("open netlink in %s: %w", netnsPath, err)
	}
	defer cont.Close()

	attrs := netlink.NewLinkAttrs()
	attrs.Name, attrs.MTU = s.HostName, s.MTU
	veth := &netlink.Veth{LinkAttrs: attrs, PeerName: s.IfName, PeerNamespace: netlink.NsFd(int(target)), PeerMTU: uint32(s.MTU)}
	if err := host.LinkAdd(veth); err != nil {
		return fmt.Errorf("create veth %s: %w", s.HostName, err)
	}
	peer, err := cont.LinkByName(s.IfName)
	if err != nil {
		return fmt.Errorf("find %s: %w", s.IfName, err)
	}
	if err := cont.AddrAdd(peer, &netlink.Addr{IPNet: s.Addr, Flags: unix.IFA_F_NOPREFIXROUTE}); err != nil {
		return fmt.Errorf("add address: %w", err)
	}
	if err := cont.LinkSetUp(peer); err != nil {
		return fmt.Errorf("set %s up: %w", s.IfName, err)
	}
	gw := &net.IPNet{IP: s.Gateway, Mask: net.CIDRMask(32, 32)}
	subnet := &net.IPNet{IP: s.Addr.IP.Mask(s.Addr.Mask), Mask: s.Addr.Mask}
	idx := peer.Attrs().Index
	for _, r := range []*netlink.Route{
		{LinkIndex: idx, Dst: gw, Scope: netlink.SCOPE_LINK},
		{LinkIndex: idx, Dst: subnet, Gw: s.Gateway},
		{LinkIndex: idx, Gw: s.Gateway},
	} {
		if err := cont.RouteAdd(r); err != nil {
			return fmt.Errorf("add container route %v: %w", r, err)
		}
	}
	if err := host.AddrAdd(veth, &netlink.Addr{IPNet: gw, Flags: unix.IFA_F_NOPREFIXROUTE}); err != nil {
		return fmt.Errorf("add gateway address: %w", err)
	}
	if err := host.LinkSetUp(veth); err != nil {
		return fmt.Errorf("set %s up: %w", s.HostName, err)
	}
	hostRoute := &netlink.Route{LinkIndex: veth.Attrs().Index, Dst: &net.IPNet{IP: s.Addr.IP, Mask: net.CIDRMask(32, 32)}, Scope: netlink.SCOPE_LINK}
	if err := host.RouteAdd(hostRoute); err != nil {
		return fmt.Errorf("add host route: %w", err)
	}
	return nil
}

// Detach deletes the node end, which takes the pair and every address and
// route on it.
func Detach(hostName string) error {
	host, err := netlink.NewHandle(unix.NETLINK_ROUTE)
	if err != nil {
		return fmt.Errorf("open netlink in node netns: %w", err)
	}
	defer host.Close()
	l, err := host.LinkByName(hostName)
	if err != nil {
		return fmt.Errorf("find %s: %w", hostName, err)
	}
	return host.LinkDel(l)
}

// DetachVia asks the process listening on socket to delete the node end
// and returns once it answers that the node no longer lists it: a DEL whose
// wait for the kernel to release the device someone else sits out, as with
// vethroute's reaper, reduced to one line each way. Raw system calls keep
// the net package's dialer out of the floor's binary.
func DetachVia(socket, hostName string) error {
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("floor reaper: %w", err)
	}
	defer unix.Close(fd)
	tv := unix.Timeval{Sec: 10}
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		return fmt.Errorf("floor reaper: %w", err)
	}
	if err := unix.Connect(fd, &unix.SockaddrUnix{Name: socket}); err != nil {
		return fmt.Errorf("floor reaper %s: %w", socket, err)
	}
	if _, err := unix.Write(fd, []byte(hostName+"\n")); err != nil {
		return fmt.Errorf("floor reaper: send: %w", err)
	}
	buf := make([]byte, 512)
	var answer []byte
	for !bytes.HasSuffix(answer, []byte("\n")) {
		n, err := unix.Read(fd, buf)
		if err != nil || n == 0 {
			return fmt.Errorf("floor reaper: read answer: %v (got %q)", err, answer)
		}
		answer = append(answer, buf[:n]...)
	}
	if a := string(bytes.TrimSpace(answer)); a != "ok" {
		return fmt.Errorf("floor reaper: %s", a)
	}
	return nil
}
