package netpoldiff

import (
	"net/netip"
	"testing"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

const (
	tcp  = corev1.ProtocolTCP
	udp  = corev1.ProtocolUDP
	sctp = corev1.ProtocolSCTP
)

var (
	ingressOnly = []networkingv1.PolicyType{networkingv1.PolicyTypeIngress}
	egressOnly  = []networkingv1.PolicyType{networkingv1.PolicyTypeEgress}
	bothTypes   = []networkingv1.PolicyType{networkingv1.PolicyTypeIngress, networkingv1.PolicyTypeEgress}
)

// docsCluster is the cluster of the examples in the API reference and the
// NetworkPolicy concept page: a db pod in default, a frontend beside it, a
// client in a namespace labelled project=myproject and one in another.
func docsCluster(policies ...networkingv1.NetworkPolicy) *Cluster {
	c := &Cluster{
		Namespaces: []corev1.Namespace{
			namespace("default", nil),
			namespace("myproject", map[string]string{"project": "myproject"}),
			namespace("other", map[string]string{"user": "alice"}),
		},
		Pods: []corev1.Pod{
			pod("default", "db", map[string]string{"role": "db"}, []corev1.ContainerPort{
				{Name: "redis", ContainerPort: 6379},
				{Name: "dns", ContainerPort: 53, Protocol: udp},
				{Name: "dns-tcp", ContainerPort: 5353, Protocol: tcp},
			}, "10.1.0.10", "fd00:1::10"),
			pod("default", "frontend", map[string]string{"role": "frontend"}, nil, "10.1.0.11", "fd00:1::11"),
			pod("myproject", "worker", map[string]string{"role": "worker"}, nil, "10.1.0.20"),
			pod("other", "frontend", map[string]string{"role": "frontend"}, nil, "10.1.0.30"),
			pod("other", "client", map[string]string{"role": "client"}, nil, "10.1.0.31"),
			{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "hostnet", Labels: map[string]string{"role": "db"}},
				Spec: corev1.PodSpec{HostNetwork: true}, Status: corev1.PodStatus{PodIPs: []corev1.PodIP{{IP: "10.9.9.9"}}}},
		},
		Nodes:    []corev1.Node{node("node-a", "172.30.0.1", "fd00:30::1"), node("node-b", "172.30.0.2")},
		Policies: policies,
	}
	for i := range c.Pods {
		c.Pods[i].Spec.NodeName = "node-a"
	}
	c.Pods[4].Spec.NodeName = "node-b" // other/client
	return c
}

// docsExample is the test-network-policy of the concept page.
var docsExample = policy("default", "test-network-policy", networkingv1.NetworkPolicySpec{
	PodSelector: *sel("role", "db"),
	PolicyTypes: bothTypes,
	Ingress: []networkingv1.NetworkPolicyIngressRule{{
		From: []networkingv1.NetworkPolicyPeer{
			block("172.17.0.0/16", "172.17.1.0/24"),
			{NamespaceSelector: sel("project", "myproject")},
			{PodSelector: sel("role", "frontend")},
		},
		Ports: []networkingv1.NetworkPolicyPort{numPort(tcp, 6379)},
	}},
	Egress: []networkingv1.NetworkPolicyEgressRule{{
		To:    []networkingv1.NetworkPolicyPeer{block("10.0.0.0/24")},
		Ports: []networkingv1.NetworkPolicyPort{numPort(tcp, 5978)},
	}},
})

func pkt(src, dst string, proto corev1.Protocol, port int32) Packet {
	return Packet{Src: netip.MustParseAddr(src), Dst: netip.MustParseAddr(dst), Protocol: proto, Port: port}
}

