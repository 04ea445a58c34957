// Package reliability attacks the built vethroute binary the way production
// does: it is SIGKILLed at random instants, run 64 times at once on a pool
// barely larger than the pods, fed hostile input, made to share a node with
// interfaces and routes it did not create, and pointed at a tampered store.
// After each attack it checks what must always hold: nothing leaked, no
// address held twice, no lock left held, the store readable.
//
// Everything runs inside network namespaces the tests create (a node
// namespace per test, container namespaces beside it); the plugin is
// executed directly, from inside the node namespace, with the environment a
// runtime would give it. It needs root. Randomised tests print their seed;
// replay one with -seed=N (go test ./test/reliability/ -args -seed=N) or
// VETHROUTE_SEED=N.
package reliability

import (
	"encoding/json"
	"flag"
	"fmt"
	"hash/fnv"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"

	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/containernetworking/plugins/plugins/ipam/host-local/backend/allocator"
	"github.com/vethroute/vethroute/internal/testutil"
	"github.com/vethroute/vethroute/pkg/ipam"
	"github.com/vethroute/vethroute/pkg/routing"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// network is the name of every test network; each test has its own node
// namespace and dataDir, so they never share state.
const network = "reltest"

var seedFlag = flag.Int64("seed", 0, "seed of the randomised tests (default: VETHROUTE_SEED, else the clock)")

// newRand returns the test's random source and logs the seed that replays it.
// Each test mixes its own name in, so replaying one test replays it exactly
// whatever else runs.
func newRand(t *testing.T) *rand.Rand {
	t.Helper()
	seed := *seedFlag
	if seed == 0 {
		if s := os.Getenv("VETHROUTE_SEED"); s != "" {
			v, err := strconv.ParseInt(s, 10, 64)
			if err != nil {
				t.Fatalf("VETHROUTE_SEED=%q: %v", s, err)
			}
			seed = v
		}
	}
	if seed == 0 {
		seed = rand.Int64N(1<<62) + 1
	}
	t.Logf("seed %d (replay: go test ./test/reliability/ -run '^%s$' -args -seed=%d, or VETHROUTE_SEED=%d)", seed, t.Name(), seed, seed)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("FAILED with seed %d", seed)
		}
	})
	h := fnv.New64a()
	h.Write([]byte(t.Name()))
	return rand.New(rand.NewPCG(uint64(seed), h.Sum64()))
}

// fixture is one node namespace, the plugin binary and a network config.
type fixture struct {
	t      testing.TB
	node   *testutil.Node
	bin    string
	conf   []byte
	ranges []allocator.RangeSet
	// ownAddrs are the node addresses the test itself configured, which
	// requireConsistent does not count as leaks.
	ownAddrs map[string]bool
}

// newFixture makes a node and renders a single-plugin config. ranges is the
// JSON of ipam.ranges; extra is appended to the plugin object.
func newFixture(t testing.TB, ranges, extra string) *fixture {
	t.Helper()
	node := testutil.NewNode(t)
	// A runtime's node has forwarding on and its loopback up; the plugin
	// would turn forwarding on with the first ADD, so doing it here keeps
	// that one-off change out of every before/after comparison.
	testutil.MustRunIn(t, node.NS, "ip", "link", "set", "lo", "up")
	testutil.MustRunIn(t, node.NS, "sysctl", "-qw", "net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1")
	f := &fixture{t: t, node: node, bin: filepath.Join(testutil.PluginDir(t), "vethroute")}
	f.conf = []byte(f.render(ranges, extra))
	ic, _, err := allocator.LoadIPAMConfig(f.conf, "")
	if err != nil {
		t.Fatalf("load ipam config: %v\n%s", err, f.conf)
	}
	f.ranges = ic.Ranges
	f.acceptNodeAddrs()
	return f
}

// acceptNodeAddrs records the node's present addresses as the test's own.
func (f *fixture) acceptNodeAddrs() {
	f.ownAddrs = map[string]bool{}
	for _, a := range f.view().addrs {
		f.ownAddrs[a] = true
	}
}

func (f *fixture) render(ranges, extra string) string {
	return fmt.Sprintf(`{"cniVersion": "1.1.0", "name": %q, "type": "vethroute"%s,
  "ipam": {"type": "vethroute", "ranges": %s, "routes": [{"dst": "0.0.0.0/0"}, {"dst": "::/0"}], "dataDir": %q}}`,
		network, extra, ranges, f.node.DataDir)
}

