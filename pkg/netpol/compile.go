package netpol

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"regexp"
	"slices"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// Names of the fixed objects of the table.
const (
	forwardChain = "forward"
	ingressMap   = "ingress-pods"
	egressMap    = "egress-pods"
)

// PolicyError is a problem with one NetworkPolicy. A policy whose pod
// selector or policy types cannot be read is skipped whole; an unreadable
// peer or port only loses that peer or port, never widening the rule: a
// rule whose peers (or ports) are all unreadable allows nothing.
type PolicyError struct {
	Namespace, Name string
	Err             error
}

func (e PolicyError) Error() string {
	return fmt.Sprintf("networkpolicy %s/%s: %v", e.Namespace, e.Name, e.Err)
}

func (e PolicyError) Unwrap() error { return e.Err }

// PodError is a pod on this node that gets no chains.
type PodError struct {
	Namespace, Name string
	Err             error
}

func (e PodError) Error() string {
	return fmt.Sprintf("pod %s/%s: %v", e.Namespace, e.Name, e.Err)
}

func (e PodError) Unwrap() error { return e.Err }

// setSpec is one named set the table should hold.
type setSpec struct {
	typ      string
	interval bool
	elems    map[string]bool // keys; concatenations joined with " . "
}

// desired is the whole table the state compiles to, apart from the fixed
// base chain and maps.
type desired struct {
	sets    map[string]*setSpec
	chains  map[string][]string // per-pod chain name → rules
	ingress map[string]string   // host veth → ingress chain
	egress  map[string]string   // host veth → egress chain
}

func (d *desired) rules() int {
	n := 3 // the base chain
	for _, r := range d.chains {
		n += len(r)
	}
	return n
}

// portRange is a destination port range of one protocol.
type portRange struct {
	proto  string // nft name: tcp, udp, sctp
	lo, hi int
}

type namedPort struct {
	proto string
	name  string
}

// addrRange is an inclusive address range of one family.
type addrRange struct{ lo, hi netip.Addr }

type podPeer struct {
	nsSel  labels.Selector // nil: the policy's own namespace
	podSel labels.Selector // nil: every pod
}

type rule struct {
	allPeers bool
	pods     []podPeer
	hasPods  bool // the rule names pod peers, even if all failed to parse
	cidrs    []addrRange
	allPorts bool
	ports    []portRange
	named    []namedPort
}

type policy struct {
	ns, name, id    string
	sel             labels.Selector
	ingress, egress bool
	in, out         []rule
}

// compiler holds the indexes of one State.
type compiler struct {
	nsLabels map[string]labels.Set
	pods     []*Pod
	byNS     map[string][]*Pod // pods that selectors can pick: not host-network
	nsNames  []string          // keys of byNS, sorted
	errs     []error
}

func compile(s State) (*desired, []error) {
	c := &compiler{nsLabels: make(map[string]labels.Set, len(s.Namespaces))}
	for _, ns := range s.Namespaces {
		c.nsLabels[ns.Name] = labels.Set(ns.Labels)
	}
	for i := range s.Pods {
		pod := s.Pods[i]
		// A copy with only addresses a rule can match: no zones, no
		// IPv4-mapped IPv6.
		pod.IPs = nil
		for _, ip := range s.Pods[i].IPs {
			if ip = ip.Unmap(); ip.IsValid() && ip.Zone() == "" && !slices.Contains(pod.IPs, ip) {
				pod.IPs = append(pod.IPs, ip)
			}
		}
		c.pods = append(c.pods, &pod)
	}
	c.byNS = map[string][]*Pod{}
	for _, pod := range c.pods {
		if !pod.HostNetwork {
			c.byNS[pod.Namespace] = append(c.byNS[pod.Namespace], pod)
		}
	}
	c.nsNames = slices.Sorted(maps.Keys(c.byNS))
	var pols []*policy
	for _, np := range s.Policies {
		if np == nil {
			continue
		}
		if p := c.parsePolicy(np); p != nil {
			pols = append(pols, p)
		}
	}
	slices.SortFunc(pols, func(a, b *policy) int {
		return strings.Compare(a.ns+"/"+a.name, b.ns+"/"+b.name)
	})

	d := &desired{
		sets:    map[string]*setSpec{},
		chains:  map[string][]string{},
		ingress: map[string]string{},
		egress:  map[string]string{},
	}
	seen := map[string]*Pod{}
	for _, pod := range c.pods {
		if pod.HostVeth == "" || pod.HostNetwork {
			continue
		}
		if !validIfName(pod.HostVeth) {
			c.errs = append(c.errs, PodError{pod.Namespace, pod.Name, fmt.Errorf("host veth %q is not an interface name", pod.HostVeth)})
			continue
		}
		if other := seen[pod.HostVeth]; other != nil {
			c.errs = append(c.errs, PodError{pod.Namespace, pod.Name, fmt.Errorf("host veth %s is also pod %s/%s's", pod.HostVeth, other.Namespace, other.Name)})
			continue
		}
		seen[pod.HostVeth] = pod
		c.target(d, pod, pols)
	}
	return d, c.errs
}

