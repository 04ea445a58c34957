package netpol

import (
	"context"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/knftables"
)

// engineState has ingress and egress policies with every kind of set, so
// that a change anywhere shows in the transaction.
func engineState() State {
	return testState(
		np("a", "web", sel("app", "web"), func(s *networkingv1.NetworkPolicySpec) {
			s.PolicyTypes = []networkingv1.PolicyType{networkingv1.PolicyTypeIngress, networkingv1.PolicyTypeEgress}
			s.Ingress = []networkingv1.NetworkPolicyIngressRule{{
				From: []networkingv1.NetworkPolicyPeer{
					{NamespaceSelector: sel("team", "y")},
					{IPBlock: &networkingv1.IPBlock{CIDR: "172.16.0.0/12", Except: []string{"172.16.1.0/24"}}},
				},
				Ports: []networkingv1.NetworkPolicyPort{port("", intstr.FromString("http")), port(corev1.ProtocolSCTP, intstr.FromInt32(9000), 9010)},
			}}
			s.Egress = []networkingv1.NetworkPolicyEgressRule{{
				To:    []networkingv1.NetworkPolicyPeer{{PodSelector: sel("app", "db")}},
				Ports: []networkingv1.NetworkPolicyPort{port("", intstr.FromString("http")), port(corev1.ProtocolUDP, intstr.FromInt32(53))},
			}}
		}),
		np("a", "dual", sel("app", "dual"), nil),
	)
}

func TestEngineSync(t *testing.T) {
	ctx := context.Background()
	fake := knftables.NewFake(knftables.InetFamily, Table)
	e := New(fake)

	s := engineState()
	res, err := e.Sync(ctx, s)
	if err != nil {
		t.Fatal(err)
	}
	if !res.Full || len(res.Errors) != 0 || res.Operations == 0 {
		t.Fatalf("first sync = %+v, want a full sync without errors", res)
	}
	dump := fake.Dump()
	for _, want := range []string{
		"add chain inet vethroute-netpol forward { type filter hook forward priority 0 ; }",
		"add rule inet vethroute-netpol forward ct state established,related accept",
		"add element inet vethroute-netpol egress-pods { \"vrweb\" : jump egress-vrweb }",
		"add element inet vethroute-netpol ingress-pods { \"vrweb\" : jump ingress-vrweb }",
		"add element inet vethroute-netpol ingress-pods { \"vrdual\" : jump ingress-vrdual }",
		"meta l4proto . th dport { tcp . 8080, sctp . 9000-9010 } accept",
		"10.0.1.3 . tcp . 9090",
		"172.16.0.0-172.16.0.255",
	} {
		if !strings.Contains(dump, want) {
			t.Errorf("table lacks %q:\n%s", want, dump)
		}
	}
	if res.Rules != strings.Count(dump, "add rule ") {
		t.Errorf("Rules = %d, table has %d", res.Rules, strings.Count(dump, "add rule "))
	}

	// The same state again sends nothing.
	if res, err := e.Sync(ctx, s); err != nil || res.Operations != 0 || res.Full {
		t.Fatalf("unchanged sync = %+v, %v; want no operations", res, err)
	}

	// A new peer pod elsewhere: only the elements of the sets that select
	// it, no chain.
	s.Pods = append(s.Pods, Pod{Namespace: "b", Name: "cli2", Labels: map[string]string{"x": "y"}, IPs: ips("10.0.2.9")})
	tx := syncTx(t, e, fake, s)
	if !strings.Contains(tx, "10.0.2.9") || strings.Contains(tx, "chain") || strings.Contains(tx, "rule") {
		t.Errorf("a new peer pod sent more than set elements:\n%s", tx)
	}

	// The dual pod's labels change so another policy selects it: only its
	// chains change.
	s.Pods[4].Labels = map[string]string{"app": "web"}
	tx = syncTx(t, e, fake, s)
	if strings.Contains(tx, "vrweb ") || strings.Contains(tx, "ingress-vrweb") || !strings.Contains(tx, "egress-vrdual") {
		t.Errorf("relabeling dual touched web's chains or missed its own:\n%s", tx)
	}

	// A new local pod that no policy selects: nothing to do.
	s.Pods = append(s.Pods, Pod{Namespace: "a", Name: "free", Labels: map[string]string{"app": "free"}, IPs: ips("10.0.0.7"), HostVeth: "vrfree"})
	if res, err := e.Sync(ctx, s); err != nil || res.Operations != 0 {
		t.Errorf("unselected new pod: %+v, %v; want no operations", res, err)
	}

	// Removing the web policy removes its chains and sets; dual, relabeled
	// out of its own policy, is no longer isolated either.
	s.Policies = s.Policies[1:]
	tx = syncTx(t, e, fake, s)
	for _, want := range []string{"delete chain inet vethroute-netpol egress-vrweb", "delete element inet vethroute-netpol ingress-pods { \"vrweb\" }", "delete set"} {
		if !strings.Contains(tx, want) {
			t.Errorf("removal lacks %q:\n%s", want, tx)
		}
	}
	if dump := fake.Dump(); strings.Contains(dump, "vrweb") || strings.Contains(dump, "vrdual") || strings.Contains(dump, "add set") {
		t.Errorf("table after the removal:\n%s", dump)
	}

	if err := e.Delete(ctx); err != nil {
		t.Fatal(err)
	}
	if dump := fake.Dump(); strings.TrimSpace(dump) != "" {
		t.Errorf("table left after Delete:\n%s", dump)
	}
	if err := e.Delete(ctx); err != nil {
		t.Errorf("deleting an absent table: %v", err)
	}
}

