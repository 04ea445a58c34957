package nodesync

import (
	"fmt"
	"net/netip"
	"slices"
	"testing"

	corev1 "k8s.io/api/core/v1"
)

func TestDesiredRoutes(t *testing.T) {
	connected := []string{"172.16.0.0/24", "fd00:172:16::/64", "10.3.0.0/24"}
	cluster := []string{"10.0.0.0/12", "192.168.0.0/16", "fd00::/16"}
	tests := []struct {
		name  string
		nodes []*corev1.Node
		// want lists "dst via gw (node)".
		want []string
		// problems lists "node reason".
		problems []string
	}{
		{
			name: "article: two routers",
			nodes: []*corev1.Node{
				node("router01", []string{"192.168.0.0/24"}, "172.16.0.1"),
				node("router02", []string{"10.0.0.0/24"}, "172.16.0.2"),
			},
			want: []string{"10.0.0.0/24 via 172.16.0.2 (router02)"},
		},
		{
			name: "self only",
			nodes: []*corev1.Node{
				node("router01", []string{"192.168.0.0/24"}, "172.16.0.1"),
			},
		},
		{
			name: "self not in the list still routes to others",
			nodes: []*corev1.Node{
				node("router02", []string{"10.0.0.0/24"}, "172.16.0.2"),
				node("router03", []string{"10.1.0.0/24"}, "172.16.0.3"),
			},
			want: []string{"10.0.0.0/24 via 172.16.0.2 (router02)", "10.1.0.0/24 via 172.16.0.3 (router03)"},
		},
		{
			name: "dual stack uses the InternalIP of each family",
			nodes: []*corev1.Node{
				node("router01", []string{"192.168.0.0/24", "fd00:1::/64"}, "172.16.0.1", "fd00:172:16::1"),
				node("router02", []string{"10.0.0.0/24", "fd00:2::/64"}, "fd00:172:16::2", "172.16.0.2"),
			},
			want: []string{"10.0.0.0/24 via 172.16.0.2 (router02)", "fd00:2::/64 via fd00:172:16::2 (router02)"},
		},
		{
			name: "legacy single podCIDR field",
			nodes: []*corev1.Node{
				func() *corev1.Node {
					n := node("router02", nil, "172.16.0.2")
					n.Spec.PodCIDR = "10.0.0.0/24"
					return n
				}(),
			},
			want: []string{"10.0.0.0/24 via 172.16.0.2 (router02)"},
		},
		{
			name: "InternalIP not on a connected subnet is skipped and reported",
			nodes: []*corev1.Node{
				node("router01", []string{"192.168.0.0/24"}, "172.16.0.1"),
				node("router02", []string{"10.0.0.0/24"}, "172.16.0.2"),
				node("remote", []string{"10.9.0.0/24"}, "198.51.100.7"),
			},
			want:     []string{"10.0.0.0/24 via 172.16.0.2 (router02)"},
			problems: []string{"remote " + reasonUnreachable},
		},
		{
			name: "no InternalIP of the pod CIDR's family",
			nodes: []*corev1.Node{
				node("router02", []string{"10.0.0.0/24", "fd00:2::/64"}, "172.16.0.2"),
			},
			want:     []string{"10.0.0.0/24 via 172.16.0.2 (router02)"},
			problems: []string{"router02 " + reasonNoInternalIP},
		},
		{
			name: "ExternalIP and Hostname are not used",
			nodes: []*corev1.Node{
				func() *corev1.Node {
					n := node("router02", []string{"10.0.0.0/24"})
					n.Status.Addresses = []corev1.NodeAddress{
						{Type: corev1.NodeExternalIP, Address: "172.16.0.2"},
						{Type: corev1.NodeHostName, Address: "router02"},
					}
					return n
				}(),
			},
			problems: []string{"router02 " + reasonNoInternalIP},
		},
		{
			name: "malformed pod CIDR",
			nodes: []*corev1.Node{
				node("router02", []string{"10.0.0.0/33"}, "172.16.0.2"),
			},
			problems: []string{"router02 " + reasonBadPodCIDR},
		},
		{
			name: "pod CIDR overlapping our own is not routed away",
			nodes: []*corev1.Node{
				node("router01", []string{"192.168.0.0/24"}, "172.16.0.1"),
				node("router02", []string{"192.168.0.128/25"}, "172.16.0.2"),
			},
			problems: []string{"router02 " + reasonOverlap},
		},
		{
			// Nothing in the Node objects says which claim is true, so
			// neither node wins.
			name: "duplicate pod CIDR: neither node gets a route",
			nodes: []*corev1.Node{
				node("router03", []string{"10.0.0.0/24"}, "172.16.0.3"),
				node("router02", []string{"10.0.0.0/24"}, "172.16.0.2"),
			},
			problems: []string{"router02 " + reasonOverlap, "router03 " + reasonOverlap},
		},
		{
			// Finding 1: a more specific prefix claimed by a Node that
			// sorts first took the real owner's traffic and route.
			name: "more specific prefix of another node: neither gets a route",
			nodes: []*corev1.Node{
				node("aaa-hijack", []string{"10.0.0.0/25"}, "172.16.0.9"),
				node("router02", []string{"10.0.0.0/24"}, "172.16.0.2"),
				node("router03", []string{"10.1.0.0/24"}, "172.16.0.3"),
			},
			want:     []string{"10.1.0.0/24 via 172.16.0.3 (router03)"},
			problems: []string{"aaa-hijack " + reasonOverlap, "router02 " + reasonOverlap},
		},
		{
			name: "half of the address space is outside the cluster",
			nodes: []*corev1.Node{
				node("router02", []string{"10.0.0.0/24"}, "172.16.0.2"),
				node("evil", []string{"128.0.0.0/1", "2000::/3"}, "172.16.0.9", "fd00:172:16::9"),
			},
			want:     []string{"10.0.0.0/24 via 172.16.0.2 (router02)"},
			problems: []string{"evil " + reasonOutsideCluster, "evil " + reasonOutsideCluster},
		},
		{
			name: "default route",
			nodes: []*corev1.Node{
				node("evil", []string{"0.0.0.0/0", "::/0"}, "172.16.0.9", "fd00:172:16::9"),
			},
			problems: []string{"evil " + reasonOutsideCluster, "evil " + reasonOutsideCluster},
		},
		{
			name: "a prefix spanning other nodes overlaps them all",
			nodes: []*corev1.Node{
				node("router01", []string{"192.168.0.0/24"}, "172.16.0.1"),
				node("router02", []string{"10.0.0.0/24"}, "172.16.0.2"),
				node("evil", []string{"10.0.0.0/15"}, "172.16.0.9"),
			},
			problems: []string{"evil " + reasonOverlap, "router02 " + reasonOverlap},
		},
		{
			name: "another node's address as a host route",
			nodes: []*corev1.Node{
				node("router02", []string{"10.0.0.0/24"}, "172.16.0.2"),
				node("router03", []string{"10.1.0.0/24"}, "10.2.0.3"),
				node("evil", []string{"10.2.0.3/32"}, "172.16.0.9"),
			},
			want:     []string{"10.0.0.0/24 via 172.16.0.2 (router02)"},
			problems: []string{"evil " + reasonCoversNodeNetwork, "router03 " + reasonUnreachable},
		},
		{
			name: "a prefix inside the node network",
			nodes: []*corev1.Node{
				node("evil", []string{"10.3.0.128/25"}, "172.16.0.9"),
			},
			problems: []string{"evil " + reasonCoversNodeNetwork},
		},
		{
			name: "IPv4-mapped IPv6 pod CIDR",
			nodes: []*corev1.Node{
				node("evil", []string{"::ffff:10.0.0.0/120"}, "fd00:172:16::9"),
			},
			problems: []string{"evil " + reasonBadPodCIDR},
		},
		{
			name: "host bits in a pod CIDR are masked",
			nodes: []*corev1.Node{
				node("router02", []string{"10.0.0.7/24"}, "172.16.0.2"),
			},
			want: []string{"10.0.0.0/24 via 172.16.0.2 (router02)"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			routes, problems := desiredRoutes("router01", tc.nodes, podCIDRScope{ClusterCIDRs: prefixes(t, cluster...), Connected: prefixes(t, connected...)})
			var got []string
			for _, r := range routes {
				got = append(got, fmt.Sprintf("%s via %s (%s)", r.Dst, r.Gw, r.Node))
			}
			if !slices.Equal(got, tc.want) {
				t.Errorf("routes = %q, want %q", got, tc.want)
			}
			var gotP []string
			for _, p := range problems {
				gotP = append(gotP, p.Node+" "+p.Reason)
				if p.Message == "" {
					t.Errorf("problem %s %s has no message", p.Node, p.Reason)
				}
			}
			if !slices.Equal(gotP, tc.problems) {
				t.Errorf("problems = %q, want %q", gotP, tc.problems)
			}
		})
	}
}

func TestInternalIPs(t *testing.T) {
	n := node("n", nil, "not-an-ip", "::ffff:172.16.0.9", "172.16.0.10", "fd00::1")
	v4, v6 := internalIPs(n)
	if v4 != netip.MustParseAddr("172.16.0.9") || v6 != netip.MustParseAddr("fd00::1") {
		t.Errorf("internalIPs = %s, %s; want 172.16.0.9 (first, unmapped), fd00::1", v4, v6)
	}
}
