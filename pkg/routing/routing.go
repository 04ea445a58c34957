// Package routing attaches containers to the node: as the article's router
// namespaces are, the node is the router of each container, with one veth
// pair per attachment, the gateway address on the node's end and a host
// route per container address. It also checks and removes those
// attachments, and turns on IP forwarding. The node's routes toward other
// nodes are package noderoutes'; the agent's reaper deletes host veths on
// the plugin's behalf (package reaper).
//
// The node side is the network namespace of the calling thread (the plugin
// runs in the node's namespace); the container side is reached through a
// netlink handle opened on the container's namespace, so no goroutine ever
// switches namespaces to configure it.
package routing

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"strings"

	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/vethroute/vethroute/pkg/netconf"
)

const (
	// RouteProtocol tags the routes the plugin installs on the node (container
	// host routes, and hostRoutes through package noderoutes), so that it
	// only ever removes its own: netconf.PluginRouteProtocol.
	RouteProtocol netlink.RouteProtocol = netconf.PluginRouteProtocol

	// hostVethPrefix makes the node's veth ends recognisable as vethroute's.
	hostVethPrefix = "vrt"
	// aliasPrefix starts the IFLA_IFALIAS vethroute writes on every host veth
	// it creates; an interface without it is never deleted or reused.
	aliasPrefix = "vethroute"

	// LinkGroup is the device group of every host veth vethroute creates
	// (`ip link show group 30322`). Unlike the alias, the kernel sets the
	// group in the very request that creates the link, so even a plugin
	// killed right after creating the pair leaves an interface that can be
	// recognised as vethroute's; the alias then names the owner.
	LinkGroup = 30322
	aliasSep  = ":"
)

// ErrForeign reports an interface or route that vethroute did not create
// (no vethroute link group and alias, or another route protocol) but that
// stands where vethroute would put its own; vethroute leaves it alone. The
// plugin and noderoutes both report it, so callers test for one sentinel.
var ErrForeign = errors.New("not created by vethroute")

// ErrNetNS reports a container network namespace path that does not exist or
// is not a network namespace.
var ErrNetNS = errors.New("invalid network namespace")

// HostVethName returns the node-side interface name of an attachment:
// "vrt" and 12 hex digits of a hash of the container ID and interface name,
// 15 characters, the kernel's limit. Deterministic so that DEL finds the
// interface without any stored state.
func HostVethName(containerID, ifName string) string {
	sum := sha256.Sum256([]byte(containerID + "\x00" + ifName))
	return hostVethPrefix + hex.EncodeToString(sum[:6])
}

// Alias returns the interface alias that marks a host veth as vethroute's and
// names its owner. CNI forbids ':' in network names, container IDs and
// interface names, so the alias parses back unambiguously.
func Alias(network, containerID, ifName string) string {
	return strings.Join([]string{aliasPrefix, network, containerID, ifName}, aliasSep)
}

// ownedBy reports whether link is the host veth vethroute created for the
// attachment whose alias is alias: it must carry vethroute's device group and
// either that alias or none yet (a plugin killed before it set the alias).
func ownedBy(link netlink.Link, alias string) bool {
	at := link.Attrs()
	return at.Group == LinkGroup && (at.Alias == alias || at.Alias == "")
}

// OwnsLink reports whether link is the host veth vethroute created for the
// attachment that alias (made by Alias) names. A process deleting links on
// the plugin's behalf checks it, so a request can never remove an interface
// vethroute did not create for that attachment.
func OwnsLink(link netlink.Link, alias string) bool {
	if _, _, _, ok := parseAlias(alias); !ok {
		return false
	}
	return ownedBy(link, alias)
}

// parseAlias returns the owner an alias names, or ok=false when the alias is
// not one of vethroute's.
func parseAlias(alias string) (network, containerID, ifName string, ok bool) {
	parts := strings.Split(alias, aliasSep)
	if len(parts) != 4 || parts[0] != aliasPrefix {
		return "", "", "", false
	}
	return parts[1], parts[2], parts[3], true
}

// Address is one container address and the gateway the node answers on.
type Address struct {
	IPNet   net.IPNet
	Gateway net.IP
}

// Attachment is everything ADD, CHECK and DEL need to know about one
// container interface.
type Attachment struct {
	Network     string
	ContainerID string
	IfName      string
	// NetNS is the path of the container's network namespace.
	NetNS string
	MTU   int
	// Addresses are the container's addresses, one per range set.
	Addresses []Address
	// Routes are the container's routes; a nil GW means the gateway of the
	// destination's address family.
	Routes []*types.Route
}

// HostVeth returns the node-side interface name of the attachment.
func (a *Attachment) HostVeth() string { return HostVethName(a.ContainerID, a.IfName) }

func (a *Attachment) alias() string { return Alias(a.Network, a.ContainerID, a.IfName) }

