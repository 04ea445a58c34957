package netpol

import (
	"errors"
	"maps"
	"net/netip"
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// Test fixtures: namespaces a (team=x) and b (team=y); pods a/web on this
// node (veth vrweb), a/db and b/cli elsewhere, a host-network pod, and a
// dual-stack pod on this node (a/dual, veth vrdual).
func testState(pols ...*networkingv1.NetworkPolicy) State {
	return State{
		Namespaces: []Namespace{
			{Name: "a", Labels: map[string]string{"team": "x"}},
			{Name: "b", Labels: map[string]string{"team": "y"}},
		},
		Pods: []Pod{
			{Namespace: "a", Name: "web", Labels: map[string]string{"app": "web"}, IPs: ips("10.0.0.2"), HostVeth: "vrweb",
				Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 8080}, {Name: "dns", ContainerPort: 53, Protocol: corev1.ProtocolUDP}}},
			{Namespace: "a", Name: "db", Labels: map[string]string{"app": "db"}, IPs: ips("10.0.1.3"),
				Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 9090}}},
			{Namespace: "b", Name: "cli", Labels: map[string]string{"app": "cli"}, IPs: ips("10.0.2.4", "fd00::4")},
			{Namespace: "b", Name: "host", Labels: map[string]string{"app": "cli"}, IPs: ips("192.168.0.1"), HostNetwork: true, HostVeth: "eth0",
				Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 80}}},
			{Namespace: "a", Name: "dual", Labels: map[string]string{"app": "dual"}, IPs: ips("10.0.0.5", "fd00::5"), HostVeth: "vrdual"},
		},
		Policies: pols,
	}
}

func ips(s ...string) []netip.Addr {
	var out []netip.Addr
	for _, a := range s {
		out = append(out, netip.MustParseAddr(a))
	}
	return out
}

func sel(kv ...string) *metav1.LabelSelector {
	m := map[string]string{}
	for i := 0; i+1 < len(kv); i += 2 {
		m[kv[i]] = kv[i+1]
	}
	return &metav1.LabelSelector{MatchLabels: m}
}

func np(ns, name string, target *metav1.LabelSelector, f func(*networkingv1.NetworkPolicySpec)) *networkingv1.NetworkPolicy {
	p := &networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}}
	if target != nil {
		p.Spec.PodSelector = *target
	}
	if f != nil {
		f(&p.Spec)
	}
	return p
}

func port(proto corev1.Protocol, p intstr.IntOrString, end ...int32) networkingv1.NetworkPolicyPort {
	out := networkingv1.NetworkPolicyPort{Port: &p}
	if proto != "" {
		out.Protocol = &proto
	}
	if len(end) > 0 {
		out.EndPort = &end[0]
	}
	return out
}

func policyID(ns, name string) string {
	p := (&compiler{}).parsePolicy(np(ns, name, nil, nil))
	return p.id
}

