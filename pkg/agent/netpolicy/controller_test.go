package netpolicy

import (
	"context"
	"io"
	"log/slog"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/client-go/tools/record"
	"sigs.k8s.io/knftables"

	"github.com/vethroute/vethroute/pkg/netpol"
)

type fakeVeths struct {
	mu sync.Mutex
	m  map[netip.Addr]string
}

func (f *fakeVeths) Veths() (map[netip.Addr]string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := map[netip.Addr]string{}
	for k, v := range f.m {
		out[k] = v
	}
	return out, nil
}

func (f *fakeVeths) set(ip, veth string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.m[netip.MustParseAddr(ip)] = veth
}

func pod(ns, name, node, ip string, lbl map[string]string) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: lbl, ManagedFields: []metav1.ManagedFieldsEntry{{Manager: "x"}}},
		Spec:       corev1.PodSpec{NodeName: node, Containers: []corev1.Container{{Name: "c", Image: "i", Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 80}}}}},
		Status:     corev1.PodStatus{Phase: corev1.PodRunning, PodIPs: []corev1.PodIP{{IP: ip}}},
	}
}

func TestController(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	client := fake.NewClientset(
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "a"}},
		pod("a", "web", "n1", "10.0.0.2", map[string]string{"app": "web"}),
		pod("a", "late", "n1", "10.0.0.3", map[string]string{"app": "web"}),
		pod("a", "far", "n2", "10.0.1.2", map[string]string{"app": "web"}),
		&networkingv1.NetworkPolicy{
			ObjectMeta: metav1.ObjectMeta{Namespace: "a", Name: "deny"},
			Spec:       networkingv1.NetworkPolicySpec{PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"app": "web"}}},
		},
	)
	nft := knftables.NewFake(knftables.InetFamily, netpol.Table)
	veths := &fakeVeths{m: map[netip.Addr]string{netip.MustParseAddr("10.0.0.2"): "vrweb"}}
	rec := record.NewFakeRecorder(10)
	reg := prometheus.NewRegistry()
	metrics := NewMetrics(reg)
	factory := NewInformerFactory(client)
	c, err := NewController(Config{NodeName: "n1", UnwiredRetry: 50 * time.Millisecond}, factory, netpol.New(nft), veths, rec, metrics,
		slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	factory.Start(ctx.Done())
	done := make(chan error)
	go func() { done <- c.Run(ctx) }()

	dump := nft.Dump
	waitFor := func(what string, ok func(string) bool) {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for !ok(dump()) {
			if time.Now().After(deadline) {
				t.Fatalf("timed out waiting for %s; table:\n%s", what, dump())
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	waitFor("web's chain", func(d string) bool { return strings.Contains(d, "add chain inet vethroute-netpol ingress-vrweb") })
	if d := dump(); strings.Contains(d, "10.0.1.2") {
		t.Errorf("a pod of another node got rules:\n%s", d)
	}
	if got := testutil.ToFloat64(metrics.UnwiredPods); got != 1 {
		t.Errorf("unwired pods = %v, want 1 (late has no veth yet)", got)
	}

	// late's veth appears: the retry picks it up without any API event.
	veths.set("10.0.0.3", "vrlate")
	waitFor("late's chain", func(d string) bool { return strings.Contains(d, "ingress-vrlate") })

	// A policy with an unreadable peer gets an Event; the rest applies.
	bad := &networkingv1.NetworkPolicy{
		ObjectMeta: metav1.ObjectMeta{Namespace: "a", Name: "bad"},
		Spec: networkingv1.NetworkPolicySpec{
			PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"app": "web"}},
			Ingress:     []networkingv1.NetworkPolicyIngressRule{{From: []networkingv1.NetworkPolicyPeer{{IPBlock: &networkingv1.IPBlock{CIDR: "300.0.0.0/8"}}}}},
		},
	}
	if _, err := client.NetworkingV1().NetworkPolicies("a").Create(ctx, bad, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	select {
	case ev := <-rec.Events:
		if !strings.Contains(ev, "PolicyNotApplied") || !strings.Contains(ev, "ipBlock cidr") {
			t.Errorf("event = %q", ev)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no Event for the unreadable policy")
	}

	// Removing the policies removes the chains.
	for _, name := range []string{"deny", "bad"} {
		if err := client.NetworkingV1().NetworkPolicies("a").Delete(ctx, name, metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	waitFor("no chains", func(d string) bool { return !strings.Contains(d, "ingress-vr") })
	if got := testutil.ToFloat64(metrics.Rules); got != 3 {
		t.Errorf("rules = %v, want the 3 of the base chain", got)
	}
	select {
	case ev := <-rec.Events:
		t.Errorf("unexpected event %q", ev)
	default:
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

func TestStrip(t *testing.T) {
	p := pod("a", "web", "n1", "10.0.0.2", map[string]string{"app": "web"})
	p.Spec.Containers = append(p.Spec.Containers, corev1.Container{Name: "noports"})
	p.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodReady}}
	out, err := strip(p)
	if err != nil {
		t.Fatal(err)
	}
	s := out.(*corev1.Pod)
	if s.ManagedFields != nil || s.Status.Conditions != nil || len(s.Spec.Containers) != 1 || s.Spec.Containers[0].Ports[0].Name != "http" ||
		s.Labels["app"] != "web" || s.Status.PodIPs[0].IP != "10.0.0.2" || s.Spec.NodeName != "n1" {
		t.Errorf("stripped pod = %+v", s)
	}
}
