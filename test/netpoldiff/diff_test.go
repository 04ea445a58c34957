package netpoldiff

import (
	"context"
	"flag"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"sigs.k8s.io/knftables"
	"sigs.k8s.io/yaml"

	"github.com/vethroute/vethroute/pkg/netpol"
)

var (
	seedFlag    = flag.Uint64("seed", 0, "TestDifferential's seed (0: one from the clock, printed)")
	batchesFlag = flag.Int("batches", 16, "TestDifferential's policy sets: even ones fresh, odd ones a small change of the one before")
	packetsFlag = flag.Int("packets", 50, "TestDifferential's packets per policy set")
)

// TestDifferential programs the engine in the test node for seeded random
// namespaces, pods and policies, sends random packets through the node and
// compares each verdict with the evaluator's. The node enforces its own
// pods' side only: pod to pod on the node needs the source's egress and
// the destination's ingress, pod to elsewhere the egress alone, elsewhere
// to pod the ingress alone. One engine serves every batch, so after the
// first full sync every batch is an incremental one: a whole new state
// or, every other batch, a small change of the previous one.
func TestDifferential(t *testing.T) {
	seed := *seedFlag
	if seed == 0 {
		seed = uint64(time.Now().UnixNano())
	}
	t.Logf("seed %d (reproduce: go test ./test/netpoldiff -run TestDifferential -args -seed %d)", seed, seed)
	tb := newTestbed(t)
	g := &generator{r: rand.New(rand.NewPCG(seed, seed>>32|seed<<32)), tb: tb}
	ctx := context.Background()
	var eng *netpol.Engine
	if err := tb.node.Do(func(ns.NetNS) error {
		nft, err := knftables.New(knftables.InetFamily, netpol.Table)
		eng = netpol.New(nft)
		return err
	}); err != nil {
		t.Fatalf("nftables in the node namespace: %v", err)
	}

	var c *Cluster
	var total, allowed int
	for b := range *batchesFlag {
		if b%2 == 0 {
			c = g.cluster()
		} else {
			c = g.mutate(c)
		}
		var res netpol.Result
		start := time.Now()
		err := tb.node.Do(func(ns.NetNS) (err error) {
			res, err = eng.Sync(ctx, tb.state(c))
			return err
		})
		if err != nil || len(res.Errors) > 0 {
			t.Fatalf("seed %d batch %d: Sync = %v, errors %v\n%s", seed, b, err, res.Errors, dump(c))
		}
		synced := time.Since(start)
		cases := make([]*probeCase, *packetsFlag)
		for i := range cases {
			cases[i] = g.packet(c)
			cases[i].want = c.verdict(cases[i])
		}
		tb.probeAll(t, cases)
		var wrong []string
		for _, pc := range cases {
			total++
			if pc.got {
				allowed++
			}
			if pc.got != pc.want {
				wrong = append(wrong, pc.String())
			}
		}
		t.Logf("batch %d: %d policies, sync %v (full=%v, %d rules, %d operations), %d/%d verdicts agree",
			b, len(c.Policies), synced.Round(time.Millisecond), res.Full, res.Rules, res.Operations, len(cases)-len(wrong), len(cases))
		if len(wrong) > 0 {
			var table string
			_ = tb.node.Do(func(ns.NetNS) error {
				out, _ := execNft()
				table = out
				return nil
			})
			t.Fatalf("seed %d batch %d: %d of %d verdicts differ:\n%s\n\ncluster:\n%s\ntable:\n%s",
				seed, b, len(wrong), len(cases), strings.Join(wrong, "\n"), dump(c), table)
		}
	}
	t.Logf("seed %d: %d cases, %d allowed, %d blocked, all agree", seed, total, allowed, total-allowed)
	if allowed == 0 || allowed == total {
		t.Errorf("seed %d: every verdict was the same (%d allowed of %d): the generator no longer tests both outcomes", seed, allowed, total)
	}
}

// verdict is the evaluator's answer for the half of the path the node
// enforces.
func (c *Cluster) verdict(pc *probeCase) bool {
	p := Packet{Src: pc.src.addr(pc.v6), Dst: pc.dstAddr(), Protocol: pc.proto, Port: pc.port}
	switch {
	case pc.src.local && pc.dst.local:
		return c.Allowed(p)
	case pc.src.local:
		return c.EgressAllowed(p)
	default:
		return c.IngressAllowed(p)
	}
}

// state is the engine's input for c: every pod of the cluster with its
// addresses and container ports, the local ones with their host veth.
func (tb *testbed) state(c *Cluster) netpol.State {
	var s netpol.State
	for _, n := range c.Namespaces {
		s.Namespaces = append(s.Namespaces, netpol.Namespace{Name: n.Name, Labels: n.Labels})
	}
	for _, p := range c.Pods {
		np := netpol.Pod{Namespace: p.Namespace, Name: p.Name, Labels: p.Labels, HostNetwork: p.Spec.HostNetwork}
		for _, ip := range p.Status.PodIPs {
			np.IPs = append(np.IPs, netip.MustParseAddr(ip.IP))
		}
		for _, ct := range p.Spec.Containers {
			np.Ports = append(np.Ports, ct.Ports...)
		}
		for _, e := range tb.endpoints {
			if e.local && e.name == p.Name {
				np.HostVeth = e.hostVeth
			}
		}
		s.Pods = append(s.Pods, np)
	}
	for i := range c.Policies {
		s.Policies = append(s.Policies, c.Policies[i].DeepCopy())
	}
	return s
}

// dump renders a cluster for a failure message: what a reader needs to
// redo the evaluation by hand.
func dump(c *Cluster) string {
	type podView struct {
		Name, Namespace string
		Labels          map[string]string      `json:",omitempty"`
		IPs             []corev1.PodIP         `json:",omitempty"`
		Ports           []corev1.ContainerPort `json:",omitempty"`
	}
	type policyView struct {
		Name, Namespace string
		Spec            networkingv1.NetworkPolicySpec
	}
	var v struct {
		Namespaces map[string]map[string]string
		Pods       []podView
		Policies   []policyView
	}
	v.Namespaces = map[string]map[string]string{}
	for _, n := range c.Namespaces {
		v.Namespaces[n.Name] = n.Labels
	}
	for _, p := range c.Pods {
		pv := podView{Name: p.Name, Namespace: p.Namespace, Labels: p.Labels, IPs: p.Status.PodIPs}
		for _, ct := range p.Spec.Containers {
			pv.Ports = append(pv.Ports, ct.Ports...)
		}
		v.Pods = append(v.Pods, pv)
	}
	for _, np := range c.Policies {
		v.Policies = append(v.Policies, policyView{Name: np.Name, Namespace: np.Namespace, Spec: np.Spec})
	}
	out, err := yaml.Marshal(v)
	if err != nil {
		return fmt.Sprintf("(cannot render: %v)", err)
	}
	return string(out)
}

// execNft lists the engine's table from the calling thread's namespace.
func execNft() (string, error) {
	out, err := exec.Command("nft", "list", "table", "inet", netpol.Table).CombinedOutput()
	return string(out), err
}
