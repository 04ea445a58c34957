package netpoldiff

import (
	"maps"
	"math/rand/v2"
	"net/netip"
	"slices"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// The label and name alphabets are small so that random selectors hit:
// a selector that never matches anything tests nothing.
var (
	nsNames    = []string{"alpha", "beta", "gamma"}
	nsLabels   = map[string][]string{"team": {"x", "y"}, "env": {"prod", "dev"}}
	podLabels  = map[string][]string{"app": {"web", "db", "api"}, "tier": {"front", "back"}}
	portNames  = []string{"http", "dns", "metrics"}
	v4Prefixes = []int{0, 8, 16, 24, 30, 32}
	v6Prefixes = []int{0, 16, 32, 48, 64, 125, 128}
)

// generator makes API-valid random objects from a seeded source, so a
// failing run is reproduced by its seed.
type generator struct {
	r  *rand.Rand
	tb *testbed
}

func (g *generator) chance(p float64) bool { return g.r.Float64() < p }

func pick[T any](g *generator, xs []T) T { return xs[g.r.IntN(len(xs))] }

// sortedKeys: map order is random, and the seed must decide everything.
func sortedKeys(m map[string][]string) []string { return slices.Sorted(maps.Keys(m)) }

func (g *generator) labels(alphabet map[string][]string, p float64) map[string]string {
	l := map[string]string{}
	for _, k := range sortedKeys(alphabet) {
		if g.chance(p) {
			l[k] = pick(g, alphabet[k])
		}
	}
	return l
}

// cluster is a fresh random cluster over the testbed's endpoints: every
// pod endpoint gets a namespace, labels and named container ports, and
// up to five policies are drawn.
func (g *generator) cluster() *Cluster {
	c := &Cluster{}
	for _, n := range nsNames {
		c.Namespaces = append(c.Namespaces, namespace(n, g.labels(nsLabels, 0.6)))
	}
	c.Nodes = []corev1.Node{node("node-a", "172.30.0.1", "fd00:30::1"), node("node-b", "172.30.0.2", "fd00:30::2")}
	for _, e := range g.tb.endpoints {
		if e.name == "hostnet" {
			p := g.pod(e)
			p.Spec.NodeName, p.Spec.HostNetwork = "node-b", true
			c.Pods = append(c.Pods, p)
		}
		if e.pod {
			p := g.pod(e)
			p.Spec.NodeName = "node-b"
			if e.local {
				p.Spec.NodeName = "node-a"
			}
			c.Pods = append(c.Pods, p)
		}
	}
	for i := range g.r.IntN(6) {
		c.Policies = append(c.Policies, g.policy(i))
	}
	return c
}

// pod gives e's addresses a pod: a namespace, labels, and each port name
// at most once over one or two containers, for a service port and a
// protocol (so the same name means different numbers on different pods).
func (g *generator) pod(e *endpoint) corev1.Pod {
	p := pod(pick(g, nsNames), e.name, g.labels(podLabels, 0.7), nil, e.v4.String(), e.v6.String())
	p.Spec.Containers = append(p.Spec.Containers, corev1.Container{Name: "side"})
	for _, name := range portNames {
		if !g.chance(0.6) {
			continue
		}
		cp := corev1.ContainerPort{Name: name, ContainerPort: pick(g, servicePorts), Protocol: pick(g, []corev1.Protocol{corev1.ProtocolTCP, corev1.ProtocolUDP, ""})}
		ct := &p.Spec.Containers[g.r.IntN(2)]
		ct.Ports = append(ct.Ports, cp)
	}
	return p
}

// mutate changes c a little, as the life of a cluster does between two
// syncs: a pod relabelled or moved, a namespace relabelled, a policy
// added, removed or replaced. Objects are replaced, never edited in
// place, since the engine may keep what it was given.
func (g *generator) mutate(c *Cluster) *Cluster {
	n := &Cluster{
		Namespaces: append([]corev1.Namespace(nil), c.Namespaces...),
		Pods:       append([]corev1.Pod(nil), c.Pods...),
		Nodes:      c.Nodes,
		Policies:   append([]networkingv1.NetworkPolicy(nil), c.Policies...),
	}
	for range 1 + g.r.IntN(3) {
		switch g.r.IntN(5) {
		case 0:
			i := g.r.IntN(len(n.Pods))
			p := n.Pods[i].DeepCopy()
			p.Labels = g.labels(podLabels, 0.7)
			n.Pods[i] = *p
		case 1:
			i := g.r.IntN(len(n.Namespaces))
			n.Namespaces[i] = namespace(n.Namespaces[i].Name, g.labels(nsLabels, 0.6))
		case 2:
			n.Policies = append(n.Policies, g.policy(len(n.Policies)+100))
		case 3:
			if len(n.Policies) > 0 {
				i := g.r.IntN(len(n.Policies))
				n.Policies = append(n.Policies[:i:i], n.Policies[i+1:]...)
			}
		case 4:
			if len(n.Policies) > 0 {
				i := g.r.IntN(len(n.Policies))
				np := g.policy(0)
				np.Namespace, np.Name = n.Policies[i].Namespace, n.Policies[i].Name
				n.Policies[i] = np
			}
		}
	}
	return n
}

func (g *generator) policy(i int) networkingv1.NetworkPolicy {
	np := policy(pick(g, nsNames), "p"+string(rune('a'+i%26))+string(rune('0'+i/26%10)), networkingv1.NetworkPolicySpec{
		PodSelector: *g.selector(podLabels),
	})
	switch g.r.IntN(5) {
	case 0:
		np.Spec.PolicyTypes = ingressOnly
	case 1:
		np.Spec.PolicyTypes = egressOnly
	case 2:
		np.Spec.PolicyTypes = bothTypes
	} // otherwise implied
	if g.chance(0.7) {
		np.Spec.Ingress = []networkingv1.NetworkPolicyIngressRule{}
		for range g.r.IntN(3) {
			np.Spec.Ingress = append(np.Spec.Ingress, networkingv1.NetworkPolicyIngressRule{From: g.peers(), Ports: g.ports()})
		}
	}
	if g.chance(0.6) {
		np.Spec.Egress = []networkingv1.NetworkPolicyEgressRule{}
		for range g.r.IntN(3) {
			np.Spec.Egress = append(np.Spec.Egress, networkingv1.NetworkPolicyEgressRule{To: g.peers(), Ports: g.ports()})
		}
	}
	return np
}

// selector is empty a quarter of the time, else matchLabels or one
// matchExpressions requirement of any operator.
func (g *generator) selector(alphabet map[string][]string) *metav1.LabelSelector {
	if g.chance(0.25) {
		return &metav1.LabelSelector{}
	}
	key := pick(g, sortedKeys(alphabet))
	vals := alphabet[key]
	if g.chance(0.5) {
		return sel(key, pick(g, vals))
	}
	req := metav1.LabelSelectorRequirement{Key: key}
	switch g.r.IntN(4) {
	case 0:
		req.Operator, req.Values = metav1.LabelSelectorOpIn, []string{pick(g, vals), pick(g, vals)}
	case 1:
		req.Operator, req.Values = metav1.LabelSelectorOpNotIn, []string{pick(g, vals)}
	case 2:
		req.Operator = metav1.LabelSelectorOpExists
	case 3:
		req.Operator = metav1.LabelSelectorOpDoesNotExist
	}
	if req.Operator == metav1.LabelSelectorOpIn && req.Values[0] == req.Values[1] {
		req.Values = req.Values[:1]
	}
	return &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{req}}
}