// target adds the chains of one pod on this node.
func (c *compiler) target(d *desired, pod *Pod, pols []*policy) {
	podLabels := labels.Set(pod.Labels)
	var in, out []string
	isoIn, isoOut := false, false
	for _, p := range pols {
		if p.ns != pod.Namespace || !p.sel.Matches(podLabels) {
			continue
		}
		if p.ingress {
			isoIn = true
			for i, r := range p.in {
				in = append(in, c.ingressRules(d, p, i, r, pod)...)
			}
		}
		if p.egress {
			isoOut = true
			for i, r := range p.out {
				out = append(out, c.egressRules(d, p, i, r)...)
			}
		}
	}
	if isoIn {
		name := "ingress-" + pod.HostVeth
		d.chains[name] = append(append([]string{"ct state invalid drop"}, in...), "drop")
		d.ingress[pod.HostVeth] = name
	}
	if isoOut {
		name := "egress-" + pod.HostVeth
		d.chains[name] = append(append([]string{"ct state invalid drop"}, out...), "drop")
		d.egress[pod.HostVeth] = name
	}
}

// ingressRules are the rules of one ingress rule of p for target pod,
// whose named ports it resolves.
func (c *compiler) ingressRules(d *desired, p *policy, idx int, r rule, pod *Pod) []string {
	ports := r.ports
	for _, np := range r.named {
		if port, ok := resolvePort(pod, np); ok {
			ports = append(ports, portRange{np.proto, port, port})
		}
	}
	if !r.allPorts && len(ports) == 0 {
		return nil
	}
	match := ""
	if !r.allPorts {
		match = portMatch(ports)
	}
	return c.peerRules(d, p, "i", idx, r, "saddr", match, "accept")
}

// egressRules are the rules of one egress rule of p. Named ports resolve
// on each destination pod, so they become a set of (address, protocol,
// port) of the peer pods that have them.
func (c *compiler) egressRules(d *desired, p *policy, idx int, r rule) []string {
	var out []string
	if r.allPorts || len(r.ports) > 0 {
		match := ""
		if !r.allPorts {
			match = portMatch(r.ports)
		}
		out = c.peerRules(d, p, "e", idx, r, "daddr", match, "return")
	}
	if len(r.named) == 0 {
		return out
	}
	base := fmt.Sprintf("e-%s-%d-named", p.id, idx)
	rules := append(out,
		fmt.Sprintf("ip daddr . meta l4proto . th dport @%s4 return", base),
		fmt.Sprintf("ip6 daddr . meta l4proto . th dport @%s6 return", base))
	if _, done := d.sets[base+"4"]; done {
		// Another target pod of the policy compiled it already.
		return rules
	}
	s4 := &setSpec{typ: "ipv4_addr . inet_proto . inet_service", elems: map[string]bool{}}
	s6 := &setSpec{typ: "ipv6_addr . inet_proto . inet_service", elems: map[string]bool{}}
	selected := map[*Pod]bool{}
	for _, pod := range c.peerPods(p, r) {
		selected[pod] = true
	}
	for _, pod := range c.pods {
		if pod.HostNetwork {
			continue
		}
		for _, ip := range pod.IPs {
			if !r.allPeers && !selected[pod] && !inRanges(r.cidrs, ip) {
				continue
			}
			for _, np := range r.named {
				port, ok := resolvePort(pod, np)
				if !ok {
					continue
				}
				key := ip.String() + " . " + np.proto + " . " + strconv.Itoa(port)
				if ip.Is4() {
					s4.elems[key] = true
				} else {
					s6.elems[key] = true
				}
			}
		}
	}
	d.sets[base+"4"] = s4
	d.sets[base+"6"] = s6
	return rules
}