// Link describes one end of the veth pair as the CNI result reports it.
type Link struct {
	Name  string
	MAC   string
	Index int
	MTU   int
}

// Interfaces are the two ends of an attachment's veth pair.
type Interfaces struct {
	Host      Link
	Container Link
}

// container is an open handle on a container's network namespace: the
// namespace itself (its fd names the peer's namespace when the veth is
// created) and a netlink socket inside it.
type container struct {
	ns ns.NetNS
	netlinksafe.Handle
}

// nsGetNSType is the NS_GET_NSTYPE ioctl of linux/nsfs.h, _IO(0xb7, 0x3),
// which golang.org/x/sys does not define.
const nsGetNSType = 0xb703

// openContainer opens the namespace at path once for all the work of a verb.
func openContainer(path string) (*container, error) {
	target, err := openNetNS(path)
	if err != nil {
		return nil, err
	}
	h, err := netlinksafe.NewHandleAt(netns.NsHandle(target.Fd()), unix.NETLINK_ROUTE)
	if err != nil {
		target.Close()
		return nil, fmt.Errorf("open netlink in netns %s: %w", path, err)
	}
	return &container{ns: target, Handle: h}, nil
}

// openNetNS opens path and makes sure it is a network namespace.
func openNetNS(path string) (ns.NetNS, error) {
	target, err := ns.GetNS(path)
	if err != nil {
		var notExist ns.NSPathNotExistErr
		var notNS ns.NSPathNotNSErr
		if errors.As(err, &notExist) || errors.As(err, &notNS) {
			return nil, fmt.Errorf("%w: %s: %v", ErrNetNS, path, err)
		}
		return nil, fmt.Errorf("open netns %s: %w", path, err)
	}
	// ns.GetNS accepts any namespace file; a mount or PID namespace would
	// only fail later, with a bare EINVAL from setns.
	if typ, err := unix.IoctlRetInt(int(target.Fd()), nsGetNSType); err == nil && typ != unix.CLONE_NEWNET {
		target.Close()
		return nil, fmt.Errorf("%w: %s is a namespace, but not a network namespace", ErrNetNS, path)
	}
	return target, nil
}

func (c *container) close() {
	c.Handle.Close()
	_ = c.ns.Close()
}

// CheckNetNS reports, as ErrNetNS, a container namespace path that is
// missing, is not a network namespace, or is the caller's own namespace
// (the node's): ADD calls it before it changes anything, so such a path
// leaves the store and the node untouched instead of failing half-way or,
// for the node's own namespace, configuring the node as a container.
func CheckNetNS(path string) error {
	target, err := openNetNS(path)
	if err != nil {
		return err
	}
	defer target.Close()
	own, err := ns.GetCurrentNS()
	if err != nil {
		return fmt.Errorf("open the node's netns: %w", err)
	}
	defer own.Close()
	var a, b unix.Stat_t
	if err := unix.Fstat(int(target.Fd()), &a); err != nil {
		return fmt.Errorf("stat netns %s: %w", path, err)
	}
	if err := unix.Fstat(int(own.Fd()), &b); err != nil {
		return fmt.Errorf("stat the node's netns: %w", err)
	}
	if a.Dev == b.Dev && a.Ino == b.Ino {
		return fmt.Errorf("%w: %s is the plugin's own network namespace (the node's), not a container's", ErrNetNS, path)
	}
	return nil
}

func familyOf(ip net.IP) int {
	if ip.To4() != nil {
		return netlink.FAMILY_V4
	}
	return netlink.FAMILY_V6
}

// hostPrefix returns ip as a single-address prefix (/32 or /128).
func hostPrefix(ip net.IP) *net.IPNet {
	if v4 := ip.To4(); v4 != nil {
		return &net.IPNet{IP: v4, Mask: net.CIDRMask(32, 32)}
	}
	return &net.IPNet{IP: ip, Mask: net.CIDRMask(128, 128)}
}

// addrFlags are the flags of every address vethroute assigns: no prefix
// route (vethroute installs exactly the routes it wants) and, for IPv6, no
// duplicate address detection, which would leave the address tentative and
// unusable for a second or more. The address comes from the allocator, which
// already guarantees it is unique.
func addrFlags(ip net.IP) int {
	f := unix.IFA_F_NOPREFIXROUTE
	if ip.To4() == nil {
		f |= unix.IFA_F_NODAD
	}
	return f
}

func isExist(err error) bool { return errors.Is(err, unix.EEXIST) }

// isNotFound reports a link that is already gone, in any of the forms the
// kernel and netlink give: a failed lookup by name, or ENODEV (or ENOENT)
// from an operation on an index that vanished meanwhile, for example
// deleted by the agent's reaper after the plugin stopped waiting for it.
func isNotFound(err error) bool {
	return errors.As(err, new(netlink.LinkNotFoundError)) || errors.Is(err, unix.ENODEV) || errors.Is(err, unix.ENOENT)
}
