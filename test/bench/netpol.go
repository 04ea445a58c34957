package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/plugins/pkg/ns"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/knftables"

	"github.com/vethroute/vethroute/pkg/netpol"
	"github.com/vethroute/vethroute/pkg/routing"
)

// netpolChildEnv makes the bench binary run the control-plane half of the
// NetworkPolicy section instead of the whole bench: the engine gets a
// process of its own, so its peak RSS is the engine's, not the lab's.
const netpolChildEnv = "VETHROUTE_BENCH_NETPOL_CHILD"

// netpolSizes are the sizes of the control-plane measurement.
type netpolSizes struct {
	Pods, Local, Policies, Samples int
}

// netpolChildResult is what the child reports on stdout.
type netpolChildResult struct {
	Full, PodAdd, PodDel, PolicyChange []time.Duration
	Rules                              int
}

// netpolResult holds the section's figures.
type netpolResult struct {
	sizes netpolSizes
	child netpolChildResult
	rssKB int64
	// kube-router-style iptables + ipset for the same state: every change
	// is a full restore, as kube-router's controller does on any event.
	iptFull, iptPodAdd durations
	iptRules, iptSets  int
	// data plane: iperf3 between two pods of one node, bit/s per run.
	dpPolicies                 int
	dpNone, dpVeth, dpIptables []float64
	skipped                    string
	errs                       []string
}

// netpolNamespaces is the number of namespaces of the generated state.
const netpolNamespaces = 20

// netpolState is a deterministic cluster of the given sizes: pods spread
// over namespaces with app (50 values) and role (5) labels and a named
// port, the first `local` of them on this node; policies each selecting one
// app in one namespace, allowing from a role in the same namespace, a
// namespace-and-pod selector, an ipBlock with except, on a number, a name
// and a UDP range; every fourth also restricting egress.
func netpolState(s netpolSizes) netpol.State {
	var st netpol.State
	for i := range netpolNamespaces {
		st.Namespaces = append(st.Namespaces, netpol.Namespace{Name: fmt.Sprintf("ns-%d", i),
			Labels: map[string]string{"kubernetes.io/metadata.name": fmt.Sprintf("ns-%d", i), "team": fmt.Sprintf("t-%d", i%4)}})
	}
	for i := range s.Pods {
		st.Pods = append(st.Pods, netpolPod(i, i < s.Local))
	}
	for j := range s.Policies {
		st.Policies = append(st.Policies, netpolPolicy(j, 8080))
	}
	return st
}

func netpolPod(i int, local bool) netpol.Pod {
	p := netpol.Pod{
		Namespace: fmt.Sprintf("ns-%d", i%netpolNamespaces), Name: fmt.Sprintf("pod-%d", i),
		Labels: map[string]string{"app": fmt.Sprintf("a-%d", i%50), "role": fmt.Sprintf("r-%d", i%5)},
		IPs: []netip.Addr{netip.AddrFrom4([4]byte{10, 128, byte(i / 250), byte(i%250 + 1)}),
			netip.MustParseAddr(fmt.Sprintf("fd00:128::%x", i+1))},
		Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 8080, Protocol: corev1.ProtocolTCP}},
	}
	if local {
		p.HostVeth = routing.HostVethName(fmt.Sprintf("bench-%d", i), "eth0")
	}
	return p
}