func TestCompile(t *testing.T) {
	web := sel("app", "web")
	id := policyID("a", "p")
	ingPod := "i-" + id + "-0-"
	egr := "e-" + id + "-0-"
	tests := []struct {
		name   string
		pols   []*networkingv1.NetworkPolicy
		chains map[string][]string        // expected chains (all of them)
		sets   map[string][]string        // expected elements of these sets
		errs   []string                   // substrings of expected errors
		check  func(*testing.T, *desired) // extra
	}{
		{name: "no policy: every pod unisolated", chains: map[string][]string{}},
		{
			name: "default deny ingress, policyTypes implied",
			pols: []*networkingv1.NetworkPolicy{np("a", "p", &metav1.LabelSelector{}, nil)},
			chains: map[string][]string{
				"ingress-vrweb":  {"ct state invalid drop", "drop"},
				"ingress-vrdual": {"ct state invalid drop", "drop"},
			},
		},
		{
			name: "default deny egress, explicit types",
			pols: []*networkingv1.NetworkPolicy{np("a", "p", web, func(s *networkingv1.NetworkPolicySpec) {
				s.PolicyTypes = []networkingv1.PolicyType{networkingv1.PolicyTypeEgress}
			})},
			chains: map[string][]string{"egress-vrweb": {"ct state invalid drop", "drop"}},
		},
		{
			name: "egress implied by egress rules, ingress stays implied",
			pols: []*networkingv1.NetworkPolicy{np("a", "p", web, func(s *networkingv1.NetworkPolicySpec) {
				s.Egress = []networkingv1.NetworkPolicyEgressRule{{}}
			})},
			chains: map[string][]string{
				"ingress-vrweb": {"ct state invalid drop", "drop"},
				"egress-vrweb":  {"ct state invalid drop", "return", "drop"},
			},
		},
		{
			name: "allow all ingress with an empty rule",
			pols: []*networkingv1.NetworkPolicy{np("a", "p", web, func(s *networkingv1.NetworkPolicySpec) {
				s.Ingress = []networkingv1.NetworkPolicyIngressRule{{}}
			})},
			chains: map[string][]string{"ingress-vrweb": {"ct state invalid drop", "accept", "drop"}},
		},
		{
			name: "policy in another namespace or with other labels selects nothing",
			pols: []*networkingv1.NetworkPolicy{
				np("b", "p", &metav1.LabelSelector{}, nil),
				np("a", "q", sel("app", "none"), nil),
			},
			chains: map[string][]string{},
		},
		{
			name: "podSelector peer: the policy's namespace only, no host-network pods",
			pols: []*networkingv1.NetworkPolicy{np("a", "p", web, func(s *networkingv1.NetworkPolicySpec) {
				s.Ingress = []networkingv1.NetworkPolicyIngressRule{{From: []networkingv1.NetworkPolicyPeer{{PodSelector: &metav1.LabelSelector{}}}}}
			})},
			chains: map[string][]string{"ingress-vrweb": {"ct state invalid drop",
				"ip saddr @" + ingPod + "pod4 accept", "ip6 saddr @" + ingPod + "pod6 accept", "drop"}},
			sets: map[string][]string{ingPod + "pod4": {"10.0.0.2", "10.0.0.5", "10.0.1.3"}, ingPod + "pod6": {"fd00::5"}},
		},
		{
			name: "namespaceSelector peer: every pod of the selected namespaces",
			pols: []*networkingv1.NetworkPolicy{np("a", "p", web, func(s *networkingv1.NetworkPolicySpec) {
				s.Ingress = []networkingv1.NetworkPolicyIngressRule{{From: []networkingv1.NetworkPolicyPeer{{NamespaceSelector: sel("team", "y")}}}}
			})},
			sets: map[string][]string{ingPod + "pod4": {"10.0.2.4"}, ingPod + "pod6": {"fd00::4"}},
		},
		{
			name: "both selectors in one peer: intersection",
			pols: []*networkingv1.NetworkPolicy{np("a", "p", web, func(s *networkingv1.NetworkPolicySpec) {
				s.Ingress = []networkingv1.NetworkPolicyIngressRule{{From: []networkingv1.NetworkPolicyPeer{
					{NamespaceSelector: &metav1.LabelSelector{}, PodSelector: sel("app", "db")},
				}}}
			})},
			sets: map[string][]string{ingPod + "pod4": {"10.0.1.3"}, ingPod + "pod6": nil},
		},
		{
			name: "ipBlock with except, both families",
			pols: []*networkingv1.NetworkPolicy{np("a", "p", web, func(s *networkingv1.NetworkPolicySpec) {
				s.Ingress = []networkingv1.NetworkPolicyIngressRule{{From: []networkingv1.NetworkPolicyPeer{
					{IPBlock: &networkingv1.IPBlock{CIDR: "10.0.0.0/16", Except: []string{"10.0.1.0/24", "10.0.255.255/32"}}},
					{IPBlock: &networkingv1.IPBlock{CIDR: "10.0.1.128/25"}},
					{IPBlock: &networkingv1.IPBlock{CIDR: "fd00::/64", Except: []string{"fd00::/65"}}},
				}}}
			})},
			chains: map[string][]string{"ingress-vrweb": {"ct state invalid drop",
				"ip saddr @" + ingPod + "cidr4 accept", "ip6 saddr @" + ingPod + "cidr6 accept", "drop"}},
			sets: map[string][]string{
				ingPod + "cidr4": {"10.0.0.0-10.0.0.255", "10.0.1.128-10.0.255.254"},
				ingPod + "cidr6": {"fd00::8000:0:0:0-fd00::ffff:ffff:ffff:ffff"},
			},
		},
		{
			name: "ports: TCP default, UDP, SCTP, endPort ranges merged, protocol without port",
			pols: []*networkingv1.NetworkPolicy{np("a", "p", web, func(s *networkingv1.NetworkPolicySpec) {
				sctp := corev1.ProtocolSCTP
				s.Ingress = []networkingv1.NetworkPolicyIngressRule{{Ports: []networkingv1.NetworkPolicyPort{
					port("", intstr.FromInt32(80)),
					port(corev1.ProtocolTCP, intstr.FromInt32(8000), 8100),
					port(corev1.ProtocolTCP, intstr.FromInt32(8050), 8200),
					port(corev1.ProtocolUDP, intstr.FromInt32(53)),
					{Protocol: &sctp},
				}}}
			})},
			chains: map[string][]string{"ingress-vrweb": {"ct state invalid drop",
				"meta l4proto . th dport { tcp . 80, tcp . 8000-8200, udp . 53, sctp . 0-65535 } accept", "drop"}},
		},
		{
			name: "named ports on ingress resolve on the target pod",
			pols: []*networkingv1.NetworkPolicy{np("a", "p", &metav1.LabelSelector{}, func(s *networkingv1.NetworkPolicySpec) {
				s.Ingress = []networkingv1.NetworkPolicyIngressRule{{Ports: []networkingv1.NetworkPolicyPort{
					port("", intstr.FromString("http")),
					port(corev1.ProtocolUDP, intstr.FromString("dns")),
					port(corev1.ProtocolTCP, intstr.FromString("dns")), // dns is UDP on web: no match
				}}}
			})},
			chains: map[string][]string{
				"ingress-vrweb":  {"ct state invalid drop", "meta l4proto . th dport { tcp . 8080, udp . 53 } accept", "drop"},
				"ingress-vrdual": {"ct state invalid drop", "drop"}, // no such port: the rule allows nothing
			},
		},
		{
			name: "named ports on egress resolve on each destination pod",
			pols: []*networkingv1.NetworkPolicy{np("a", "p", web, func(s *networkingv1.NetworkPolicySpec) {
				s.PolicyTypes = []networkingv1.PolicyType{networkingv1.PolicyTypeEgress}
				s.Egress = []networkingv1.NetworkPolicyEgressRule{{
					To:    []networkingv1.NetworkPolicyPeer{{NamespaceSelector: &metav1.LabelSelector{}}},
					Ports: []networkingv1.NetworkPolicyPort{port("", intstr.FromString("http")), port("", intstr.FromInt32(443))},
				}}
			})},
			chains: map[string][]string{"egress-vrweb": {"ct state invalid drop",
				"ip daddr @" + egr + "pod4 meta l4proto . th dport { tcp . 443 } return",
				"ip6 daddr @" + egr + "pod6 meta l4proto . th dport { tcp . 443 } return",
				"ip daddr . meta l4proto . th dport @" + egr + "named4 return",
				"ip6 daddr . meta l4proto . th dport @" + egr + "named6 return",
				"drop"}},
			// The host-network pod's http port is not among them.
			sets: map[string][]string{egr + "named4": {"10.0.0.2 . tcp . 8080", "10.0.1.3 . tcp . 9090"}, egr + "named6": nil},
		},
		{
			name: "named port on egress to everywhere and to an ipBlock",
			pols: []*networkingv1.NetworkPolicy{np("a", "p", web, func(s *networkingv1.NetworkPolicySpec) {
				s.PolicyTypes = []networkingv1.PolicyType{networkingv1.PolicyTypeEgress}
				s.Egress = []networkingv1.NetworkPolicyEgressRule{
					{Ports: []networkingv1.NetworkPolicyPort{port("", intstr.FromString("http"))}},
					{To: []networkingv1.NetworkPolicyPeer{{IPBlock: &networkingv1.IPBlock{CIDR: "10.0.1.0/24"}}},
						Ports: []networkingv1.NetworkPolicyPort{port("", intstr.FromString("http"))}},
				}
			})},
			sets: map[string][]string{
				egr + "named4":          {"10.0.0.2 . tcp . 8080", "10.0.1.3 . tcp . 9090"},
				"e-" + id + "-1-named4": {"10.0.1.3 . tcp . 9090"},
			},
		},
		{
			name: "two policies add up, sorted by name",
			pols: []*networkingv1.NetworkPolicy{
				np("a", "z", web, func(s *networkingv1.NetworkPolicySpec) {
					s.Ingress = []networkingv1.NetworkPolicyIngressRule{{Ports: []networkingv1.NetworkPolicyPort{port("", intstr.FromInt32(2))}}}
				}),
				np("a", "p", web, func(s *networkingv1.NetworkPolicySpec) {
					s.Ingress = []networkingv1.NetworkPolicyIngressRule{{Ports: []networkingv1.NetworkPolicyPort{port("", intstr.FromInt32(1))}}}
				}),
			},
			chains: map[string][]string{"ingress-vrweb": {"ct state invalid drop",
				"meta l4proto . th dport { tcp . 1 } accept", "meta l4proto . th dport { tcp . 2 } accept", "drop"}},
		},
		{
			name: "dual-stack target gets one chain for both families",
			pols: []*networkingv1.NetworkPolicy{np("a", "p", sel("app", "dual"), func(s *networkingv1.NetworkPolicySpec) {
				s.Ingress = []networkingv1.NetworkPolicyIngressRule{{From: []networkingv1.NetworkPolicyPeer{{NamespaceSelector: sel("team", "y")}}}}
			})},
			chains: map[string][]string{"ingress-vrdual": {"ct state invalid drop",
				"ip saddr @" + ingPod + "pod4 accept", "ip6 saddr @" + ingPod + "pod6 accept", "drop"}},
		},
		{
			name: "hostile: bad CIDR, bad except, bad ports and protocol are dropped, never widening",
			pols: []*networkingv1.NetworkPolicy{np("a", "p", web, func(s *networkingv1.NetworkPolicySpec) {
				icmp := corev1.Protocol("ICMP")
				end := int32(10)
				s.Ingress = []networkingv1.NetworkPolicyIngressRule{
					{From: []networkingv1.NetworkPolicyPeer{
						{IPBlock: &networkingv1.IPBlock{CIDR: "10.0.0.300/8"}},
						{IPBlock: &networkingv1.IPBlock{CIDR: "10.0.0.0/8", Except: []string{"fd00::/8"}}},
						{IPBlock: &networkingv1.IPBlock{CIDR: "::ffff:10.0.0.0/104"}},
						{},
					}},
					{Ports: []networkingv1.NetworkPolicyPort{
						port("", intstr.FromInt32(70000)),
						port("", intstr.FromInt32(0)),
						port("", intstr.FromInt32(100), 99),
						port("", intstr.FromString("Not A Name")),
						port("", intstr.FromString("http"), 90),
						{Protocol: &icmp},
						{EndPort: &end},
					}},
				}
			})},
			chains: map[string][]string{"ingress-vrweb": {"ct state invalid drop", "drop"}},
			errs: []string{"ingress[0]: peer 0: ipBlock cidr", "ingress[0]: peer 1: ipBlock except", "ingress[0]: peer 2", "ingress[0]: peer 3: neither",
				"ingress[1]: port 0", "ingress[1]: port 1", "ingress[1]: port 2", "ingress[1]: port 3", "ingress[1]: port 4", "ingress[1]: port 5: unknown protocol", "ingress[1]: port 6"},
		},
		{
			name: "hostile: unreadable selectors and types",
			pols: []*networkingv1.NetworkPolicy{
				np("a", "bad-sel", &metav1.LabelSelector{MatchLabels: map[string]string{"a b": "c"}}, nil),
				np("a", "bad-type", web, func(s *networkingv1.NetworkPolicySpec) {
					s.PolicyTypes = []networkingv1.PolicyType{"Sideways"}
				}),
				np("a", "p", web, func(s *networkingv1.NetworkPolicySpec) {
					s.Ingress = []networkingv1.NetworkPolicyIngressRule{{From: []networkingv1.NetworkPolicyPeer{
						{PodSelector: &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "x", Operator: "Near"}}}},
					}}}
				}),
				nil,
				np("", "", nil, nil),
			},
			// p still isolates web; its only peer is unreadable, so the
			// rule's pod sets stay empty rather than allowing everyone.
			chains: map[string][]string{"ingress-vrweb": {"ct state invalid drop",
				"ip saddr @" + ingPod + "pod4 accept", "ip6 saddr @" + ingPod + "pod6 accept", "drop"}},
			sets: map[string][]string{ingPod + "pod4": nil, ingPod + "pod6": nil},
			errs: []string{"a/bad-sel: podSelector", "a/bad-type: policyTypes", "a/p: ingress[0]: peer 0: podSelector", "no namespace or name"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			d, errs := compile(testState(tc.pols...))
			if tc.chains != nil && !maps.EqualFunc(d.chains, tc.chains, slices.Equal) {
				t.Errorf("chains:\n got %q\nwant %q", d.chains, tc.chains)
			}
			for name, want := range tc.sets {
				s := d.sets[name]
				if s == nil {
					t.Errorf("set %s missing; have %v", name, slices.Sorted(maps.Keys(d.sets)))
					continue
				}
				if got := slices.Sorted(maps.Keys(s.elems)); !slices.Equal(got, want) {
					t.Errorf("set %s = %q, want %q", name, got, want)
				}
			}
			for veth, chain := range d.ingress {
				if chain != "ingress-"+veth || d.chains[chain] == nil {
					t.Errorf("ingress map %s -> %s", veth, chain)
				}
			}
			for veth, chain := range d.egress {
				if chain != "egress-"+veth || d.chains[chain] == nil {
					t.Errorf("egress map %s -> %s", veth, chain)
				}
			}
			if len(d.ingress)+len(d.egress) != len(d.chains) {
				t.Errorf("%d chains but %d map entries", len(d.chains), len(d.ingress)+len(d.egress))
			}
			if len(errs) != len(tc.errs) {
				t.Errorf("errors = %v, want %d matching %q", errs, len(tc.errs), tc.errs)
			}
			for _, want := range tc.errs {
				found := false
				for _, err := range errs {
					var pe PolicyError
					if strings.Contains(err.Error(), want) && errors.As(err, &pe) {
						found = true
					}
				}
				if !found {
					t.Errorf("no PolicyError containing %q in %v", want, errs)
				}
			}
		})
	}
}

