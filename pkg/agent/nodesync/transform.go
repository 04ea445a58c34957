package nodesync

import (
	"net/netip"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/cache"
)

// StripNode is the Node informer's transform: it keeps of a Node only what
// the controller reads (the name, and the UID and resourceVersion an Event
// refers to; spec.podCIDR(s); the IP addresses of status.addresses) and
// drops the rest before the object enters the cache. A Node is mostly
// images, conditions, labels, annotations and managedFields, and every
// agent caches every Node, so whole objects would cost memory in
// proportion to the cluster on every node. Anything that is not a Node
// passes unchanged.
func StripNode(obj any) (any, error) {
	switch o := obj.(type) {
	case *corev1.Node:
		return stripNode(o), nil
	case cache.DeletedFinalStateUnknown:
		if n, ok := o.Obj.(*corev1.Node); ok {
			o.Obj = stripNode(n)
		}
		return o, nil
	}
	return obj, nil
}

func stripNode(n *corev1.Node) *corev1.Node {
	out := &corev1.Node{
		TypeMeta: n.TypeMeta,
		ObjectMeta: metav1.ObjectMeta{
			Name:            n.Name,
			UID:             n.UID,
			ResourceVersion: n.ResourceVersion,
		},
		Spec: corev1.NodeSpec{PodCIDR: n.Spec.PodCIDR},
		// The runtime's version picks the conflist's cniVersion
		// (cniconf's --cni-version=auto).
		Status: corev1.NodeStatus{NodeInfo: corev1.NodeSystemInfo{ContainerRuntimeVersion: n.Status.NodeInfo.ContainerRuntimeVersion}},
	}
	if len(n.Spec.PodCIDRs) > 0 {
		out.Spec.PodCIDRs = append([]string(nil), n.Spec.PodCIDRs...)
	}
	// Only addresses that are IPs take part in routing (InternalIPs as
	// gateways, every IP in the check that no pod CIDR covers a node);
	// host and DNS names are never read.
	for _, a := range n.Status.Addresses {
		if _, err := netip.ParseAddr(a.Address); err == nil {
			out.Status.Addresses = append(out.Status.Addresses, corev1.NodeAddress{Type: a.Type, Address: a.Address})
		}
	}
	return out
}