func netpolPolicy(j int, port int32) *networkingv1.NetworkPolicy {
	tcp, udp := corev1.ProtocolTCP, corev1.ProtocolUDP
	num, name := intstr.FromInt32(port), intstr.FromString("http")
	lo, hi := intstr.FromInt32(5353), int32(5360)
	np := &networkingv1.NetworkPolicy{
		ObjectMeta: metav1.ObjectMeta{Namespace: fmt.Sprintf("ns-%d", j%netpolNamespaces), Name: fmt.Sprintf("pol-%d", j)},
		Spec: networkingv1.NetworkPolicySpec{
			PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"app": fmt.Sprintf("a-%d", j%50)}},
			Ingress: []networkingv1.NetworkPolicyIngressRule{{
				From: []networkingv1.NetworkPolicyPeer{
					{PodSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"role": fmt.Sprintf("r-%d", j%5)}}},
					{NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"team": fmt.Sprintf("t-%d", j%4)}},
						PodSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": fmt.Sprintf("a-%d", (j+1)%50)}}},
					{IPBlock: &networkingv1.IPBlock{CIDR: "10.0.0.0/8", Except: []string{fmt.Sprintf("10.128.%d.0/24", j%4)}}},
				},
				Ports: []networkingv1.NetworkPolicyPort{{Protocol: &tcp, Port: &num}, {Protocol: &tcp, Port: &name},
					{Protocol: &udp, Port: &lo, EndPort: &hi}},
			}},
		},
	}
	if j%4 == 0 {
		dns := intstr.FromInt32(53)
		np.Spec.PolicyTypes = []networkingv1.PolicyType{networkingv1.PolicyTypeIngress, networkingv1.PolicyTypeEgress}
		np.Spec.Egress = []networkingv1.NetworkPolicyEgressRule{{
			To:    []networkingv1.NetworkPolicyPeer{{NamespaceSelector: &metav1.LabelSelector{}}},
			Ports: []networkingv1.NetworkPolicyPort{{Protocol: &udp, Port: &dns}, {Protocol: &tcp, Port: &dns}},
		}, {
			To: []networkingv1.NetworkPolicyPeer{{IPBlock: &networkingv1.IPBlock{CIDR: "0.0.0.0/0", Except: []string{"10.0.0.0/8"}}}},
		}}
	}
	return np
}

// netpolChild is the child's main: it programs the engine in its own
// network namespace (the caller's nsenter put it in a fresh node) and
// prints the timings as JSON. Every figure is Engine.Sync returning:
// compile of the whole state plus the nft transaction, until the kernel
// has the change; the agent's informer and work queue are not in it.
func netpolChild() error {
	var s netpolSizes
	if err := json.Unmarshal([]byte(os.Getenv(netpolChildEnv)), &s); err != nil {
		return fmt.Errorf("child sizes: %w", err)
	}
	ctx := context.Background()
	nft, err := knftables.New(knftables.InetFamily, netpol.Table)
	if err != nil {
		return err
	}
	st := netpolState(s)
	var r netpolChildResult
	sync := func(e *netpol.Engine, st netpol.State) (time.Duration, error) {
		start := time.Now()
		res, err := e.Sync(ctx, st)
		d := time.Since(start)
		if err == nil && len(res.Errors) > 0 {
			err = fmt.Errorf("policies not applied: %v", res.Errors)
		}
		r.Rules = res.Rules
		return d, err
	}
	// A new engine rewrites the whole table: what start and drift cost.
	var e *netpol.Engine
	for range 3 {
		e = netpol.New(nft)
		d, err := sync(e, st)
		if err != nil {
			return err
		}
		r.Full = append(r.Full, d)
	}
	for i := range s.Samples {
		added := st
		added.Pods = append(append([]netpol.Pod(nil), st.Pods...), netpolPod(s.Pods+i, true))
		d, err := sync(e, added)
		if err != nil {
			return err
		}
		r.PodAdd = append(r.PodAdd, d)
		if d, err = sync(e, st); err != nil {
			return err
		}
		r.PodDel = append(r.PodDel, d)
	}
	for i := range s.Samples {
		changed := st
		changed.Policies = append([]*networkingv1.NetworkPolicy(nil), st.Policies...)
		j := i % len(changed.Policies)
		changed.Policies[j] = netpolPolicy(j, 8081+int32(i%2))
		d, err := sync(e, changed)
		if err != nil {
			return err
		}
		r.PolicyChange = append(r.PolicyChange, d)
	}
	_ = e.Delete(ctx)
	return json.NewEncoder(os.Stdout).Encode(r)
}