func TestEvaluator(t *testing.T) {
	type check struct {
		p    Packet
		want bool
	}
	tests := []struct {
		name     string
		policies []networkingv1.NetworkPolicy
		checks   []check
	}{
		{name: "no policy: everything allowed", checks: []check{
			{pkt("10.1.0.31", "10.1.0.10", tcp, 1), true},
			{pkt("172.17.1.1", "10.1.0.10", udp, 53), true},
			{pkt("10.1.0.10", "192.168.0.1", sctp, 9), true},
		}},
		{name: "docs example", policies: []networkingv1.NetworkPolicy{docsExample}, checks: []check{
			{pkt("172.17.0.5", "10.1.0.10", tcp, 6379), true},  // ipBlock
			{pkt("172.17.1.5", "10.1.0.10", tcp, 6379), false}, // except
			{pkt("172.18.0.5", "10.1.0.10", tcp, 6379), false}, // outside the block
			{pkt("10.1.0.11", "10.1.0.10", tcp, 6379), true},   // podSelector, same namespace
			{pkt("10.1.0.11", "10.1.0.10", tcp, 6380), false},  // other port
			{pkt("10.1.0.11", "10.1.0.10", udp, 6379), false},  // other protocol
			{pkt("10.1.0.20", "10.1.0.10", tcp, 6379), true},   // namespaceSelector
			{pkt("10.1.0.30", "10.1.0.10", tcp, 6379), false},  // frontend of another namespace
			{pkt("10.1.0.10", "10.0.0.5", tcp, 5978), true},    // egress rule
			{pkt("10.1.0.10", "10.0.0.5", tcp, 5979), false},
			{pkt("10.1.0.10", "10.0.1.5", tcp, 5978), false},
			{pkt("10.1.0.10", "10.1.0.11", tcp, 80), false},    // db is isolated for egress
			{pkt("10.1.0.11", "10.1.0.31", udp, 53), true},     // frontend is not selected
			{pkt("fd00:1::11", "fd00:1::10", tcp, 6379), true}, // IPv6 address of the same pods
			{pkt("10.9.9.9", "10.1.0.10", tcp, 6379), false},   // host network is no pod: not role=frontend
		}},
		{name: "namespaceSelector and podSelector in one peer: AND", policies: []networkingv1.NetworkPolicy{
			policy("default", "and", networkingv1.NetworkPolicySpec{PodSelector: *sel("role", "db"), Ingress: []networkingv1.NetworkPolicyIngressRule{{
				From: []networkingv1.NetworkPolicyPeer{{NamespaceSelector: sel("user", "alice"), PodSelector: sel("role", "client")}},
			}}}),
		}, checks: []check{
			{pkt("10.1.0.31", "10.1.0.10", tcp, 1), true},
			{pkt("10.1.0.30", "10.1.0.10", tcp, 1), false},
			{pkt("10.1.0.11", "10.1.0.10", tcp, 1), false},
		}},
		{name: "namespaceSelector and podSelector as two peers: OR", policies: []networkingv1.NetworkPolicy{
			policy("default", "or", networkingv1.NetworkPolicySpec{PodSelector: *sel("role", "db"), Ingress: []networkingv1.NetworkPolicyIngressRule{{
				From: []networkingv1.NetworkPolicyPeer{{NamespaceSelector: sel("user", "alice")}, {PodSelector: sel("role", "client")}},
			}}}),
		}, checks: []check{
			{pkt("10.1.0.31", "10.1.0.10", tcp, 1), true},
			{pkt("10.1.0.30", "10.1.0.10", tcp, 1), true}, // any pod of alice's namespace
			{pkt("10.1.0.11", "10.1.0.10", tcp, 1), false},
			{pkt("10.1.0.20", "10.1.0.10", tcp, 1), false},
		}},
		{name: "empty namespaceSelector: every namespace", policies: []networkingv1.NetworkPolicy{
			policy("default", "all-ns", networkingv1.NetworkPolicySpec{PodSelector: *sel("role", "db"), Ingress: []networkingv1.NetworkPolicyIngressRule{{
				From: []networkingv1.NetworkPolicyPeer{{NamespaceSelector: &metav1.LabelSelector{}, PodSelector: sel("role", "frontend")}},
			}}}),
		}, checks: []check{
			{pkt("10.1.0.30", "10.1.0.10", tcp, 1), true},
			{pkt("10.1.0.11", "10.1.0.10", tcp, 1), true},
			{pkt("10.1.0.31", "10.1.0.10", tcp, 1), false},
			{pkt("172.17.0.1", "10.1.0.10", tcp, 1), false}, // no pod
		}},
		{name: "default deny ingress", policies: []networkingv1.NetworkPolicy{
			policy("default", "deny", networkingv1.NetworkPolicySpec{PolicyTypes: ingressOnly}),
		}, checks: []check{
			{pkt("10.1.0.11", "10.1.0.10", tcp, 80), false},
			{pkt("10.1.0.20", "10.1.0.11", udp, 53), false},
			{pkt("10.1.0.10", "10.1.0.20", tcp, 80), true}, // egress untouched, myproject open
		}},
		{name: "empty policy without types isolates ingress only", policies: []networkingv1.NetworkPolicy{
			policy("default", "deny", networkingv1.NetworkPolicySpec{}),
		}, checks: []check{
			{pkt("10.1.0.11", "10.1.0.10", tcp, 80), false},
			{pkt("10.1.0.10", "10.1.0.20", tcp, 80), true},
		}},
		{name: "allow all ingress beside a deny", policies: []networkingv1.NetworkPolicy{
			policy("default", "deny", networkingv1.NetworkPolicySpec{PolicyTypes: ingressOnly}),
			policy("default", "allow", networkingv1.NetworkPolicySpec{Ingress: []networkingv1.NetworkPolicyIngressRule{{}}}),
		}, checks: []check{
			{pkt("10.1.0.31", "10.1.0.10", sctp, 9), true},
			{pkt("172.17.1.1", "10.1.0.11", udp, 1), true},
		}},
		{name: "default deny egress", policies: []networkingv1.NetworkPolicy{
			policy("default", "deny", networkingv1.NetworkPolicySpec{PolicyTypes: egressOnly}),
		}, checks: []check{
			{pkt("10.1.0.10", "10.1.0.11", tcp, 80), false},
			{pkt("10.1.0.10", "8.8.8.8", udp, 53), false},
			{pkt("10.1.0.20", "10.1.0.10", tcp, 80), true}, // ingress untouched
		}},
		{name: "allow all egress", policies: []networkingv1.NetworkPolicy{
			policy("default", "deny", networkingv1.NetworkPolicySpec{PolicyTypes: bothTypes}),
			policy("default", "allow", networkingv1.NetworkPolicySpec{Egress: []networkingv1.NetworkPolicyEgressRule{{}}, PolicyTypes: egressOnly}),
		}, checks: []check{
			{pkt("10.1.0.10", "10.1.0.20", tcp, 80), true},
			{pkt("10.1.0.10", "10.1.0.11", tcp, 80), false}, // the frontend denies ingress
		}},
		{name: "egress rules imply the Egress type", policies: []networkingv1.NetworkPolicy{
			policy("default", "implied", networkingv1.NetworkPolicySpec{PodSelector: *sel("role", "db"),
				Egress: []networkingv1.NetworkPolicyEgressRule{{To: []networkingv1.NetworkPolicyPeer{block("10.0.0.0/8")}}}}),
		}, checks: []check{
			{pkt("10.1.0.10", "10.1.0.20", tcp, 80), true},
			{pkt("10.1.0.10", "172.17.0.1", tcp, 80), false},
			{pkt("10.1.0.11", "10.1.0.10", tcp, 80), false}, // and Ingress, with no rule
		}},
		{name: "ingress rules ignored without the Ingress type", policies: []networkingv1.NetworkPolicy{
			policy("default", "egress-only", networkingv1.NetworkPolicySpec{PodSelector: *sel("role", "db"), PolicyTypes: egressOnly,
				Ingress: []networkingv1.NetworkPolicyIngressRule{{From: []networkingv1.NetworkPolicyPeer{block("172.17.0.0/16")}}}}),
		}, checks: []check{
			{pkt("10.1.0.11", "10.1.0.10", tcp, 80), true},
			{pkt("10.1.0.10", "10.1.0.11", tcp, 80), false},
		}},
		{name: "endPort range", policies: []networkingv1.NetworkPolicy{
			policy("default", "range", networkingv1.NetworkPolicySpec{PodSelector: *sel("role", "db"), PolicyTypes: egressOnly,
				Egress: []networkingv1.NetworkPolicyEgressRule{{To: []networkingv1.NetworkPolicyPeer{block("10.0.0.0/24")},
					Ports: []networkingv1.NetworkPolicyPort{rangePort(tcp, 32000, 32768)}}}}),
		}, checks: []check{
			{pkt("10.1.0.10", "10.0.0.1", tcp, 32000), true},
			{pkt("10.1.0.10", "10.0.0.1", tcp, 32768), true},
			{pkt("10.1.0.10", "10.0.0.1", tcp, 32500), true},
			{pkt("10.1.0.10", "10.0.0.1", tcp, 31999), false},
			{pkt("10.1.0.10", "10.0.0.1", tcp, 32769), false},
			{pkt("10.1.0.10", "10.0.0.1", udp, 32000), false},
		}},
		{name: "named ports are the destination pod's", policies: []networkingv1.NetworkPolicy{
			policy("default", "named", networkingv1.NetworkPolicySpec{PodSelector: *sel("role", "db"), Ingress: []networkingv1.NetworkPolicyIngressRule{{
				Ports: []networkingv1.NetworkPolicyPort{namedPolicyPort(tcp, "redis"), namedPolicyPort(udp, "dns"), namedPolicyPort(udp, "dns-tcp")},
			}}}),
		}, checks: []check{
			{pkt("10.1.0.31", "10.1.0.10", tcp, 6379), true},
			{pkt("10.1.0.31", "10.1.0.10", tcp, 6380), false},
			{pkt("10.1.0.31", "10.1.0.10", udp, 53), true},
			{pkt("10.1.0.31", "10.1.0.10", tcp, 53), false},   // dns is a UDP port
			{pkt("10.1.0.31", "10.1.0.10", udp, 5353), false}, // dns-tcp is TCP: no UDP port of that name
		}},
		{name: "egress named port resolved at the destination", policies: []networkingv1.NetworkPolicy{
			policy("default", "named-egress", networkingv1.NetworkPolicySpec{PodSelector: *sel("role", "frontend"), PolicyTypes: egressOnly,
				Egress: []networkingv1.NetworkPolicyEgressRule{{Ports: []networkingv1.NetworkPolicyPort{namedPolicyPort(tcp, "redis")}}}}),
		}, checks: []check{
			{pkt("10.1.0.11", "10.1.0.10", tcp, 6379), true},
			{pkt("10.1.0.11", "10.1.0.20", tcp, 6379), false}, // worker has no port named redis
			{pkt("10.1.0.11", "10.0.0.1", tcp, 6379), false},  // no pod, no named port
		}},
		{name: "port without number, protocol defaults to TCP", policies: []networkingv1.NetworkPolicy{
			policy("default", "proto", networkingv1.NetworkPolicySpec{PodSelector: *sel("role", "db"), Ingress: []networkingv1.NetworkPolicyIngressRule{{
				Ports: []networkingv1.NetworkPolicyPort{{Protocol: protoPtr(udp)}, {Port: ptrInt(80)}},
			}}}),
		}, checks: []check{
			{pkt("10.1.0.31", "10.1.0.10", udp, 12345), true},
			{pkt("10.1.0.31", "10.1.0.10", tcp, 80), true},
			{pkt("10.1.0.31", "10.1.0.10", udp, 80), true},
			{pkt("10.1.0.31", "10.1.0.10", tcp, 81), false},
			{pkt("10.1.0.31", "10.1.0.10", sctp, 80), false},
		}},
		{name: "IPv6 ipBlock with except; families never cross", policies: []networkingv1.NetworkPolicy{
			policy("default", "v6", networkingv1.NetworkPolicySpec{PodSelector: *sel("role", "db"), Ingress: []networkingv1.NetworkPolicyIngressRule{{
				From: []networkingv1.NetworkPolicyPeer{block("fd00::/16", "fd00:1::11/128"), block("0.0.0.0/0", "10.1.0.0/24")},
			}}}),
		}, checks: []check{
			{pkt("fd00:2::1", "fd00:1::10", tcp, 1), true},
			{pkt("fd00:1::11", "fd00:1::10", tcp, 1), false}, // except
			{pkt("fe80::1", "fd00:1::10", tcp, 1), false},
			{pkt("10.1.0.11", "10.1.0.10", tcp, 1), false}, // except of the v4 block
			{pkt("192.168.1.1", "10.1.0.10", tcp, 1), true},
		}},
		{name: "matchExpressions", policies: []networkingv1.NetworkPolicy{
			policy("default", "expr", networkingv1.NetworkPolicySpec{
				PodSelector: metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "role", Operator: metav1.LabelSelectorOpIn, Values: []string{"db", "cache"}}}},
				Ingress: []networkingv1.NetworkPolicyIngressRule{{From: []networkingv1.NetworkPolicyPeer{{
					NamespaceSelector: &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "project", Operator: metav1.LabelSelectorOpDoesNotExist}}},
					PodSelector:       &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "role", Operator: metav1.LabelSelectorOpNotIn, Values: []string{"client"}}}},
				}}}},
			}),
		}, checks: []check{
			{pkt("10.1.0.30", "10.1.0.10", tcp, 1), true},  // other has no project label, frontend is not client
			{pkt("10.1.0.31", "10.1.0.10", tcp, 1), false}, // client
			{pkt("10.1.0.20", "10.1.0.10", tcp, 1), false}, // myproject has the label
			{pkt("10.1.0.11", "10.1.0.10", tcp, 1), true},
		}},
		{name: "policies only select pods of their own namespace", policies: []networkingv1.NetworkPolicy{
			policy("other", "deny", networkingv1.NetworkPolicySpec{PolicyTypes: bothTypes}),
		}, checks: []check{
			{pkt("10.1.0.11", "10.1.0.10", tcp, 1), true},
			{pkt("10.1.0.11", "10.1.0.30", tcp, 1), false},
			{pkt("10.1.0.30", "10.1.0.11", tcp, 1), false},
		}},
		{name: "a pod's own node always reaches it", policies: []networkingv1.NetworkPolicy{
			policy("default", "deny", networkingv1.NetworkPolicySpec{PolicyTypes: bothTypes}),
			policy("other", "deny", networkingv1.NetworkPolicySpec{PolicyTypes: bothTypes}),
		}, checks: []check{
			{pkt("172.30.0.1", "10.1.0.10", tcp, 1), true},
			{pkt("fd00:30::1", "fd00:1::10", udp, 1), true},
			{pkt("172.30.0.1", "10.1.0.31", tcp, 1), false}, // client runs on node-b
			{pkt("172.30.0.2", "10.1.0.31", tcp, 1), true},
			{pkt("172.30.0.2", "10.1.0.10", tcp, 1), false},
			{pkt("10.1.0.10", "172.30.0.1", tcp, 1), false}, // the other way is egress: no exception
		}},
		{name: "host network pods are never selected", policies: []networkingv1.NetworkPolicy{
			policy("default", "deny", networkingv1.NetworkPolicySpec{PolicyTypes: bothTypes}),
		}, checks: []check{
			{pkt("10.9.9.9", "10.1.0.20", tcp, 1), true},
			{pkt("10.1.0.20", "10.9.9.9", tcp, 1), true},
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := docsCluster(tc.policies...)
			for _, ck := range tc.checks {
				if got := c.Allowed(ck.p); got != ck.want {
					t.Errorf("%s -> %s %s/%d: allowed=%v, want %v", ck.p.Src, ck.p.Dst, ck.p.Protocol, ck.p.Port, got, ck.want)
				}
			}
		})
	}
}

func ptrInt(v int32) *intstr.IntOrString {
	p := intstr.FromInt32(v)
	return &p
}

// TestEgressIngressSplit: a node enforces only its own pods' side, so the
// differential test compares one half at a time.
func TestEgressIngressSplit(t *testing.T) {
	c := docsCluster(docsExample)
	p := pkt("10.1.0.10", "10.1.0.11", tcp, 80) // db -> frontend
	if c.EgressAllowed(p) || !c.IngressAllowed(p) {
		t.Errorf("db -> frontend: egress=%v ingress=%v, want false true", c.EgressAllowed(p), c.IngressAllowed(p))
	}
	p = pkt("10.1.0.30", "10.1.0.10", tcp, 6379) // other/frontend -> db
	if !c.EgressAllowed(p) || c.IngressAllowed(p) {
		t.Errorf("other/frontend -> db: egress=%v ingress=%v, want true false", c.EgressAllowed(p), c.IngressAllowed(p))
	}
}
