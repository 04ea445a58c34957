package kindchaos_test

// The tests in this file check the chaos run's own reading of a node and
// its comparisons; they need neither root nor a cluster.

import (
	"slices"
	"strings"
	"testing"
	"time"
)

const sampleState = `@ips
10.244.1.5
fd00:10:244:1::5
@owners
aaa:eth0
@links
[{},{"ifindex":7,"ifname":"vrt0123456789ab","ifalias":"vethroute:vethroute:aaa:eth0","group":"30322"},{}]
@now
1733450001000000000
@routes4
[{"dst":"10.244.2.0/24","gateway":"172.18.0.4","dev":"eth0","protocol":"87","flags":[]}]
@routes6
[{"dst":"fd00:10:244:2::/64","gateway":"fc00:1::4","dev":"eth0","protocol":"87","flags":[]}]
@pods
{"items":[{"id":"aaa","metadata":{"name":"p","uid":"u1","namespace":"default","attempt":0},"state":"SANDBOX_READY","createdAt":"1"},
 {"id":"old","metadata":{"name":"p","uid":"u1","namespace":"default","attempt":0},"state":"SANDBOX_NOTREADY","createdAt":"0"}]}
@agent
{"containers":[{"id":"ag","createdAt":"1733450000000000000"}]}
@end
`

func TestParseState(t *testing.T) {
	st, err := parseState(sampleState)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(st.ips, []string{"10.244.1.5", "fd00:10:244:1::5"}) || !slices.Equal(st.owners, []string{"aaa:eth0"}) {
		t.Errorf("ips %v owners %v", st.ips, st.owners)
	}
	if len(st.veths) != 1 || st.veths[0].alias != "vethroute:vethroute:aaa:eth0" {
		t.Errorf("veths %v", st.veths)
	}
	if want := []string{"10.244.2.0/24 via 172.18.0.4", "fd00:10:244:2::/64 via fc00:1::4"}; !slices.Equal(st.routes, want) {
		t.Errorf("routes %v, want %v", st.routes, want)
	}
	if len(st.sandboxes) != 2 || !st.sandboxes[0].ready || st.sandboxes[1].ready {
		t.Errorf("sandboxes %+v", st.sandboxes)
	}
	if st.agent == nil || !st.agent.created.Equal(time.Unix(0, 1733450000000000000)) {
		t.Errorf("agent %+v", st.agent)
	}
	if !st.seen.Equal(time.Unix(0, 1733450001000000000)) {
		t.Errorf("seen %s", st.seen)
	}
	// Output that lost a section, or carries a broken one, is an error,
	// never an empty (and so matching) state.
	for _, broken := range []string{
		strings.Replace(sampleState, "@routes6", "@other", 1),
		strings.Replace(sampleState, `{"ifindex"`, `{"ifindex`, 1),
		strings.Replace(sampleState, "1733450000000000000", "soon", 1),
	} {
		if _, err := parseState(broken); err == nil {
			t.Errorf("parseState accepted broken output:\n%s", broken)
		}
	}
}