// runNetpol measures the engine's control plane in a child process, the
// kube-router-style baseline for the same state, and pod-to-pod throughput
// with and without policies.
func runNetpol(l *lab, o *options, progress func(string)) (*netpolResult, error) {
	r := &netpolResult{sizes: netpolSizes{Pods: 1000, Local: 100, Policies: 200, Samples: 100}, dpPolicies: 100}
	if o.quick {
		r.sizes = netpolSizes{Pods: 200, Local: 20, Policies: 40, Samples: 10}
	}
	for _, tool := range []string{"nft", "iptables-restore", "ipset", "time"} {
		if _, err := exec.LookPath(tool); err != nil {
			r.skipped = tool + " is not installed"
			return r, nil
		}
	}
	node, err := l.newNS("npc")
	if err != nil {
		return nil, err
	}
	progress(fmt.Sprintf("netpol: engine with %d pods (%d local) and %d policies, %d samples", r.sizes.Pods, r.sizes.Local, r.sizes.Policies, r.sizes.Samples))
	if err := r.runChild(node); err != nil {
		return nil, err
	}
	progress("netpol: the same state as kube-router-style iptables and ipsets")
	if err := r.runIptables(node); err != nil {
		return nil, err
	}
	progress("netpol: pod-to-pod throughput with and without policies")
	if err := r.runDataPlane(l, o); err != nil {
		return nil, err
	}
	return r, nil
}

func (r *netpolResult) runChild(node ns.NetNS) error {
	self, err := os.Executable()
	if err != nil {
		return err
	}
	sizes, _ := json.Marshal(r.sizes)
	rss, err := os.CreateTemp("", "vethroute-netpol-rss-")
	if err != nil {
		return err
	}
	rss.Close()
	defer os.Remove(rss.Name())
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	// GNU time, not wait4 from here: see peakRSS.
	cmd := exec.CommandContext(ctx, "nsenter", "--net="+node.Path(), "time", "-f", "%M", "-o", rss.Name(), self)
	cmd.Env = append(os.Environ(), netpolChildEnv+"="+string(sizes))
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("netpol engine child: %v\n%s", err, errb.Bytes())
	}
	if err := json.Unmarshal(out.Bytes(), &r.child); err != nil {
		return fmt.Errorf("netpol engine child output: %w\n%s", err, out.Bytes())
	}
	b, err := os.ReadFile(rss.Name())
	if err != nil {
		return err
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return fmt.Errorf("GNU time wrote nothing")
	}
	r.rssKB, err = strconv.ParseInt(f[len(f)-1], 10, 64)
	return err
}