// peerRules matches the rule's peers (by dir, saddr or daddr) with match
// appended, ending in verdict. Pod peers become hash sets of addresses that
// pod churn updates element by element; ipBlocks interval sets.
func (c *compiler) peerRules(d *desired, p *policy, dirTag string, idx int, r rule, dir, match, verdict string) []string {
	tail := strings.TrimSpace(match + " " + verdict)
	if r.allPeers {
		return []string{tail}
	}
	var out []string
	base := fmt.Sprintf("%s-%s-%d-", dirTag, p.id, idx)
	if _, done := d.sets[base+"pod4"]; r.hasPods && !done {
		// Sets depend on the policy, not the target pod: computed once.
		s4 := &setSpec{typ: "ipv4_addr", elems: map[string]bool{}}
		s6 := &setSpec{typ: "ipv6_addr", elems: map[string]bool{}}
		for _, pod := range c.peerPods(p, r) {
			for _, ip := range pod.IPs {
				if ip.Is4() {
					s4.elems[ip.String()] = true
				} else if ip.Is6() {
					s6.elems[ip.String()] = true
				}
			}
		}
		d.sets[base+"pod4"] = s4
		d.sets[base+"pod6"] = s6
	}
	if r.hasPods {
		out = append(out,
			fmt.Sprintf("ip %s @%spod4 %s", dir, base, tail),
			fmt.Sprintf("ip6 %s @%spod6 %s", dir, base, tail))
	}
	var e4, e6 map[string]bool
	for _, ar := range r.cidrs {
		el := ar.lo.String()
		if ar.hi != ar.lo {
			el += "-" + ar.hi.String()
		}
		if ar.lo.Is4() {
			if e4 == nil {
				e4 = map[string]bool{}
			}
			e4[el] = true
		} else {
			if e6 == nil {
				e6 = map[string]bool{}
			}
			e6[el] = true
		}
	}
	if e4 != nil {
		d.sets[base+"cidr4"] = &setSpec{typ: "ipv4_addr", interval: true, elems: e4}
		out = append(out, fmt.Sprintf("ip %s @%scidr4 %s", dir, base, tail))
	}
	if e6 != nil {
		d.sets[base+"cidr6"] = &setSpec{typ: "ipv6_addr", interval: true, elems: e6}
		out = append(out, fmt.Sprintf("ip6 %s @%scidr6 %s", dir, base, tail))
	}
	return out
}

// peerPods are the pods r's pod peers select, host-network pods never:
// namespaces are matched first, so a peer of the policy's own namespace
// looks at that namespace's pods only.
func (c *compiler) peerPods(p *policy, r rule) []*Pod {
	var out []*Pod
	seen := map[*Pod]bool{}
	for _, pp := range r.pods {
		for _, ns := range c.nsNames {
			if pp.nsSel == nil && ns != p.ns || pp.nsSel != nil && !pp.nsSel.Matches(c.nsLabels[ns]) {
				continue
			}
			for _, pod := range c.byNS[ns] {
				if !seen[pod] && (pp.podSel == nil || pp.podSel.Matches(labels.Set(pod.Labels))) {
					seen[pod] = true
					out = append(out, pod)
				}
			}
		}
	}
	return out
}

// portMatch is an anonymous set of protocol and port ranges, merged so
// that no two elements overlap.
func portMatch(ports []portRange) string {
	byProto := map[string][]portRange{}
	for _, pr := range ports {
		byProto[pr.proto] = append(byProto[pr.proto], pr)
	}
	var elems []string
	for _, proto := range []string{"tcp", "udp", "sctp"} {
		rs := byProto[proto]
		slices.SortFunc(rs, func(a, b portRange) int { return a.lo - b.lo })
		var merged []portRange
		for _, pr := range rs {
			if n := len(merged); n > 0 && pr.lo <= merged[n-1].hi+1 {
				merged[n-1].hi = max(merged[n-1].hi, pr.hi)
				continue
			}
			merged = append(merged, pr)
		}
		for _, pr := range merged {
			if pr.lo == pr.hi {
				elems = append(elems, fmt.Sprintf("%s . %d", proto, pr.lo))
			} else {
				elems = append(elems, fmt.Sprintf("%s . %d-%d", proto, pr.lo, pr.hi))
			}
		}
	}
	return "meta l4proto . th dport { " + strings.Join(elems, ", ") + " }"
}

