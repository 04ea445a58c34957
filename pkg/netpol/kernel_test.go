package netpol

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/knftables"

	"github.com/vethroute/vethroute/internal/testutil"
)

// TestKernelAcceptsTable runs every kind of rule, set and change through
// the real nft in a fresh network namespace: full sync, incremental
// changes (elements, chains, removals), drift after a flush, and Delete.
func TestKernelAcceptsTable(t *testing.T) {
	netns := testutil.NewNS(t)
	ctx := context.Background()
	in := func(f func(nft knftables.Interface, e *Engine)) {
		t.Helper()
		var nft knftables.Interface
		var e *Engine
		if err := netns.Do(func(ns.NetNS) error {
			var err error
			if nft, err = knftables.New(knftables.InetFamily, Table); err != nil {
				return err
			}
			e = New(nft)
			return nil
		}); err != nil {
			t.Fatalf("nftables in the test namespace: %v", err)
		}
		_ = netns.Do(func(ns.NetNS) error { f(nft, e); return nil })
	}
	list := func() string {
		return testutil.MustRunIn(t, netns, "nft", "list", "table", "inet", Table)
	}

	in(func(_ knftables.Interface, e *Engine) {
		s := engineState()
		if res, err := e.Sync(ctx, s); err != nil || !res.Full {
			t.Fatalf("full sync = %+v, %v", res, err)
		}
		// SCTP compiles although this kernel may lack SCTP conntrack: the
		// match is on the transport header.
		if out := list(); !strings.Contains(out, "sctp . 9000-9010") || !strings.Contains(out, `"vrweb" : jump ingress-vrweb`) {
			t.Fatalf("table:\n%s", out)
		}
		steps := []func(*State){
			func(s *State) { // a peer pod arrives
				s.Pods = append(s.Pods, Pod{Namespace: "b", Name: "cli2", IPs: ips("10.0.2.9", "fd00::9")})
			},
			func(s *State) { // a peer pod leaves
				s.Pods = s.Pods[:len(s.Pods)-1]
			},
			func(s *State) { // the ipBlock changes: interval set replaced
				s.Policies[0].Spec.Ingress[0].From[1].IPBlock.Except = []string{"172.16.0.0/16", "172.31.255.0/24"}
			},
			func(s *State) { // edges: whole address spaces minus a part, single addresses, extreme ports
				s.Policies = append(s.Policies, np("a", "edges", sel("app", "dual"), func(sp *networkingv1.NetworkPolicySpec) {
					sp.Ingress = []networkingv1.NetworkPolicyIngressRule{{
						From: []networkingv1.NetworkPolicyPeer{
							{IPBlock: &networkingv1.IPBlock{CIDR: "0.0.0.0/0", Except: []string{"10.0.0.0/8", "255.255.255.255/32"}}},
							{IPBlock: &networkingv1.IPBlock{CIDR: "::/0", Except: []string{"::/128"}}},
							{IPBlock: &networkingv1.IPBlock{CIDR: "10.0.0.1/32"}},
						},
						Ports: []networkingv1.NetworkPolicyPort{port("", intstr.FromInt32(1)), port(corev1.ProtocolUDP, intstr.FromInt32(65535)), port(corev1.ProtocolSCTP, intstr.FromInt32(1), 65535)},
					}}
				}))
			},
			func(s *State) { // a new isolated local pod
				s.Pods = append(s.Pods, Pod{Namespace: "a", Name: "web2", Labels: map[string]string{"app": "web"}, IPs: ips("10.0.0.8"), HostVeth: "vrweb2"})
			},
			func(s *State) { // the web policy goes away
				s.Policies = s.Policies[1:]
			},
			func(s *State) { // the edges too
				s.Policies = s.Policies[:1]
			},
			func(s *State) { // and everything else
				s.Policies = nil
			},
		}
		for i, step := range steps {
			step(&s)
			res, err := e.Sync(ctx, s)
			if err != nil || res.Full || res.Operations == 0 {
				t.Fatalf("step %d: sync = %+v, %v; want an incremental change", i, res, err)
			}
			// The kernel holds the chains, sets and rule counts the
			// engine believes it applied.
			if drift, err := e.Drifted(ctx); err != nil || drift {
				t.Fatalf("step %d: Drifted = %v, %v\n%s", i, drift, err, list())
			}
		}
		if out := list(); strings.Contains(out, "chain ingress-") || strings.Contains(out, "set ") {
			t.Errorf("per-pod objects left without policies:\n%s", out)
		}

		s = engineState()
		if _, err := e.Sync(ctx, s); err != nil {
			t.Fatal(err)
		}
		testutil.MustRunIn(t, netns, "nft", "flush", "table", "inet", Table)
		if drift, err := e.Drifted(ctx); err != nil || !drift {
			t.Fatalf("Drifted after a flush = %v, %v", drift, err)
		}
		if res, err := e.Sync(ctx, s); err != nil || !res.Full {
			t.Fatalf("resync = %+v, %v", res, err)
		}
		if drift, err := e.Drifted(ctx); err != nil || drift {
			t.Fatalf("Drifted after the resync = %v, %v", drift, err)
		}
		if err := e.Delete(ctx); err != nil {
			t.Fatal(err)
		}
	})
	if out, err := testutil.RunIn(t, netns, 10*time.Second, "nft", "list", "table", "inet", Table); err == nil {
		t.Errorf("table left after Delete:\n%s", out)
	}
}