func TestCompilePodErrors(t *testing.T) {
	s := testState(np("a", "p", &metav1.LabelSelector{}, nil))
	s.Pods = append(s.Pods,
		Pod{Namespace: "a", Name: "clash", HostVeth: "vrweb"},
		Pod{Namespace: "a", Name: "evil", HostVeth: `x" ; flush ruleset`},
	)
	d, errs := compile(s)
	if len(errs) != 2 {
		t.Fatalf("errors = %v, want the clash and the evil name", errs)
	}
	for _, err := range errs {
		var pe PodError
		if !errors.As(err, &pe) {
			t.Errorf("%v is not a PodError", err)
		}
	}
	if len(d.chains) != 2 {
		t.Errorf("chains = %v, want web's and dual's", slices.Sorted(maps.Keys(d.chains)))
	}
}

func TestMergeRanges(t *testing.T) {
	r := func(lo, hi string) addrRange {
		return addrRange{netip.MustParseAddr(lo), netip.MustParseAddr(hi)}
	}
	got := mergeRanges([]addrRange{
		r("10.0.0.10", "10.0.0.20"), r("fd00::", "fd00::1"), r("10.0.0.0", "10.0.0.9"),
		r("10.0.0.15", "10.0.0.30"), r("10.0.1.0", "10.0.1.0"), r("255.255.255.0", "255.255.255.255"),
		r("255.255.255.255", "255.255.255.255"), r("fd00::2", "fd00::2"),
	})
	want := []addrRange{r("10.0.0.0", "10.0.0.30"), r("10.0.1.0", "10.0.1.0"), r("255.255.255.0", "255.255.255.255"), r("fd00::", "fd00::2")}
	if !slices.Equal(got, want) {
		t.Errorf("mergeRanges = %v, want %v", got, want)
	}
}