// resolvePort finds a named port among the pod's container ports.
func resolvePort(pod *Pod, np namedPort) (int, bool) {
	for _, cp := range pod.Ports {
		proto := string(cp.Protocol)
		if proto == "" {
			proto = string(corev1.ProtocolTCP)
		}
		if cp.Name == np.name && strings.ToLower(proto) == np.proto && cp.ContainerPort >= 1 && cp.ContainerPort <= 65535 {
			return int(cp.ContainerPort), true
		}
	}
	return 0, false
}

// parsePolicy validates np; nil when it must be skipped whole.
func (c *compiler) parsePolicy(np *networkingv1.NetworkPolicy) *policy {
	p := &policy{ns: np.Namespace, name: np.Name}
	fail := func(err error) *policy {
		c.errs = append(c.errs, PolicyError{np.Namespace, np.Name, err})
		return nil
	}
	if np.Namespace == "" || np.Name == "" {
		return fail(errors.New("no namespace or name"))
	}
	sum := sha256.Sum256([]byte(np.Namespace + "/" + np.Name))
	p.id = hex.EncodeToString(sum[:6])
	sel, err := metav1.LabelSelectorAsSelector(&np.Spec.PodSelector)
	if err != nil {
		return fail(fmt.Errorf("podSelector: %w", err))
	}
	p.sel = sel
	if len(np.Spec.PolicyTypes) == 0 {
		// Implied: ingress always, egress when egress rules are given.
		p.ingress = true
		p.egress = len(np.Spec.Egress) > 0
	}
	for _, t := range np.Spec.PolicyTypes {
		switch t {
		case networkingv1.PolicyTypeIngress:
			p.ingress = true
		case networkingv1.PolicyTypeEgress:
			p.egress = true
		default:
			return fail(fmt.Errorf("policyTypes: unknown type %q", t))
		}
	}
	perr := func(err error) { c.errs = append(c.errs, PolicyError{np.Namespace, np.Name, err}) }
	if p.ingress {
		for i, r := range np.Spec.Ingress {
			p.in = append(p.in, parseRule(r.From, r.Ports, func(err error) { perr(fmt.Errorf("ingress[%d]: %w", i, err)) }))
		}
	}
	if p.egress {
		for i, r := range np.Spec.Egress {
			p.out = append(p.out, parseRule(r.To, r.Ports, func(err error) { perr(fmt.Errorf("egress[%d]: %w", i, err)) }))
		}
	}
	return p
}

func parseRule(peers []networkingv1.NetworkPolicyPeer, ports []networkingv1.NetworkPolicyPort, report func(error)) rule {
	r := rule{allPeers: len(peers) == 0, allPorts: len(ports) == 0}
	var ranges []addrRange
	for i, peer := range peers {
		switch {
		case peer.IPBlock != nil:
			if peer.PodSelector != nil || peer.NamespaceSelector != nil {
				report(fmt.Errorf("peer %d: ipBlock together with a selector", i))
				continue
			}
			rs, err := blockRanges(peer.IPBlock)
			if err != nil {
				report(fmt.Errorf("peer %d: %w", i, err))
				continue
			}
			ranges = append(ranges, rs...)
		case peer.PodSelector != nil || peer.NamespaceSelector != nil:
			r.hasPods = true
			var pp podPeer
			var err error
			if peer.NamespaceSelector != nil {
				if pp.nsSel, err = metav1.LabelSelectorAsSelector(peer.NamespaceSelector); err != nil {
					report(fmt.Errorf("peer %d: namespaceSelector: %w", i, err))
					continue
				}
			}
			if peer.PodSelector != nil {
				if pp.podSel, err = metav1.LabelSelectorAsSelector(peer.PodSelector); err != nil {
					report(fmt.Errorf("peer %d: podSelector: %w", i, err))
					continue
				}
			}
			r.pods = append(r.pods, pp)
		default:
			report(fmt.Errorf("peer %d: neither ipBlock nor a selector", i))
		}
	}
	r.cidrs = mergeRanges(ranges)
	for i, port := range ports {
		proto := "tcp"
		if port.Protocol != nil {
			switch *port.Protocol {
			case corev1.ProtocolTCP, corev1.ProtocolUDP, corev1.ProtocolSCTP:
				proto = strings.ToLower(string(*port.Protocol))
			default:
				report(fmt.Errorf("port %d: unknown protocol %q", i, *port.Protocol))
				continue
			}
		}
		switch {
		case port.Port == nil:
			if port.EndPort != nil {
				report(fmt.Errorf("port %d: endPort without port", i))
				continue
			}
			r.ports = append(r.ports, portRange{proto, 0, 65535})
		case port.Port.Type == intstr.String:
			if port.EndPort != nil {
				report(fmt.Errorf("port %d: endPort with named port %q", i, port.Port.StrVal))
				continue
			}
			if !portName.MatchString(port.Port.StrVal) {
				report(fmt.Errorf("port %d: %q is not a port name", i, port.Port.StrVal))
				continue
			}
			r.named = append(r.named, namedPort{proto, port.Port.StrVal})
		default:
			lo := int(port.Port.IntVal)
			hi := lo
			if port.EndPort != nil {
				hi = int(*port.EndPort)
			}
			if lo < 1 || lo > 65535 || hi < lo || hi > 65535 {
				report(fmt.Errorf("port %d: %d..%d is not a port range within 1..65535", i, lo, hi))
				continue
			}
			r.ports = append(r.ports, portRange{proto, lo, hi})
		}
	}
	return r
}