// syncTx syncs s and returns the transaction sent.
func syncTx(t *testing.T, e *Engine, fake *knftables.Fake, s State) string {
	t.Helper()
	res, err := e.Sync(context.Background(), s)
	if err != nil {
		t.Fatal(err)
	}
	if res.Full || res.Operations == 0 {
		t.Fatalf("sync = %+v, want an incremental change", res)
	}
	return fake.LastTransaction.String()
}

func TestEngineDrift(t *testing.T) {
	ctx := context.Background()
	fake := knftables.NewFake(knftables.InetFamily, Table)
	e := New(fake)
	s := engineState()
	if _, err := e.Sync(ctx, s); err != nil {
		t.Fatal(err)
	}
	if drift, err := e.Drifted(ctx); err != nil || drift {
		t.Fatalf("Drifted right after a sync = %v, %v", drift, err)
	}
	want := fake.Dump()

	for _, tc := range []struct {
		name   string
		break_ func(*knftables.Transaction)
	}{
		{"chain flushed", func(tx *knftables.Transaction) { tx.Flush(&knftables.Chain{Name: "ingress-vrweb"}) }},
		{"base chain flushed", func(tx *knftables.Transaction) { tx.Flush(&knftables.Chain{Name: forwardChain}) }},
		{"table deleted", func(tx *knftables.Transaction) { tx.Delete(&knftables.Table{}) }},
		{"stray chain", func(tx *knftables.Transaction) { tx.Add(&knftables.Chain{Name: "stray"}) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tx := fake.NewTransaction()
			tc.break_(tx)
			if err := fake.Run(ctx, tx); err != nil {
				t.Fatal(err)
			}
			drift, err := e.Drifted(ctx)
			if err != nil || !drift {
				t.Fatalf("Drifted = %v, %v; want true", drift, err)
			}
			res, err := e.Sync(ctx, s)
			if err != nil || !res.Full {
				t.Fatalf("sync after drift = %+v, %v; want full", res, err)
			}
			if got := fake.Dump(); got != want {
				t.Errorf("table after resync:\n%s\nwant:\n%s", got, want)
			}
		})
	}
}

// A failed transaction leaves the engine unsure of the table, so the next
// sync is full.
func TestEngineFailedSyncResyncsFull(t *testing.T) {
	ctx := context.Background()
	fake := knftables.NewFake(knftables.InetFamily, Table)
	e := New(fake)
	s := engineState()
	if _, err := e.Sync(ctx, s); err != nil {
		t.Fatal(err)
	}
	// Delete a set behind the engine's back, then change its elements: the
	// fake refuses elements of a missing set.
	tx := fake.NewTransaction()
	tx.Flush(&knftables.Chain{Name: "egress-vrweb"})
	tx.Delete(&knftables.Set{Name: "e-" + policyID("a", "web") + "-0-pod4"})
	if err := fake.Run(ctx, tx); err != nil {
		t.Fatal(err)
	}
	s.Pods = append(s.Pods, Pod{Namespace: "a", Name: "db2", Labels: map[string]string{"app": "db"}, IPs: ips("10.0.1.9")})
	if _, err := e.Sync(ctx, s); err == nil {
		t.Fatal("sync into a broken table succeeded")
	}
	res, err := e.Sync(ctx, s)
	if err != nil || !res.Full {
		t.Fatalf("sync after a failure = %+v, %v; want full", res, err)
	}
	if !strings.Contains(fake.Dump(), "10.0.1.9") {
		t.Errorf("full resync lacks the new pod:\n%s", fake.Dump())
	}
}