// kubeRouterRules renders st the way kube-router's iptables controller
// compiles policies (chain layout and marks as its design document
// describes; written here, IPv4 only): an ipset of target pods per policy
// and of peers per rule, a KUBE-NWPLCY chain per policy that marks
// allowed packets, a KUBE-POD-FW chain per isolated local pod that accepts
// established traffic and the node, runs the pod's policies and rejects
// what no policy marked. It returns the ipset and iptables-restore inputs.
func kubeRouterRules(st netpol.State) (sets, rules string, nSets, nRules int) {
	nsLabels := map[string]labels.Set{}
	for _, n := range st.Namespaces {
		nsLabels[n.Name] = n.Labels
	}
	match := func(sel *metav1.LabelSelector, l map[string]string) bool {
		s, err := metav1.LabelSelectorAsSelector(sel)
		return err == nil && s.Matches(labels.Set(l))
	}
	v4 := func(p netpol.Pod) string {
		for _, a := range p.IPs {
			if a.Is4() {
				return a.String()
			}
		}
		return ""
	}
	var sb, rb strings.Builder
	set := func(name, typ string, members []string) {
		nSets++
		fmt.Fprintf(&sb, "create %s %s family inet -exist\nflush %s\n", name, typ, name)
		for _, m := range members {
			fmt.Fprintf(&sb, "add %s %s -exist\n", name, m)
		}
	}
	rule := func(format string, a ...any) {
		nRules++
		fmt.Fprintf(&rb, format+"\n", a...)
	}
	var chains []string
	podPolicies := map[string][]string{} // local pod IP -> policy chains
	ingress, egress := map[string]bool{}, map[string]bool{}
	var body strings.Builder
	for j, np := range st.Policies {
		chain := fmt.Sprintf("KUBE-NWPLCY-%d", j)
		chains = append(chains, chain)
		tgt := fmt.Sprintf("KR-TGT-%d", j)
		var targets []string
		for _, p := range st.Pods {
			if p.Namespace == np.Namespace && match(&np.Spec.PodSelector, p.Labels) && v4(p) != "" {
				targets = append(targets, v4(p))
				if p.HostVeth != "" {
					podPolicies[v4(p)] = append(podPolicies[v4(p)], chain)
					ingress[v4(p)] = true
					if len(np.Spec.Egress) > 0 {
						egress[v4(p)] = true
					}
				}
			}
		}
		set(tgt, "hash:ip", targets)
		for k, in := range np.Spec.Ingress {
			var peers, nets []string
			for _, peer := range in.From {
				if peer.IPBlock != nil {
					nets = append(nets, peer.IPBlock.CIDR)
					for _, e := range peer.IPBlock.Except {
						nets = append(nets, e+" nomatch")
					}
					continue
				}
				for _, p := range st.Pods {
					nsOK := p.Namespace == np.Namespace
					if peer.NamespaceSelector != nil {
						nsOK = match(peer.NamespaceSelector, nsLabels[p.Namespace])
					}
					if nsOK && (peer.PodSelector == nil || match(peer.PodSelector, p.Labels)) && v4(p) != "" {
						peers = append(peers, v4(p))
					}
				}
			}
			src, cidr := fmt.Sprintf("KR-SRC-%d-%d", j, k), fmt.Sprintf("KR-CIDR-%d-%d", j, k)
			set(src, "hash:ip", peers)
			set(cidr, "hash:net", nets)
			for _, from := range []string{src, cidr} {
				for _, pp := range in.Ports {
					proto, port := "tcp", "8080" // the one named port, "http", is 8080 on every pod
					if pp.Protocol != nil {
						proto = strings.ToLower(string(*pp.Protocol))
					}
					if pp.Port != nil && pp.Port.Type == intstr.Int {
						port = pp.Port.String()
						if pp.EndPort != nil {
							port += ":" + strconv.Itoa(int(*pp.EndPort))
						}
					}
					nRules++
					fmt.Fprintf(&body, "-A %s -m set --match-set %s src -m set --match-set %s dst -p %s --dport %s -j MARK --set-xmark 0x10000/0x10000\n",
						chain, from, tgt, proto, port)
				}
			}
		}
		nRules++
		fmt.Fprintf(&body, "-A %s -m mark --mark 0x10000/0x10000 -j RETURN\n", chain)
	}
	rb.WriteString("*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:KUBE-ROUTER-FORWARD - [0:0]\n")
	local := make([]string, 0, len(podPolicies))
	for ip := range podPolicies {
		local = append(local, ip)
	}
	sort.Strings(local)
	for i := range local {
		chains = append(chains, fmt.Sprintf("KUBE-POD-FW-%d", i))
	}
	for _, c := range chains {
		fmt.Fprintf(&rb, ":%s - [0:0]\n", c)
	}
	rule("-A FORWARD -j KUBE-ROUTER-FORWARD")
	for i, ip := range local {
		fw := fmt.Sprintf("KUBE-POD-FW-%d", i)
		if ingress[ip] {
			rule("-A KUBE-ROUTER-FORWARD -d %s -j %s", ip, fw)
		}
		if egress[ip] {
			rule("-A KUBE-ROUTER-FORWARD -s %s -j %s", ip, fw)
		}
		rule("-A %s -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT", fw)
		rule("-A %s -m addrtype --src-type LOCAL -d %s -j ACCEPT", fw, ip)
		for _, c := range podPolicies[ip] {
			rule("-A %s -j %s", fw, c)
		}
		rule("-A %s -m mark ! --mark 0x10000/0x10000 -j REJECT", fw)
		rule("-A %s -j MARK --set-mark 0/0x10000", fw)
	}
	rb.WriteString(body.String())
	rb.WriteString("COMMIT\n")
	return sb.String(), rb.String(), nSets, nRules
}

