package kindchaos_test

import (
	"encoding/json"
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
)

// nodeState is what one node holds for vethroute, read in one docker exec.
type nodeState struct {
	ips       []string // reservation records: <dataDir>/<network>/ips/<address>
	owners    []string // owner records: <containerID>:<ifname>
	veths     []veth   // links in vethroute's device group
	routes    []string // proto 87 routes, "dst via gateway"
	sandboxes []sandbox
	agent     *container // the running agent container, if any
	seen      time.Time  // when the routes were read, by the node's clock
}

type veth struct{ name, alias string }

type sandbox struct {
	id, namespace, name, uid string
	ready                    bool
}

type container struct {
	id      string
	created time.Time
}

// stateScript prints the sections parseState reads.
func stateScript(dataDir, network string) string {
	store := dataDir + "/" + network
	return strings.Join([]string{
		"echo @ips; ls -1 " + store + "/ips 2>/dev/null",
		"echo @owners; ls -1 " + store + "/owners 2>/dev/null",
		// The node's clock (the machine's) just before the routes are
		// read: when they were seen, whatever docker exec's latency.
		"echo @links; ip -j -d link show group " + vethGroup,
		"echo @now; date +%s%N",
		"echo @routes4; ip -j -4 route show proto " + agentRouteProto,
		"echo @routes6; ip -j -6 route show proto " + agentRouteProto,
		"echo @pods; crictl pods -o json",
		"echo @agent; crictl ps --name '^agent$' --state running -o json",
		"echo @end",
	}, "; ")
}

const (
	// vethGroup is the device group of every host veth vethroute creates
	// (pkg/routing.LinkGroup).
	vethGroup = "30322"
	// agentRouteProto is the protocol of the agent's routes toward other
	// nodes' pod CIDRs (the agent's --route-protocol default,
	// netconf.AgentRouteProtocol).
	agentRouteProto = "87"
)

// parseState reads stateScript's output. A section that is missing or
// does not parse is an error: a check must never pass on output it could
// not read.
func parseState(out string) (nodeState, error) {
	var st nodeState
	sections := map[string]string{}
	var cur string
	for _, line := range strings.Split(out, "\n") {
		if name, ok := strings.CutPrefix(line, "@"); ok && !strings.ContainsAny(name, " {") {
			cur = name
			sections[cur] = ""
			continue
		}
		if cur != "" {
			sections[cur] += line + "\n"
		}
	}
	for _, s := range []string{"ips", "owners", "links", "now", "routes4", "routes6", "pods", "agent", "end"} {
		if _, ok := sections[s]; !ok {
			return st, fmt.Errorf("node state lacks section %q:\n%s", s, out)
		}
	}
	st.ips = strings.Fields(sections["ips"])
	st.owners = strings.Fields(sections["owners"])
	var links []struct {
		IfName  string `json:"ifname"`
		IfAlias string `json:"ifalias"`
	}
	if err := json.Unmarshal([]byte(sections["links"]), &links); err != nil {
		return st, fmt.Errorf("ip -j link: %w\n%s", err, sections["links"])
	}
	for _, l := range links {
		if l.IfName == "" {
			// ip -j prints an empty object for each link the group
			// filter left out.
			continue
		}
		st.veths = append(st.veths, veth{l.IfName, l.IfAlias})
	}
	now, err := strconv.ParseInt(strings.TrimSpace(sections["now"]), 10, 64)
	if err != nil {
		return st, fmt.Errorf("node clock %q: %w", sections["now"], err)
	}
	st.seen = time.Unix(0, now)
	for _, fam := range []string{"routes4", "routes6"} {
		var routes []struct {
			Dst     string `json:"dst"`
			Gateway string `json:"gateway"`
			Via     *struct {
				Host string `json:"host"`
			} `json:"via"`
		}
		if err := json.Unmarshal([]byte(sections[fam]), &routes); err != nil {
			return st, fmt.Errorf("ip -j route (%s): %w\n%s", fam, err, sections[fam])
		}
		for _, r := range routes {
			gw := r.Gateway
			if gw == "" && r.Via != nil {
				gw = r.Via.Host
			}
			st.routes = append(st.routes, r.Dst+" via "+gw)
		}
	}
	slices.Sort(st.routes)
	var pods struct {
		Items []struct {
			ID       string `json:"id"`
			State    string `json:"state"`
			Metadata struct {
				Name      string `json:"name"`
				Namespace string `json:"namespace"`
				UID       string `json:"uid"`
			} `json:"metadata"`
		} `json:"items"`
	}
	if err := json.Unmarshal([]byte(sections["pods"]), &pods); err != nil {
		return st, fmt.Errorf("crictl pods: %w\n%s", err, sections["pods"])
	}
	for _, p := range pods.Items {
		st.sandboxes = append(st.sandboxes, sandbox{id: p.ID, namespace: p.Metadata.Namespace, name: p.Metadata.Name,
			uid: p.Metadata.UID, ready: p.State == "SANDBOX_READY"})
	}
	var agents struct {
		Containers []struct {
			ID        string `json:"id"`
			CreatedAt string `json:"createdAt"`
		} `json:"containers"`
	}
	if err := json.Unmarshal([]byte(sections["agent"]), &agents); err != nil {
		return st, fmt.Errorf("crictl ps: %w\n%s", err, sections["agent"])
	}
	for _, a := range agents.Containers {
		ns, err := strconv.ParseInt(a.CreatedAt, 10, 64)
		if err != nil {
			return st, fmt.Errorf("agent container %s createdAt %q: %w", a.ID, a.CreatedAt, err)
		}
		if st.agent == nil || time.Unix(0, ns).After(st.agent.created) {
			st.agent = &container{id: a.ID, created: time.Unix(0, ns)}
		}
	}
	return st, nil
}