func TestMismatches(t *testing.T) {
	base, err := parseState(sampleState)
	if err != nil {
		t.Fatal(err)
	}
	pod := apiPod{namespace: "default", name: "p", uid: "u1", node: "w1", running: true, ips: []string{"10.244.1.5", "fd00:10:244:1::5"}}
	hostNet := apiPod{namespace: "kube-system", name: "agent", uid: "u2", node: "w1", running: true, hostNetwork: true, ips: []string{"172.18.0.3"}}
	elsewhere := apiPod{namespace: "default", name: "q", uid: "u3", node: "w2", running: true, ips: []string{"10.244.2.7"}}
	tests := []struct {
		name  string
		edit  func(*nodeState)
		pods  []apiPod
		wants []string // substrings of the problems; none means a match
	}{
		{name: "matches", pods: []apiPod{pod, hostNet, elsewhere}},
		{name: "leaked reservation", edit: func(s *nodeState) { s.ips = append(s.ips, "10.244.1.9") }, pods: []apiPod{pod},
			wants: []string{"10.244.1.9 is reserved but no running pod"}},
		{name: "missing reservation", edit: func(s *nodeState) { s.ips = s.ips[:1] }, pods: []apiPod{pod},
			wants: []string{"fd00:10:244:1::5 has no reservation"}},
		{name: "leaked veth", edit: func(s *nodeState) {
			s.veths = append(s.veths, veth{"vrtffffffffffff", "vethroute:vethroute:gone:eth0"})
		},
			pods: []apiPod{pod}, wants: []string{"veth vrtffffffffffff (vethroute:vethroute:gone:eth0) exists without its pod"}},
		{name: "veth without alias", edit: func(s *nodeState) { s.veths = append(s.veths, veth{"vrtffffffffffff", ""}) },
			pods: []apiPod{pod}, wants: []string{"veth vrtffffffffffff has no alias"}},
		{name: "leaked owner", edit: func(s *nodeState) { s.owners = append(s.owners, "gone:eth0") }, pods: []apiPod{pod},
			wants: []string{"owner gone:eth0 is no running pod's sandbox"}},
		{name: "pod deleted, state left", pods: nil,
			wants: []string{"10.244.1.5 is reserved", "owner aaa:eth0", "veth vrt0123456789ab"}},
		{name: "sandbox not ready", edit: func(s *nodeState) { s.sandboxes[0].ready = false }, pods: []apiPod{pod},
			wants: []string{"has 0 owner records and 0 veths"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			st := base
			st.ips, st.owners = slices.Clone(base.ips), slices.Clone(base.owners)
			st.veths, st.sandboxes = slices.Clone(base.veths), slices.Clone(base.sandboxes)
			if tc.edit != nil {
				tc.edit(&st)
			}
			got := mismatches(st, tc.pods, "w1", "vethroute")
			if len(tc.wants) == 0 && len(got) > 0 {
				t.Errorf("problems %q, want none", got)
			}
			if len(tc.wants) > 0 && len(got) == 0 {
				t.Errorf("no problem found, want %q", tc.wants)
			}
			for _, w := range tc.wants {
				if !strings.Contains(strings.Join(got, "\n"), w) {
					t.Errorf("problems %q lack %q", got, w)
				}
			}
		})
	}
}

func TestDuplicates(t *testing.T) {
	pods := []apiPod{
		{namespace: "default", name: "a", ips: []string{"10.244.1.5"}},
		{namespace: "default", name: "b", ips: []string{"10.244.1.6"}},
		{namespace: "kube-system", name: "h1", hostNetwork: true, ips: []string{"172.18.0.3"}},
		{namespace: "kube-system", name: "h2", hostNetwork: true, ips: []string{"172.18.0.3"}},
	}
	if d := duplicates(pods); len(d) != 0 {
		t.Errorf("duplicates %q, want none (host-network pods share the node's address)", d)
	}
	pods = append(pods, apiPod{namespace: "default", name: "c", ips: []string{"10.244.1.5"}})
	if d := duplicates(pods); len(d) != 1 || !strings.Contains(d[0], "default/a and default/c") {
		t.Errorf("duplicates %q, want 10.244.1.5 held by a and c", d)
	}
}

func TestWantRoutes(t *testing.T) {
	nodes := []apiNode{
		{name: "cp", addrs: []string{"172.18.0.2", "fc00:1::2"}, podCIDRs: []string{"10.244.0.0/24", "fd00:10:244::/64"}},
		{name: "w1", addrs: []string{"172.18.0.3", "fc00:1::3"}, podCIDRs: []string{"10.244.1.0/24", "fd00:10:244:1::/64"}},
	}
	got, err := wantRoutes(nodes, "w1")
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"10.244.0.0/24 via 172.18.0.2", "fd00:10:244::/64 via fc00:1::2"}; !slices.Equal(got, want) {
		t.Errorf("wantRoutes %v, want %v", got, want)
	}
	nodes[0].addrs = nodes[0].addrs[:1]
	if _, err := wantRoutes(nodes, "w1"); err == nil {
		t.Error("wantRoutes accepted a node without an IPv6 InternalIP for its IPv6 pod CIDR")
	}
}

func TestMedian(t *testing.T) {
	s := time.Second
	for _, tc := range []struct {
		in   []time.Duration
		want time.Duration
	}{
		{[]time.Duration{3 * s}, 3 * s},
		{[]time.Duration{5 * s, 1 * s, 3 * s}, 3 * s},
		{[]time.Duration{4 * s, 2 * s}, 3 * s},
	} {
		if got := median(tc.in); got != tc.want {
			t.Errorf("median(%v) = %s, want %s", tc.in, got, tc.want)
		}
	}
}
