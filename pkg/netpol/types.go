package netpol

import (
	"net/netip"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
)

// Table is the nftables table (family inet) that holds every policy rule;
// nothing else in the ruleset is touched.
const Table = "vethroute-netpol"

// Namespace is what policies select a namespace by.
type Namespace struct {
	Name   string
	Labels map[string]string
}

// Pod is what policies need of a pod: its labels and addresses for peer
// selection, its container ports for named ports and, for the pods on this
// node, the host end of its veth, by which its traffic is matched.
type Pod struct {
	Namespace, Name string
	Labels          map[string]string
	IPs             []netip.Addr
	Ports           []corev1.ContainerPort
	// HostVeth is the node-side interface of the pod's veth; "" when the
	// pod is not on this node or not wired yet. Only pods with a HostVeth
	// get chains.
	HostVeth string
	// HostNetwork pods are never policy targets, and selectors never pick
	// them as peers: their traffic carries the node's address and counts as
	// the node's (reachable through ipBlock only).
	HostNetwork bool
}

// State is everything the table is computed from: every namespace, every
// running pod of the cluster (peers) and every NetworkPolicy.
type State struct {
	Namespaces []Namespace
	Pods       []Pod
	Policies   []*networkingv1.NetworkPolicy
}