// portName is an IANA service name as container ports carry them.
var portName = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,13}[a-z0-9])?$`)

// ifName is what an interface name may hold and still be safe in a rule.
var ifName = regexp.MustCompile(`^[A-Za-z0-9_.-]{1,15}$`)

func validIfName(s string) bool { return ifName.MatchString(s) }

// blockRanges is an ipBlock's CIDR minus its exceptions.
func blockRanges(b *networkingv1.IPBlock) ([]addrRange, error) {
	cidr, err := netip.ParsePrefix(b.CIDR)
	if err != nil {
		return nil, fmt.Errorf("ipBlock cidr: %w", err)
	}
	if cidr.Addr().Is4In6() || cidr.Addr().Zone() != "" {
		return nil, fmt.Errorf("ipBlock cidr %s: IPv4-mapped or zoned", b.CIDR)
	}
	cidr = cidr.Masked()
	ranges := []addrRange{{cidr.Addr(), lastAddr(cidr)}}
	for _, ex := range b.Except {
		e, err := netip.ParsePrefix(ex)
		if err != nil {
			return nil, fmt.Errorf("ipBlock except: %w", err)
		}
		if e.Addr().BitLen() != cidr.Addr().BitLen() {
			return nil, fmt.Errorf("ipBlock except %s: other family than %s", ex, b.CIDR)
		}
		e = e.Masked()
		ranges = subtract(ranges, addrRange{e.Addr(), lastAddr(e)})
	}
	return ranges, nil
}

func lastAddr(p netip.Prefix) netip.Addr {
	b := p.Addr().AsSlice()
	for i := p.Bits(); i < len(b)*8; i++ {
		b[i/8] |= 0x80 >> (i % 8)
	}
	a, _ := netip.AddrFromSlice(b)
	return a
}

// subtract removes ex from every range.
func subtract(rs []addrRange, ex addrRange) []addrRange {
	var out []addrRange
	for _, r := range rs {
		if ex.hi.Less(r.lo) || r.hi.Less(ex.lo) {
			out = append(out, r)
			continue
		}
		if r.lo.Less(ex.lo) {
			out = append(out, addrRange{r.lo, ex.lo.Prev()})
		}
		if ex.hi.Less(r.hi) {
			out = append(out, addrRange{ex.hi.Next(), r.hi})
		}
	}
	return out
}

// mergeRanges sorts ranges and joins overlapping or adjacent ones:
// nftables refuses overlapping interval elements.
func mergeRanges(rs []addrRange) []addrRange {
	slices.SortFunc(rs, func(a, b addrRange) int { return a.lo.Compare(b.lo) })
	var out []addrRange
	for _, r := range rs {
		if n := len(out); n > 0 && out[n-1].lo.BitLen() == r.lo.BitLen() {
			last := &out[n-1]
			next := last.hi.Next()
			if !r.lo.Less(last.lo) && (!last.hi.Less(r.lo) || (next.IsValid() && next == r.lo)) {
				if last.hi.Less(r.hi) {
					last.hi = r.hi
				}
				continue
			}
		}
		out = append(out, r)
	}
	return out
}

func inRanges(rs []addrRange, ip netip.Addr) bool {
	for _, r := range rs {
		if r.lo.BitLen() == ip.BitLen() && !ip.Less(r.lo) && !r.hi.Less(ip) {
			return true
		}
	}
	return false
}
