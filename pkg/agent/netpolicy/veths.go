package netpolicy

import (
	"context"
	"fmt"
	"net/netip"

	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/vethroute/vethroute/pkg/routing"
)

// VethResolver maps the addresses of this node's pods to their host veths.
type VethResolver interface {
	Veths() (map[netip.Addr]string, error)
}

// Netlink resolves host veths from the node's routing table: the plugin
// routes each pod address to the pod's host veth (vethroute's device group)
// with its own route protocol. The Pod object does not carry the sandbox
// ID that the veth name derives from, so the route is the link between the
// two.
type Netlink struct {
	h netlinksafe.Handle
}

// NewNetlink opens a netlink handle in the calling thread's network
// namespace (the node's).
func NewNetlink() (*Netlink, error) {
	h, err := netlinksafe.NewHandle(unix.NETLINK_ROUTE)
	if err != nil {
		return nil, fmt.Errorf("open netlink: %w", err)
	}
	return &Netlink{h: h}, nil
}

// Close releases the handle.
func (n *Netlink) Close() { n.h.Close() }

// Veths lists the plugin's routes to pod addresses and the veths they use.
func (n *Netlink) Veths() (map[netip.Addr]string, error) {
	links, err := n.h.LinkList()
	if err != nil {
		return nil, fmt.Errorf("list links: %w", err)
	}
	names := map[int]string{}
	for _, l := range links {
		if a := l.Attrs(); a.Group == routing.LinkGroup {
			names[a.Index] = a.Name
		}
	}
	out := map[netip.Addr]string{}
	routes, err := n.h.RouteListFiltered(netlink.FAMILY_ALL, &netlink.Route{Protocol: routing.RouteProtocol}, netlink.RT_FILTER_PROTOCOL)
	if err != nil {
		return nil, fmt.Errorf("list routes: %w", err)
	}
	for _, r := range routes {
		name, ok := names[r.LinkIndex]
		if !ok || r.Dst == nil {
			continue
		}
		ones, bits := r.Dst.Mask.Size()
		ip, ok := netip.AddrFromSlice(r.Dst.IP)
		if !ok || ones != bits {
			continue
		}
		out[ip.Unmap()] = name
	}
	return out, nil
}

// Watch calls changed whenever the plugin adds or removes a route to a
// pod, until ctx ends, so a pod wired after its IPs reached the API gets
// its chains at once.
func Watch(ctx context.Context, changed func(), onErr func(error)) error {
	ch := make(chan netlink.RouteUpdate, 64)
	done := make(chan struct{})
	if err := netlink.RouteSubscribeWithOptions(ch, done, netlink.RouteSubscribeOptions{ErrorCallback: onErr}); err != nil {
		return fmt.Errorf("subscribe to route changes: %w", err)
	}
	go func() {
		<-ctx.Done()
		close(done)
	}()
	go func() {
		for u := range ch {
			if u.Protocol == routing.RouteProtocol {
				changed()
			}
		}
	}()
	return nil
}