// inv builds an invocation with the fixture's config and the usual env.
func (f *fixture) inv(cmd, cid, netnsPath string) testutil.Invocation {
	return testutil.Invocation{
		Env:   testutil.CNIEnv(cmd, cid, netnsPath, "eth0", "", filepath.Dir(f.bin)),
		Stdin: f.conf,
	}
}

func (f *fixture) run(inv testutil.Invocation) testutil.Outcome {
	f.t.Helper()
	return f.node.RunPlugin(f.t, f.bin, inv)
}

// add runs ADD and returns the container's addresses, or the outcome of a
// failure.
func (f *fixture) add(cid, netnsPath string) ([]net.IP, testutil.Outcome) {
	f.t.Helper()
	o := f.run(f.inv("ADD", cid, netnsPath))
	if o.ExitCode != 0 {
		return nil, o
	}
	ips, err := resultIPs(o.Stdout)
	if err != nil {
		f.t.Fatalf("ADD %s: %v\n%s", cid, err, o)
	}
	return ips, o
}

// mustAdd runs ADD and fails the test unless it succeeds.
func (f *fixture) mustAdd(cid, netnsPath string) []net.IP {
	f.t.Helper()
	ips, o := f.add(cid, netnsPath)
	if ips == nil {
		f.t.Fatalf("ADD %s: %s", cid, o)
	}
	return ips
}

// mustDel runs DEL and fails the test unless it succeeds.
func (f *fixture) mustDel(cid, netnsPath string) {
	f.t.Helper()
	if o := f.run(f.inv("DEL", cid, netnsPath)); o.ExitCode != 0 {
		f.t.Fatalf("DEL %s: %s", cid, o)
	}
}

// gc runs GC keeping the given container IDs (interface eth0).
func (f *fixture) gc(keep []string) testutil.Outcome {
	f.t.Helper()
	var conf map[string]any
	if err := json.Unmarshal(f.conf, &conf); err != nil {
		f.t.Fatal(err)
	}
	valid := []map[string]string{}
	for _, cid := range keep {
		valid = append(valid, map[string]string{"containerID": cid, "ifname": "eth0"})
	}
	conf["cni.dev/valid-attachments"] = valid
	b, _ := json.Marshal(conf)
	return f.run(testutil.Invocation{Env: testutil.CNIEnv("GC", "", "", "", "", filepath.Dir(f.bin)), Stdin: b})
}

// resultIPs returns the addresses of an ADD result, in order.
func resultIPs(stdout []byte) ([]net.IP, error) {
	var res current.Result
	if err := json.Unmarshal(stdout, &res); err != nil {
		return nil, fmt.Errorf("decode result: %v: %q", err, stdout)
	}
	if len(res.IPs) == 0 {
		return nil, fmt.Errorf("result has no address: %s", stdout)
	}
	var out []net.IP
	for _, ipc := range res.IPs {
		out = append(out, canon(ipc.Address.IP))
	}
	return out, nil
}

func canon(a net.IP) net.IP {
	if v4 := a.To4(); v4 != nil {
		return v4
	}
	return a
}

// storeDir is the network's directory in the fixture's store.
func (f *fixture) storeDir() string { return filepath.Join(f.node.DataDir, network) }

// reservations reads the store the way the plugin does (ipam.Open + List):
// it fails the test when the store cannot be read.
func (f *fixture) reservations() map[string][]net.IP {
	f.t.Helper()
	p, err := ipam.Open(f.node.DataDir, network, f.ranges)
	if err != nil {
		f.t.Fatalf("open store: %v", err)
	}
	defer p.Close()
	all, err := p.List()
	if err != nil {
		f.t.Fatalf("store is not readable: %v", err)
	}
	out := map[string][]net.IP{}
	for _, r := range all {
		out[r.Owner.String()] = r.IPs
	}
	return out
}

// claims returns the raw address records: address -> owner key.
func (f *fixture) claims() map[string]string {
	f.t.Helper()
	dir := filepath.Join(f.storeDir(), "ips")
	entries, err := os.ReadDir(dir)
	if err != nil && !os.IsNotExist(err) {
		f.t.Fatalf("read %s: %v", dir, err)
	}
	out := map[string]string{}
	for _, e := range entries {
		target, err := os.Readlink(filepath.Join(dir, e.Name()))
		if err != nil {
			f.t.Fatalf("address record %s is not a symlink: %v", e.Name(), err)
		}
		out[e.Name()] = target
	}
	return out
}