// restore loads a kube-router-style ruleset into node: ipsets first (the
// rules refer to them), then the whole filter table.
func restore(node ns.NetNS, sets, rules string) (time.Duration, error) {
	start := time.Now()
	for _, step := range []struct {
		args  []string
		input string
	}{{[]string{"ipset", "restore"}, sets}, {[]string{"iptables-restore", "-w"}, rules}} {
		cmd := exec.Command("nsenter", append([]string{"--net=" + node.Path()}, step.args...)...)
		cmd.Stdin = strings.NewReader(step.input)
		if out, err := cmd.CombinedOutput(); err != nil {
			return 0, fmt.Errorf("%s: %v\n%s", strings.Join(step.args, " "), err, out)
		}
	}
	return time.Since(start), nil
}

func (r *netpolResult) runIptables(node ns.NetNS) error {
	st := netpolState(r.sizes)
	sets, rules, nSets, nRules := kubeRouterRules(st)
	r.iptSets, r.iptRules = nSets, nRules
	for range 3 {
		d, err := restore(node, sets, rules)
		if err != nil {
			return err
		}
		r.iptFull = append(r.iptFull, d)
	}
	// A pod add is a full sync for kube-router: the rules are rendered
	// again from the whole state and restored.
	for i := range max(10, r.sizes.Samples/5) {
		start := time.Now()
		added := st
		added.Pods = append(append([]netpol.Pod(nil), st.Pods...), netpolPod(r.sizes.Pods+i, true))
		sets, rules, _, _ := kubeRouterRules(added)
		render := time.Since(start)
		d, err := restore(node, sets, rules)
		if err != nil {
			return err
		}
		r.iptPodAdd = append(r.iptPodAdd, render+d)
	}
	_, err := restore(node, "", "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\nCOMMIT\n")
	return err
}

