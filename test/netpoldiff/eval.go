package netpoldiff

import (
	"net/netip"
	"slices"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// Cluster is the state a verdict depends on: every namespace, every pod
// (with its addresses in status.podIPs and its node in spec.nodeName),
// every node (its status.addresses) and every policy. The evaluator reads
// it as the API reference describes the objects; it never consults the
// engine under test.
type Cluster struct {
	Namespaces []corev1.Namespace
	Pods       []corev1.Pod
	Nodes      []corev1.Node
	Policies   []networkingv1.NetworkPolicy
}

// Packet is the first packet of a connection: addresses, protocol and
// destination port.
type Packet struct {
	Src, Dst netip.Addr
	Protocol corev1.Protocol
	Port     int32
}

// Allowed reports whether the connection may be made in a cluster that
// enforces both ends: the source pod's egress and the destination pod's
// ingress must both admit it.
func (c *Cluster) Allowed(p Packet) bool {
	return c.EgressAllowed(p) && c.IngressAllowed(p)
}

// EgressAllowed reports whether the source's side admits the packet: a
// source that is no pod, or a pod no policy of type Egress selects, is not
// isolated for egress; an isolated pod may send what at least one egress
// rule of a policy selecting it allows (policies are additive).
func (c *Cluster) EgressAllowed(p Packet) bool {
	src := c.PodByIP(p.Src)
	if src == nil {
		return true
	}
	isolated := false
	for i := range c.Policies {
		np := &c.Policies[i]
		if np.Namespace != src.Namespace || !hasType(np, networkingv1.PolicyTypeEgress) || !selects(&np.Spec.PodSelector, src.Labels) {
			continue
		}
		isolated = true
		for _, r := range np.Spec.Egress {
			if c.ruleAdmits(np, r.To, r.Ports, p.Dst, p, c.PodByIP(p.Dst)) {
				return true
			}
		}
	}
	return !isolated
}

// IngressAllowed reports whether the destination's side admits the packet,
// with the same rules as EgressAllowed mirrored: the peer is the source and
// named ports are the destination pod's. Traffic from the pod's own node
// is always admitted: the concept page lists blocking it among what
// NetworkPolicy cannot do.
func (c *Cluster) IngressAllowed(p Packet) bool {
	dst := c.PodByIP(p.Dst)
	if dst == nil || c.isNodeOf(p.Src, dst) {
		return true
	}
	isolated := false
	for i := range c.Policies {
		np := &c.Policies[i]
		if np.Namespace != dst.Namespace || !hasType(np, networkingv1.PolicyTypeIngress) || !selects(&np.Spec.PodSelector, dst.Labels) {
			continue
		}
		isolated = true
		for _, r := range np.Spec.Ingress {
			if c.ruleAdmits(np, r.From, r.Ports, p.Src, p, dst) {
				return true
			}
		}
	}
	return !isolated
}

// ruleAdmits is one rule: its peers (empty: every address) and its ports
// (empty: every port) must both match. peer is the address on the far side
// of the policy's pod; portOwner is the destination pod, whose container
// ports give named ports their numbers (nil when the destination is no pod).
func (c *Cluster) ruleAdmits(np *networkingv1.NetworkPolicy, peers []networkingv1.NetworkPolicyPeer, ports []networkingv1.NetworkPolicyPort, peer netip.Addr, p Packet, portOwner *corev1.Pod) bool {
	return c.peersMatch(np.Namespace, peers, peer) && portsMatch(ports, p, portOwner)
}

func (c *Cluster) peersMatch(policyNS string, peers []networkingv1.NetworkPolicyPeer, addr netip.Addr) bool {
	if len(peers) == 0 {
		return true
	}
	pod := c.PodByIP(addr)
	for _, peer := range peers {
		if c.peerMatches(policyNS, peer, addr, pod) {
			return true
		}
	}
	return false
}

// peerMatches is one NetworkPolicyPeer. podSelector alone selects pods of
// the policy's namespace, namespaceSelector alone every pod of the selected
// namespaces, both together the selected pods of the selected namespaces.
// ipBlock matches by address, pod or not: the reference advises against
// pod addresses in ipBlock but does not exclude them, and the upstream
// suite relies on them matching.
func (c *Cluster) peerMatches(policyNS string, peer networkingv1.NetworkPolicyPeer, addr netip.Addr, pod *corev1.Pod) bool {
	if peer.IPBlock != nil {
		return inBlock(peer.IPBlock, addr)
	}
	if peer.PodSelector == nil && peer.NamespaceSelector == nil {
		return false // invalid: a peer sets at least one field
	}
	if pod == nil {
		return false
	}
	if peer.NamespaceSelector == nil {
		if pod.Namespace != policyNS {
			return false
		}
	} else {
		ns := c.namespace(pod.Namespace)
		if ns == nil || !selects(peer.NamespaceSelector, ns.Labels) {
			return false
		}
	}
	return peer.PodSelector == nil || selects(peer.PodSelector, pod.Labels)
}

func inBlock(b *networkingv1.IPBlock, addr netip.Addr) bool {
	cidr, err := netip.ParsePrefix(b.CIDR)
	if err != nil || !cidr.Contains(addr) {
		return false
	}
	for _, e := range b.Except {
		ex, err := netip.ParsePrefix(e)
		if err != nil || ex.Contains(addr) {
			// An unparsable except cannot be honoured; the API server
			// rejects it, and matching nothing is the safe reading.
			return false
		}
	}
	return true
}

// portsMatch: an empty list allows every port of every protocol; an entry
// with no port allows every port of its protocol (TCP when unset); a
// number, with endPort a range of numbers; a name, the number of a
// container port of the destination pod with that name and protocol.
func portsMatch(ports []networkingv1.NetworkPolicyPort, p Packet, dst *corev1.Pod) bool {
	if len(ports) == 0 {
		return true
	}
	for _, np := range ports {
		proto := corev1.ProtocolTCP
		if np.Protocol != nil {
			proto = *np.Protocol
		}
		if proto != p.Protocol {
			continue
		}
		if np.Port == nil {
			return true
		}
		if np.Port.Type == intstr.Int {
			lo, hi := np.Port.IntVal, np.Port.IntVal
			if np.EndPort != nil {
				hi = *np.EndPort
			}
			if p.Port >= lo && p.Port <= hi {
				return true
			}
			continue
		}
		if np.EndPort == nil && namedPort(dst, np.Port.StrVal, proto) == p.Port && p.Port != 0 {
			return true
		}
	}
	return false
}

// namedPort is the number of pod's container port called name for proto,
// or 0 when there is none (or no pod).
func namedPort(pod *corev1.Pod, name string, proto corev1.Protocol) int32 {
	if pod == nil {
		return 0
	}
	for _, ct := range pod.Spec.Containers {
		for _, cp := range ct.Ports {
			cpProto := cp.Protocol
			if cpProto == "" {
				cpProto = corev1.ProtocolTCP
			}
			if cp.Name == name && cpProto == proto {
				return cp.ContainerPort
			}
		}
	}
	return 0
}

// hasType is the policy's effective policyTypes: as listed, or when the
// list is empty, Ingress always and Egress if the policy has egress rules.
func hasType(np *networkingv1.NetworkPolicy, t networkingv1.PolicyType) bool {
	if len(np.Spec.PolicyTypes) > 0 {
		return slices.Contains(np.Spec.PolicyTypes, t)
	}
	return t == networkingv1.PolicyTypeIngress || len(np.Spec.Egress) > 0
}

// selects applies a label selector; an empty one selects everything, an
// invalid one nothing.
func selects(sel *metav1.LabelSelector, l map[string]string) bool {
	s, err := metav1.LabelSelectorAsSelector(sel)
	if err != nil {
		return false
	}
	return s.Matches(labels.Set(l))
}

// PodByIP returns the pod that has addr among its status.podIPs, nil when
// the address is no pod's. Host-network pods share their node's address;
// the concept page leaves their treatment to the implementation, between
// telling them apart and treating their traffic as the node's. This
// evaluator takes the second reading (selectors never pick them, ipBlock
// may), which is the engine's documented one.
func (c *Cluster) PodByIP(addr netip.Addr) *corev1.Pod {
	for i := range c.Pods {
		pod := &c.Pods[i]
		if pod.Spec.HostNetwork {
			continue
		}
		for _, ip := range pod.Status.PodIPs {
			if a, err := netip.ParseAddr(ip.IP); err == nil && a.Unmap() == addr.Unmap() {
				return pod
			}
		}
	}
	return nil
}

// isNodeOf reports whether addr is an address of the node pod runs on.
func (c *Cluster) isNodeOf(addr netip.Addr, pod *corev1.Pod) bool {
	for _, n := range c.Nodes {
		if n.Name != pod.Spec.NodeName || n.Name == "" {
			continue
		}
		for _, na := range n.Status.Addresses {
			if a, err := netip.ParseAddr(na.Address); err == nil && a.Unmap() == addr.Unmap() {
				return true
			}
		}
	}
	return false
}

func (c *Cluster) namespace(name string) *corev1.Namespace {
	for i := range c.Namespaces {
		if c.Namespaces[i].Name == name {
			return &c.Namespaces[i]
		}
	}
	return nil
}