func (g *generator) peers() []networkingv1.NetworkPolicyPeer {
	if g.chance(0.15) {
		if g.chance(0.5) {
			return []networkingv1.NetworkPolicyPeer{}
		}
		return nil
	}
	var out []networkingv1.NetworkPolicyPeer
	for range 1 + g.r.IntN(2) {
		switch g.r.IntN(5) {
		case 0:
			out = append(out, networkingv1.NetworkPolicyPeer{PodSelector: g.selector(podLabels)})
		case 1:
			out = append(out, networkingv1.NetworkPolicyPeer{NamespaceSelector: g.selector(nsLabelsWithName())})
		case 2:
			out = append(out, networkingv1.NetworkPolicyPeer{PodSelector: g.selector(podLabels), NamespaceSelector: g.selector(nsLabelsWithName())})
		case 3, 4:
			out = append(out, g.ipBlock())
		}
	}
	return out
}

// nsLabelsWithName adds the label the API server puts on every namespace,
// which policies use to name a namespace.
func nsLabelsWithName() map[string][]string {
	m := map[string][]string{"kubernetes.io/metadata.name": nsNames}
	for k, v := range nsLabels {
		m[k] = v
	}
	return m
}

// ipBlock is a prefix around a random endpoint's address, of either
// family and any length from the whole family to the host, with up to
// three excepted prefixes strictly inside it around other endpoints.
func (g *generator) ipBlock() networkingv1.NetworkPolicyPeer {
	v6 := g.chance(0.5)
	lengths := v4Prefixes
	if v6 {
		lengths = v6Prefixes
	}
	around := func() netip.Addr { return pick(g, g.tb.endpoints).addr(v6) }
	// Mostly short prefixes, so that there is room for an except.
	cidr := netip.PrefixFrom(around(), pick(g, lengths[:len(lengths)-2+g.r.IntN(3)])).Masked()
	b := &networkingv1.IPBlock{CIDR: cidr.String()}
	for range 3 {
		var longer []int
		for _, l := range lengths {
			if l > cidr.Bits() {
				longer = append(longer, l)
			}
		}
		a := around()
		if len(longer) == 0 || !cidr.Contains(a) {
			continue
		}
		b.Except = append(b.Except, netip.PrefixFrom(a, pick(g, longer)).Masked().String())
	}
	return networkingv1.NetworkPolicyPeer{IPBlock: b}
}