// runDataPlane puts two pods on a node (pkg/routing, as the plugin wires
// them) and runs iperf3 from one to the other with no policy, with
// dpPolicies policies selecting both pods through the engine (the last one
// allowing iperf3's port, each other one another port), and with the same
// policies as kube-router-style iptables, rounds alternating.
func (r *netpolResult) runDataPlane(l *lab, o *options) error {
	node, err := l.newNS("npd")
	if err != nil {
		return err
	}
	srv, cli := netip.MustParseAddr("10.129.0.1"), netip.MustParseAddr("10.129.0.2")
	st := netpol.State{Namespaces: []netpol.Namespace{{Name: "dp", Labels: map[string]string{"kubernetes.io/metadata.name": "dp"}}}}
	var pods [2]ns.NetNS
	for i, ip := range []netip.Addr{srv, cli} {
		if pods[i], err = l.newNS("npp"); err != nil {
			return err
		}
		id := fmt.Sprintf("netpol-dp-%d", i)
		a := &routing.Attachment{Network: "bench", ContainerID: id, IfName: "eth0", NetNS: pods[i].Path(), MTU: 1500,
			Addresses: []routing.Address{{IPNet: net.IPNet{IP: ip.AsSlice(), Mask: net.CIDRMask(24, 32)}, Gateway: net.ParseIP("10.129.0.254")}},
			Routes:    []*types.Route{{Dst: net.IPNet{IP: net.IPv4zero.To4(), Mask: net.CIDRMask(0, 32)}}}}
		if err := node.Do(func(ns.NetNS) error { _, err := routing.Setup(a); return err }); err != nil {
			return fmt.Errorf("data-plane pod: %w", err)
		}
		st.Pods = append(st.Pods, netpol.Pod{Namespace: "dp", Name: id, Labels: map[string]string{"app": "dp"},
			IPs: []netip.Addr{ip}, HostVeth: routing.HostVethName(id, "eth0")})
	}
	for k := range r.dpPolicies {
		port := intstr.FromInt32(int32(10000 + k))
		if k == r.dpPolicies-1 {
			n, _ := strconv.Atoi(iperfPort)
			port = intstr.FromInt32(int32(n))
		}
		tcp := corev1.ProtocolTCP
		peer := []networkingv1.NetworkPolicyPeer{{PodSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "dp"}}}}
		ports := []networkingv1.NetworkPolicyPort{{Protocol: &tcp, Port: &port}}
		st.Policies = append(st.Policies, &networkingv1.NetworkPolicy{
			ObjectMeta: metav1.ObjectMeta{Namespace: "dp", Name: fmt.Sprintf("dp-%d", k)},
			Spec: networkingv1.NetworkPolicySpec{
				PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"app": "dp"}},
				PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeIngress, networkingv1.PolicyTypeEgress},
				Ingress:     []networkingv1.NetworkPolicyIngressRule{{From: peer, Ports: ports}},
				Egress:      []networkingv1.NetworkPolicyEgressRule{{To: peer, Ports: ports}},
			},
		})
	}
	server := exec.Command("nsenter", "--net="+pods[0].Path(), "iperf3", "-s", "-B", srv.String(), "-p", iperfPort)
	if err := server.Start(); err != nil {
		return fmt.Errorf("start iperf3 server: %w", err)
	}
	l.onClose(func() { _ = server.Process.Kill(); _ = server.Wait() })

	var nft knftables.Interface
	if err := node.Do(func(ns.NetNS) (err error) {
		nft, err = knftables.New(knftables.InetFamily, netpol.Table)
		return err
	}); err != nil {
		return err
	}
	sets, rules, _, _ := kubeRouterRules(st)
	empty := "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\nCOMMIT\n"
	configs := []struct {
		into  *[]float64
		apply func() error
	}{
		{&r.dpNone, func() error { return nil }},
		{&r.dpVeth, func() error {
			return node.Do(func(ns.NetNS) error {
				res, err := netpol.New(nft).Sync(context.Background(), st)
				if err == nil && len(res.Errors) > 0 {
					err = fmt.Errorf("policies not applied: %v", res.Errors)
				}
				return err
			})
		}},
		{&r.dpIptables, func() error { _, err := restore(node, sets, rules); return err }},
	}
	clear := func() error {
		if err := node.Do(func(ns.NetNS) error { return netpol.New(nft).Delete(context.Background()) }); err != nil {
			return err
		}
		_, err := restore(node, "", empty)
		return err
	}
	for round := range o.iperfRounds {
		for j := range configs {
			c := configs[(round+j)%len(configs)]
			if err := clear(); err != nil {
				return err
			}
			if err := c.apply(); err != nil {
				return err
			}
			bps, err := iperf(pods[1], srv.AsSlice(), o.iperfTime)
			if err != nil {
				r.errs = append(r.errs, err.Error())
				continue
			}
			*c.into = append(*c.into, bps)
		}
	}
	return clear()
}

