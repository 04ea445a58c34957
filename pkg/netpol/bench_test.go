package netpol

import (
	"context"
	"fmt"
	"net/netip"
	"testing"

	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/knftables"
)

// bigState is issue 18's control-plane scale: 1000 pods in 10 namespaces,
// 100 of them on this node, and 200 policies with pod, namespace and port
// rules.
func bigState() State {
	var s State
	for i := range 10 {
		s.Namespaces = append(s.Namespaces, Namespace{Name: fmt.Sprintf("ns%d", i), Labels: map[string]string{"team": fmt.Sprint(i % 3)}})
	}
	for i := range 1000 {
		p := Pod{Namespace: fmt.Sprintf("ns%d", i%10), Name: fmt.Sprintf("p%d", i),
			Labels: map[string]string{"app": fmt.Sprintf("a%d", i%20), "tier": fmt.Sprint(i % 4)},
			IPs:    []netip.Addr{netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})}}
		if i%10 == 0 {
			p.HostVeth = fmt.Sprintf("vrt%011d", i)
		}
		s.Pods = append(s.Pods, p)
	}
	for i := range 200 {
		s.Policies = append(s.Policies, np(fmt.Sprintf("ns%d", i%10), fmt.Sprintf("pol%d", i), sel("app", fmt.Sprintf("a%d", i%20)), func(sp *networkingv1.NetworkPolicySpec) {
			sp.Ingress = []networkingv1.NetworkPolicyIngressRule{{
				From: []networkingv1.NetworkPolicyPeer{
					{PodSelector: sel("tier", fmt.Sprint(i%4))},
					{NamespaceSelector: sel("team", fmt.Sprint(i%3)), PodSelector: sel("app", fmt.Sprintf("a%d", (i+1)%20))},
					{IPBlock: &networkingv1.IPBlock{CIDR: "172.16.0.0/12", Except: []string{fmt.Sprintf("172.16.%d.0/24", i%256)}}},
				},
				Ports: []networkingv1.NetworkPolicyPort{port("", intstr.FromInt32(int32(8000+i))), port("", intstr.FromString("http"))},
			}}
			if i%2 == 0 {
				sp.PolicyTypes = []networkingv1.PolicyType{networkingv1.PolicyTypeIngress, networkingv1.PolicyTypeEgress}
				sp.Egress = []networkingv1.NetworkPolicyEgressRule{{To: []networkingv1.NetworkPolicyPeer{{NamespaceSelector: &metav1.LabelSelector{}}}}}
			}
		}))
	}
	return s
}

// BenchmarkCompile is the engine's own share of a sync at that scale: the
// whole state compiled (nft's share is measured by make bench).
func BenchmarkCompile(b *testing.B) {
	s := bigState()
	for b.Loop() {
		compile(s)
	}
}

// BenchmarkSyncOnePodChange is one pod's relabel at that scale: compile
// plus the diff against the last applied table, on the fake.
func BenchmarkSyncOnePodChange(b *testing.B) {
	s := bigState()
	e := New(knftables.NewFake(knftables.InetFamily, Table))
	ctx := context.Background()
	if _, err := e.Sync(ctx, s); err != nil {
		b.Fatal(err)
	}
	i := 0
	for b.Loop() {
		i++
		s.Pods[5].Labels = map[string]string{"app": fmt.Sprintf("a%d", i%20), "tier": "1"}
		if _, err := e.Sync(ctx, s); err != nil {
			b.Fatal(err)
		}
	}
}