// apiPod is a pod as the API server reports it.
type apiPod struct {
	namespace, name, uid, node string
	hostNetwork, running       bool
	ips                        []string
}

func fromAPI(p *corev1.Pod) apiPod {
	a := apiPod{namespace: p.Namespace, name: p.Name, uid: string(p.UID), node: p.Spec.NodeName,
		hostNetwork: p.Spec.HostNetwork,
		running:     p.Status.Phase == corev1.PodRunning && p.DeletionTimestamp == nil}
	for _, ip := range p.Status.PodIPs {
		a.ips = append(a.ips, ip.IP)
	}
	return a
}

// duplicates lists every address that two pods' status claims, among
// pods that are not finished (a finished pod's address is free again).
func duplicates(pods []apiPod) []string {
	holders := map[string][]string{}
	for _, p := range pods {
		if p.hostNetwork {
			continue
		}
		for _, ip := range p.ips {
			holders[ip] = append(holders[ip], p.namespace+"/"+p.name)
		}
	}
	var dups []string
	for ip, who := range holders {
		if len(who) > 1 {
			dups = append(dups, fmt.Sprintf("%s held by %s", ip, strings.Join(who, " and ")))
		}
	}
	slices.Sort(dups)
	return dups
}

// mismatches compares one node's reservations and veths with the pods the
// API server says run there (with their own network): every running pod
// has its addresses reserved, one owner record and one veth, each found
// through its ready sandbox; nothing else is reserved or linked.
func mismatches(st nodeState, pods []apiPod, node, network string) []string {
	var problems []string
	running := map[string]apiPod{} // by UID
	wantIPs := map[string]string{}
	for _, p := range pods {
		if p.node != node || p.hostNetwork || !p.running {
			continue
		}
		running[p.uid] = p
		for _, ip := range p.ips {
			wantIPs[canonIP(ip)] = p.namespace + "/" + p.name
		}
	}
	podOf := map[string]apiPod{} // ready sandbox ID -> running pod
	for _, s := range st.sandboxes {
		if p, ok := running[s.uid]; ok && s.ready {
			podOf[s.id] = p
		}
	}
	gotIPs := map[string]bool{}
	for _, ip := range st.ips {
		gotIPs[canonIP(ip)] = true
		if _, ok := wantIPs[canonIP(ip)]; !ok {
			problems = append(problems, fmt.Sprintf("address %s is reserved but no running pod on %s has it", ip, node))
		}
	}
	for ip, who := range wantIPs {
		if !gotIPs[ip] {
			problems = append(problems, fmt.Sprintf("pod %s's address %s has no reservation", who, ip))
		}
	}
	owned := map[string]int{} // pod UID -> owner records
	for _, o := range st.owners {
		id, _, _ := strings.Cut(o, ":")
		p, ok := podOf[id]
		if !ok {
			problems = append(problems, fmt.Sprintf("reservation owner %s is no running pod's sandbox", o))
			continue
		}
		owned[p.uid]++
	}
	linked := map[string]int{}
	for _, v := range st.veths {
		parts := strings.Split(v.alias, ":")
		if len(parts) != 4 || parts[0] != "vethroute" || parts[1] != network {
			problems = append(problems, fmt.Sprintf("veth %s has no alias of network %s (%q): without its pod", v.name, network, v.alias))
			continue
		}
		p, ok := podOf[parts[2]]
		if !ok {
			problems = append(problems, fmt.Sprintf("veth %s (%s) exists without its pod", v.name, v.alias))
			continue
		}
		linked[p.uid]++
	}
	for uid, p := range running {
		if owned[uid] != 1 || linked[uid] != 1 {
			problems = append(problems, fmt.Sprintf("pod %s/%s has %d owner records and %d veths, want 1 and 1", p.namespace, p.name, owned[uid], linked[uid]))
		}
	}
	slices.Sort(problems)
	return problems
}

func canonIP(s string) string {
	if ip := net.ParseIP(s); ip != nil {
		return ip.String()
	}
	return s
}

// apiNode is a node's addresses and pod CIDRs.
type apiNode struct {
	name     string
	addrs    []string // InternalIPs
	podCIDRs []string
}

// wantRoutes is what the agent on self must route: every other node's pod
// CIDRs via that node's InternalIP of the same family.
func wantRoutes(nodes []apiNode, self string) ([]string, error) {
	var want []string
	for _, n := range nodes {
		if n.name == self {
			continue
		}
		for _, c := range n.podCIDRs {
			_, ipn, err := net.ParseCIDR(c)
			if err != nil {
				return nil, fmt.Errorf("node %s pod CIDR %q: %w", n.name, c, err)
			}
			gw := ""
			for _, a := range n.addrs {
				if ip := net.ParseIP(a); ip != nil && (ip.To4() != nil) == (ipn.IP.To4() != nil) {
					gw = ip.String()
				}
			}
			if gw == "" {
				return nil, fmt.Errorf("node %s has no InternalIP of %s's family", n.name, c)
			}
			want = append(want, ipn.String()+" via "+gw)
		}
	}
	slices.Sort(want)
	return want, nil
}

func nodesFromAPI(list []corev1.Node) []apiNode {
	var out []apiNode
	for _, n := range list {
		a := apiNode{name: n.Name, podCIDRs: n.Spec.PodCIDRs}
		for _, ad := range n.Status.Addresses {
			if ad.Type == corev1.NodeInternalIP {
				a.addrs = append(a.addrs, ad.Address)
			}
		}
		out = append(out, a)
	}
	return out
}