func (r *report) writeNetpol(w func(string, ...any)) {
	n := r.netpol
	if n == nil {
		return
	}
	w("## NetworkPolicy (pkg/netpol)\n\n")
	if n.skipped != "" {
		w("Skipped: %s.\n\n", n.skipped)
		return
	}
	c := n.child
	w("Control plane: a state of %d pods (%d on the node) in %d namespaces and %d policies (selectors alone and together, an ipBlock with except, a number, a named port and a UDP range each; every fourth with egress rules), ",
		n.sizes.Pods, n.sizes.Local, netpolNamespaces, n.sizes.Policies)
	w("programmed by `pkg/netpol` in a namespace of its own, in a process of its own. A figure is `Engine.Sync` returning: the whole state compiled and the difference committed by one `nft` transaction; the agent's informers and work queue are not in it. ")
	w("The baseline is the same state compiled the way kube-router's iptables controller does it (ipsets of targets and peers, a marking chain per policy, a firewall chain per isolated pod, rendered here, IPv4 only, iptables %s), where any pod or policy event is a full `ipset restore` + `iptables-restore`.\n\n", iptablesVersion())
	w("| | vethroute (nftables, incremental) | kube-router-style iptables (full restore) |\n|---|---|---|\n")
	w("| rules | %d | %d (and %d ipsets) |\n", c.Rules, n.iptRules, n.iptSets)
	w("| full sync (start, drift): median of %d | %s | %s |\n", len(c.Full), durations(c.Full).median().Round(time.Microsecond), n.iptFull.median().Round(time.Microsecond))
	w("| pod add on the node: p50 / p99 (%d / %d samples) | %s / %s | %s / %s |\n", len(c.PodAdd), len(n.iptPodAdd),
		durations(c.PodAdd).median().Round(time.Microsecond), durations(c.PodAdd).p99().Round(time.Microsecond),
		n.iptPodAdd.median().Round(time.Microsecond), n.iptPodAdd.p99().Round(time.Microsecond))
	w("| pod delete: p50 / p99 | %s / %s | (a full restore) |\n", durations(c.PodDel).median().Round(time.Microsecond), durations(c.PodDel).p99().Round(time.Microsecond))
	w("| policy change: p50 / p99 (%d samples) | %s / %s | (a full restore) |\n", len(c.PolicyChange),
		durations(c.PolicyChange).median().Round(time.Microsecond), durations(c.PolicyChange).p99().Round(time.Microsecond))
	w("| peak RSS (GNU time: the engine's process or an `nft` it ran, whichever peaked) | %s | — |\n\n", mib(n.rssKB))
	w("Data plane: two pods on one node (`pkg/routing`), iperf3 TCP from one to the other, %s per run, rounds alternating; %d policies select both pods for ingress and egress, each allowing a port of its own, the last one iperf3's. Gbit/s, best / median (runs):\n\n", r.opts.iperfTime, n.dpPolicies)
	w("| no policy | vethroute, %d policies | kube-router-style iptables, %d policies | ratio vethroute / none (best) |\n|---|---|---|---|\n", n.dpPolicies, n.dpPolicies)
	ratio := 0.0
	if maxFloat(n.dpNone) > 0 {
		ratio = maxFloat(n.dpVeth) / maxFloat(n.dpNone)
	}
	w("| %s / %s (%s) | %s / %s (%s) | %s / %s (%s) | %s |\n\n",
		gbps(maxFloat(n.dpNone)), gbps(medianFloat(n.dpNone)), runList(n.dpNone),
		gbps(maxFloat(n.dpVeth)), gbps(medianFloat(n.dpVeth)), runList(n.dpVeth),
		gbps(maxFloat(n.dpIptables)), gbps(medianFloat(n.dpIptables)), runList(n.dpIptables), fmtRatio(ratio))
	for _, e := range n.errs {
		w("Data-plane error: `%s`\n\n", oneLine(e))
	}
}

func iptablesVersion() string {
	out, err := exec.Command("iptables", "--version").Output()
	if err != nil {
		return "(version unknown)"
	}
	return strings.TrimSpace(strings.TrimPrefix(string(out), "iptables "))
}
