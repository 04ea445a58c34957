package nodesync

import (
	"fmt"
	"net/netip"

	corev1 "k8s.io/api/core/v1"

	"github.com/vethroute/vethroute/pkg/netconf"
	"github.com/vethroute/vethroute/pkg/uplink"
)

// FindUplinks returns the interfaces of this node's network namespace that
// carry addrs, leaving out the addresses no interface carries
// ((*uplink.Finder).Find in production).
type FindUplinks func(addrs ...netip.Addr) ([]uplink.Uplink, error)

// mtuChoice is the pods' MTU for the conflist and where it comes from.
type mtuChoice struct {
	// MTU is written to the conflist; 0 leaves the plugin's default.
	MTU int
	// From is the interface whose MTU was taken; nil when MTU is the
	// override or the default.
	From *uplink.Uplink
	// Problem says why the choice is not the MTU of every InternalIP's
	// interface; empty when nothing is amiss.
	Problem string
}

// chooseMTU picks the pods' MTU: override when it is set, else the MTU of
// the interfaces that carry the node's InternalIPs (addrs), as found. Pod
// traffic is routed without encapsulation, so a pod may send what the
// uplink sends; a pod has one interface for both families, so a dual-stack
// node takes the smaller of its two uplinks. An MTU the plugin would refuse
// (outside netconf's limits, or below IPv6's minimum when the node has an
// IPv6 pod CIDR) leaves the plugin's default rather than a conflist no pod
// could start with.
func chooseMTU(override int, addrs []netip.Addr, found []uplink.Uplink, ipv6PodCIDR bool) mtuChoice {
	if override != 0 {
		return mtuChoice{MTU: override}
	}
	if len(addrs) == 0 {
		return mtuChoice{Problem: "the node has no InternalIP; pods get the plugin's default MTU"}
	}
	if len(found) == 0 {
		return mtuChoice{Problem: fmt.Sprintf("no interface carries InternalIP %s; pods get the plugin's default MTU", joinAddrs(addrs))}
	}
	from := found[0]
	for _, u := range found[1:] {
		if u.MTU < from.MTU {
			from = u
		}
	}
	switch {
	case from.MTU < netconf.MinMTU || from.MTU > netconf.MaxMTU:
		return mtuChoice{Problem: fmt.Sprintf("interface %s carrying InternalIP %s has MTU %d, outside the plugin's %d..%d; pods get the plugin's default MTU",
			from.Name, from.Addr, from.MTU, netconf.MinMTU, netconf.MaxMTU)}
	case ipv6PodCIDR && from.MTU < netconf.MinMTU6:
		return mtuChoice{Problem: fmt.Sprintf("interface %s carrying InternalIP %s has MTU %d, below IPv6's minimum %d for the node's IPv6 pod CIDR; pods get the plugin's default MTU",
			from.Name, from.Addr, from.MTU, netconf.MinMTU6)}
	}
	c := mtuChoice{MTU: from.MTU, From: &from}
	if len(found) < len(addrs) {
		var missing []netip.Addr
		for _, a := range addrs {
			if !carried(found, a) {
				missing = append(missing, a)
			}
		}
		c.Problem = fmt.Sprintf("no interface carries InternalIP %s; pods get the MTU of %s alone", joinAddrs(missing), from.Name)
	}
	return c
}

func carried(found []uplink.Uplink, a netip.Addr) bool {
	for _, u := range found {
		if u.Addr == a.Unmap() {
			return true
		}
	}
	return false
}

func joinAddrs(addrs []netip.Addr) string {
	s := ""
	for i, a := range addrs {
		if i > 0 {
			s += " or "
		}
		s += a.String()
	}
	return s
}

// podMTU chooses the MTU for this node's conflist: ConfBase.MTU when set,
// else from the interfaces that carry the node's InternalIPs, looked up
// again on every reconcile so that a changed uplink MTU reaches new pods.
func (c *Controller) podMTU(self *corev1.Node, ipv6PodCIDR bool) (int, error) {
	if c.cfg.ConfBase.MTU != 0 || c.cfg.FindUplinks == nil {
		return c.cfg.ConfBase.MTU, nil
	}
	var addrs []netip.Addr
	v4, v6 := internalIPs(self)
	for _, a := range []netip.Addr{v4, v6} {
		if a.IsValid() {
			addrs = append(addrs, a)
		}
	}
	var found []uplink.Uplink
	if len(addrs) > 0 {
		var err error
		if found, err = c.cfg.FindUplinks(addrs...); err != nil {
			return 0, fmt.Errorf("find the interface of InternalIP %s: %w", joinAddrs(addrs), err)
		}
	}
	choice := chooseMTU(0, addrs, found, ipv6PodCIDR)
	c.logMTU(choice)
	return choice.MTU, nil
}

// logMTU logs what changed since the last choice: a detected uplink MTU at
// info, a problem once at warn (not on every resync) and its end at info.
func (c *Controller) logMTU(choice mtuChoice) {
	mtu := choice.MTU
	if mtu == 0 {
		mtu = netconf.DefaultMTU
	}
	if choice.Problem != c.mtuProblem {
		if choice.Problem != "" {
			c.log.Warn("uplink MTU detection", "problem", choice.Problem, "mtu", mtu)
		} else {
			c.log.Info("uplink MTU problem resolved", "problem", c.mtuProblem)
		}
		c.mtuProblem = choice.Problem
	}
	prev := c.uplink
	c.uplink = choice.From
	switch {
	case choice.From == nil:
	case prev == nil:
		c.log.Info("uplink MTU detected", "mtu", mtu, "interface", choice.From.Name, "address", choice.From.Addr)
	case prev.MTU != choice.From.MTU:
		c.log.Info("uplink MTU changed", "old", prev.MTU, "new", choice.From.MTU, "interface", choice.From.Name)
	}
}