// requireUnlocked proves no process holds the network's lock: a
// non-blocking exclusive flock must succeed at once.
func (f *fixture) requireUnlocked() {
	f.t.Helper()
	fd, err := unix.Open(filepath.Join(f.storeDir(), "lock"), unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		f.t.Fatalf("open lock: %v", err)
	}
	defer unix.Close(fd)
	if err := unix.Flock(fd, unix.LOCK_EX|unix.LOCK_NB); err != nil {
		f.t.Fatalf("the store's lock is still held by someone: %v", err)
	}
	_ = unix.Flock(fd, unix.LOCK_UN)
}

// hostLink is a vethroute interface on the node as netlink reports it.
type hostLink struct {
	name, alias string
	index       int
	up          bool
	addrs       []string // without link-local
}

// nodeView is what the node namespace holds that vethroute could leak.
type nodeView struct {
	links  map[string]hostLink // group-30322 links by name
	routes map[string][]int    // proto-86 route destination -> ifindexes
	// addrs are the node's addresses outside lo, as "ifname addr/len",
	// IPv6 link-local ones excepted (the kernel adds those to every link).
	addrs []string
}

func withHandle[T any](t testing.TB, n ns.NetNS, f func(netlinksafe.Handle) T) T {
	t.Helper()
	h, err := netlinksafe.NewHandleAt(netns.NsHandle(n.Fd()))
	if err != nil {
		t.Fatalf("netlink handle in %s: %v", n.Path(), err)
	}
	defer h.Close()
	return f(h)
}

// view reads the node's vethroute interfaces, routes and addresses.
func (f *fixture) view() nodeView {
	f.t.Helper()
	return withHandle(f.t, f.node.NS, func(h netlinksafe.Handle) nodeView {
		v := nodeView{links: map[string]hostLink{}, routes: map[string][]int{}}
		links, err := h.LinkList()
		if err != nil {
			f.t.Fatalf("list node links: %v", err)
		}
		names := map[int]string{}
		for _, l := range links {
			at := l.Attrs()
			names[at.Index] = at.Name
			addrs, err := h.AddrList(l, netlink.FAMILY_ALL)
			if err != nil {
				f.t.Fatalf("list addresses of %s: %v", at.Name, err)
			}
			var own []string
			for _, a := range addrs {
				if a.IP.IsLinkLocalUnicast() {
					continue
				}
				own = append(own, a.IPNet.String())
				if at.Name != "lo" {
					v.addrs = append(v.addrs, at.Name+" "+a.IPNet.String())
				}
			}
			if at.Group == routing.LinkGroup {
				v.links[at.Name] = hostLink{name: at.Name, alias: at.Alias, index: at.Index, up: at.Flags&net.FlagUp != 0, addrs: own}
			}
		}
		for _, fam := range []int{netlink.FAMILY_V4, netlink.FAMILY_V6} {
			routes, err := h.RouteListFiltered(fam, &netlink.Route{Protocol: routing.RouteProtocol, Table: unix.RT_TABLE_UNSPEC},
				netlink.RT_FILTER_PROTOCOL|netlink.RT_FILTER_TABLE)
			if err != nil {
				f.t.Fatalf("list node routes: %v", err)
			}
			for _, r := range routes {
				dst := "default"
				if r.Dst != nil {
					dst = r.Dst.String()
				}
				v.routes[dst] = append(v.routes[dst], r.LinkIndex)
			}
		}
		sort.Strings(v.addrs)
		return v
	})
}

// containerLinks returns the names of a container namespace's interfaces.
func containerLinks(t testing.TB, n ns.NetNS) []string {
	t.Helper()
	return withHandle(t, n, func(h netlinksafe.Handle) []string {
		links, err := h.LinkList()
		if err != nil {
			t.Fatalf("list links in %s: %v", n.Path(), err)
		}
		var out []string
		for _, l := range links {
			out = append(out, l.Attrs().Name)
		}
		sort.Strings(out)
		return out
	})
}

// attachment is a live attachment as the test, playing the runtime, knows it.
type attachment struct {
	cid string
	ns  ns.NetNS
	ips []net.IP
}

func ownerKey(cid string) string { return cid + ":eth0" }