// ports: none (every port), or up to two of a number (a service port or
// not), a range, a name, or a protocol alone; TCP, UDP, SCTP or unset.
func (g *generator) ports() []networkingv1.NetworkPolicyPort {
	if g.chance(0.2) {
		return nil
	}
	var out []networkingv1.NetworkPolicyPort
	for range 1 + g.r.IntN(2) {
		var p networkingv1.NetworkPolicyPort
		switch g.r.IntN(8) {
		case 0:
			p.Protocol = protoPtr(corev1.ProtocolTCP)
		case 1, 2, 3:
			p.Protocol = protoPtr(corev1.ProtocolUDP)
		case 4:
			p.Protocol = protoPtr(corev1.ProtocolSCTP)
		}
		switch g.r.IntN(8) {
		case 0: // protocol only
		case 1, 2:
			v := intstr.FromInt32(pick(g, servicePorts))
			if g.chance(0.15) {
				v = intstr.FromInt32(1 + g.r.Int32N(65535))
			}
			p.Port = &v
		case 3, 4:
			lo, hi := pick(g, servicePorts), pick(g, servicePorts)
			if lo > hi {
				lo, hi = hi, lo
			}
			v := intstr.FromInt32(lo)
			p.Port, p.EndPort = &v, &hi
		case 5, 6, 7:
			v := intstr.FromString(pick(g, append([]string{"nope"}, portNames...)))
			p.Port = &v
		}
		out = append(out, p)
	}
	return out
}

// destinations are the endpoints src sends to through the node: the local
// pods, and from a local pod every other endpoint but the node itself
// (a pod's traffic to its node is the node's input, which policies leave
// alone in this engine and the API does not settle).
func (tb *testbed) destinations(src *endpoint) []*endpoint {
	var out []*endpoint
	for _, e := range tb.endpoints {
		if e != src && !e.node && (src.local || e.local) {
			out = append(out, e)
		}
	}
	return out
}

// packet is a random case the node sees: at least one end local, either
// family, TCP or UDP, a port every endpoint serves; half the time one of
// the destination pod's container ports, where named ports decide.
func (g *generator) packet(c *Cluster) *probeCase {
	src := pick(g, g.tb.endpoints)
	pc := &probeCase{src: src, dst: pick(g, g.tb.destinations(src)), v6: g.chance(0.5),
		proto: pick(g, []corev1.Protocol{corev1.ProtocolTCP, corev1.ProtocolUDP}), port: pick(g, servicePorts)}
	if pod := c.PodByIP(pc.dstAddr()); pod != nil && g.chance(0.5) {
		var named []int32
		for _, ct := range pod.Spec.Containers {
			for _, cp := range ct.Ports {
				named = append(named, cp.ContainerPort)
			}
		}
		if len(named) > 0 {
			pc.port = pick(g, named)
		}
	}
	return pc
}