// requireConsistent checks every invariant against the attachments the
// runtime believes live: the store holds exactly their reservations, every
// address is claimed once and by its owner, the node has exactly their
// veths (up, aliased, with the gateways) and their proto-86 routes and no
// other address, and each container namespace holds an eth0 only while its
// attachment is live. It returns the number of violations found.
func (f *fixture) requireConsistent(live map[string]*attachment, containers []ns.NetNS, gateways []string) int {
	f.t.Helper()
	var bad []string
	fail := func(format string, a ...any) { bad = append(bad, fmt.Sprintf(format, a...)) }

	// No address held twice among live attachments.
	seen := map[string]string{}
	for _, a := range live {
		for _, ip := range a.ips {
			if other, dup := seen[ip.String()]; dup {
				fail("address %s handed to both %s and %s", ip, other, a.cid)
			}
			seen[ip.String()] = a.cid
		}
	}

	res := f.reservations()
	for key, ips := range res {
		cid, _, _ := strings.Cut(key, ":")
		a, ok := live[cid]
		switch {
		case !ok:
			fail("leaked reservation %s -> %v", key, ips)
		case !equalIPs(a.ips, ips):
			fail("reservation of %s is %v, but ADD reported %v", key, ips, a.ips)
		}
	}
	for cid := range live {
		if _, ok := res[ownerKey(cid)]; !ok {
			fail("live attachment %s has no reservation: its address could be handed out again", cid)
		}
	}
	claims := f.claims()
	for addr, owner := range claims {
		cid, _, _ := strings.Cut(owner, ":")
		if a, ok := live[cid]; !ok || !slices.ContainsFunc(a.ips, func(ip net.IP) bool { return ip.String() == addr }) {
			fail("leaked address record %s -> %s", addr, owner)
		}
	}
	for cid, a := range live {
		for _, ip := range a.ips {
			if claims[ip.String()] != ownerKey(cid) {
				fail("address %s of %s is claimed by %q", ip, cid, claims[ip.String()])
			}
		}
	}

	v := f.view()
	want := map[string]*attachment{}
	for _, a := range live {
		want[routing.HostVethName(a.cid, "eth0")] = a
	}
	for name, l := range v.links {
		a, ok := want[name]
		if !ok {
			fail("leaked host veth %s (alias %q)", name, l.alias)
			continue
		}
		if l.alias != routing.Alias(network, a.cid, "eth0") || !l.up {
			fail("host veth %s of %s: alias %q up %v", name, a.cid, l.alias, l.up)
		}
		for _, gw := range gateways {
			if !slices.Contains(l.addrs, gw) {
				fail("host veth %s of %s lacks gateway %s (has %v)", name, a.cid, gw, l.addrs)
			}
		}
	}
	routeWant := map[string]int{}
	for name, a := range want {
		l, ok := v.links[name]
		if !ok {
			fail("live attachment %s has no host veth %s", a.cid, name)
			continue
		}
		for _, ip := range a.ips {
			routeWant[hostCIDR(ip)] = l.index
		}
	}
	for dst, idx := range v.routes {
		if w, ok := routeWant[dst]; !ok {
			fail("leaked proto-86 route %s (ifindex %v)", dst, idx)
		} else if len(idx) != 1 || idx[0] != w {
			fail("route %s goes to ifindex %v, not only to its owner's veth %d", dst, idx, w)
		}
	}
	for dst := range routeWant {
		if _, ok := v.routes[dst]; !ok {
			fail("live attachment's route %s is missing", dst)
		}
	}
	for _, a := range v.addrs {
		name, _, _ := strings.Cut(a, " ")
		if _, ok := want[name]; !ok && !f.ownAddrs[a] {
			fail("leaked node address %s", a)
		}
	}

	inUse := map[string]bool{}
	for _, a := range live {
		inUse[a.ns.Path()] = true
	}
	for _, c := range containers {
		links := containerLinks(f.t, c)
		wantLinks := []string{"lo"}
		if inUse[c.Path()] {
			wantLinks = []string{"eth0", "lo"}
		}
		if !slices.Equal(links, wantLinks) {
			fail("container %s has interfaces %v, want %v", c.Path(), links, wantLinks)
		}
	}
	for _, b := range bad {
		f.t.Error(b)
	}
	return len(bad)
}

func hostCIDR(ip net.IP) string {
	if ip.To4() != nil {
		return ip.String() + "/32"
	}
	return ip.String() + "/128"
}

func equalIPs(a, b []net.IP) bool {
	return slices.EqualFunc(a, b, func(x, y net.IP) bool { return x.Equal(y) })
}
