// Package integration exercises the built vethroute binary for every verb and
// every supported CNI version, through libcni, from inside node namespaces
// the tests create. It needs root.
package integration

import (
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vethroute/vethroute/internal/testutil"
	"github.com/vethroute/vethroute/pkg/routing"
)

const network = "itest"

// conflist renders a one-plugin list with the built-in IPAM.
func conflist(version, ranges, routes string, extra string) string {
	return fmt.Sprintf(`{
  "cniVersion": %q, "name": %q,
  "plugins": [{
    "type": "vethroute" %s,
    "ipam": {"type": "vethroute", "ranges": %s, "routes": %s, "dataDir": "@DATADIR@"}
  }]}`, version, network, extra, ranges, routes)
}

const (
	v4Ranges   = `[[{"subnet": "192.168.0.0/24", "rangeStart": "192.168.0.1", "rangeEnd": "192.168.0.250", "gateway": "192.168.0.254"}]]`
	v4Routes   = `[{"dst": "0.0.0.0/0"}]`
	v6Ranges   = `[[{"subnet": "fd00:10::/64", "gateway": "fd00:10::1"}]]`
	v6Routes   = `[{"dst": "::/0"}]`
	dualRanges = `[[{"subnet": "192.168.0.0/24", "gateway": "192.168.0.254"}], [{"subnet": "fd00:10::/64", "gateway": "fd00:10::1"}]]`
	dualRoutes = `[{"dst": "0.0.0.0/0"}, {"dst": "::/0"}]`
)

// TestVerbsEveryVersion runs ADD, CHECK (where the version has it), a
// repeated DEL and the final cleanliness check for each CNI version and
// address family, and pings the gateway from the container.
func TestVerbsEveryVersion(t *testing.T) {
	testutil.RequireRoot(t)
	families := []struct {
		name           string
		ranges, routes string
		gateways       []string
	}{
		{"ipv4", v4Ranges, v4Routes, []string{"192.168.0.254"}},
		{"ipv6", v6Ranges, v6Routes, []string{"fd00:10::1"}},
		{"dual", dualRanges, dualRoutes, []string{"192.168.0.254", "fd00:10::1"}},
	}
	for _, ver := range []string{"0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"} {
		for _, fam := range families {
			t.Run(ver+"/"+fam.name, func(t *testing.T) {
				node := testutil.NewNode(t)
				cont := testutil.NewNS(t)
				l := node.ConfList(t, conflist(ver, fam.ranges, fam.routes, ""))
				rt := testutil.RuntimeConf("c-"+strings.ReplaceAll(ver, ".", ""), cont.Path(), "eth0")

				res, err := node.Add(l, rt)
				if err != nil {
					t.Fatalf("ADD: %v", err)
				}
				if res.Version() != ver {
					t.Errorf("result version %s, want %s", res.Version(), ver)
				}
				cur, err := current.NewResultFromResult(res)
				if err != nil {
					t.Fatalf("convert result: %v", err)
				}
				checkResult(t, cur, rt, len(fam.gateways))
				for _, gw := range fam.gateways {
					if out, err := testutil.Ping(t, cont, gw, 1); err != nil {
						t.Errorf("container cannot reach its gateway %s: %v\n%s", gw, err, out)
					}
				}
				if ver >= "0.4.0" {
					if err := node.Check(l, rt); err != nil {
						t.Errorf("CHECK after ADD: %v", err)
					}
				}
				for i := range 2 {
					if err := node.Del(l, rt); err != nil {
						t.Fatalf("DEL #%d: %v", i+1, err)
					}
				}
				node.RequireClean(t, network)
			})
		}
	}
}

// checkResult asserts the shape chained plugins rely on.
func checkResult(t *testing.T, res *current.Result, rt *libcni.RuntimeConf, nAddrs int) {
	t.Helper()
	if len(res.Interfaces) != 2 {
		t.Fatalf("result has %d interfaces, want host and container: %+v", len(res.Interfaces), res.Interfaces)
	}
	host, cont := res.Interfaces[0], res.Interfaces[1]
	if host.Sandbox != "" || host.Name != routing.HostVethName(rt.ContainerID, rt.IfName) {
		t.Errorf("host interface %+v: want no sandbox and name %s", host, routing.HostVethName(rt.ContainerID, rt.IfName))
	}
	if cont.Sandbox != rt.NetNS || cont.Name != rt.IfName || cont.Mac == "" {
		t.Errorf("container interface %+v: want sandbox %s, name %s and a MAC", cont, rt.NetNS, rt.IfName)
	}
	if len(res.IPs) != nAddrs {
		t.Fatalf("result has %d addresses, want %d", len(res.IPs), nAddrs)
	}
	for _, ipc := range res.IPs {
		if ipc.Interface == nil || *ipc.Interface != 1 {
			t.Errorf("address %s does not point at the container interface", ipc.Address.String())
		}
		if ipc.Gateway == nil {
			t.Errorf("address %s has no gateway", ipc.Address.String())
		}
	}
}

// TestContainersReachEachOtherThroughTheNode checks that two containers of one
// node talk through the node as a router (one hop: ttl 63) and reach the node.
func TestContainersReachEachOtherThroughTheNode(t *testing.T) {
	node := testutil.NewNode(t)
	l := node.ConfList(t, conflist("1.1.0", dualRanges, dualRoutes, ""))
	a, b := testutil.NewNS(t), testutil.NewNS(t)
	resA := mustAdd(t, node, l, testutil.RuntimeConf("ca", a.Path(), "eth0"))
	resB := mustAdd(t, node, l, testutil.RuntimeConf("cb", b.Path(), "eth0"))
	for i := range resB.IPs {
		dst := resB.IPs[i].Address.IP.String()
		out, err := testutil.Ping(t, a, dst, 2)
		t.Logf("ping %s:\n%s", dst, out)
		if err != nil {
			t.Fatalf("ping %s from container a: %v\n%s", dst, err, out)
		}
		// ping prints the hop limit of IPv6 replies as ttl too.
		if want := "ttl=63"; !strings.Contains(out, want) {
			t.Errorf("ping %s: want %s (one router crossed), got\n%s", dst, want, out)
		}
	}
	// From the node to a container: the node's host route carries it.
	out, err := testutil.RunIn(t, node.NS, 10*time.Second, "ping", "-c", "1", "-W", "2", resA.IPs[0].Address.IP.String())
	if err != nil {
		t.Fatalf("node cannot reach container a: %v\n%s", err, out)
	}
	for _, c := range []struct {
		id  string
		pth string
	}{{"ca", a.Path()}, {"cb", b.Path()}} {
		if err := node.Del(l, testutil.RuntimeConf(c.id, c.pth, "eth0")); err != nil {
			t.Fatalf("DEL %s: %v", c.id, err)
		}
	}
	node.RequireClean(t, network)
}

func mustAdd(t *testing.T, node *testutil.Node, l *libcni.NetworkConfigList, rt *libcni.RuntimeConf) *current.Result {
	t.Helper()
	res, err := node.Add(l, rt)
	if err != nil {
		t.Fatalf("ADD %s: %v", rt.ContainerID, err)
	}
	cur, err := current.NewResultFromResult(res)
	if err != nil {
		t.Fatal(err)
	}
	return cur
}

// TestFailedAddLeavesNothing injects failures at different depths of ADD and
// checks that nothing it created survives.
func TestFailedAddLeavesNothing(t *testing.T) {
	tests := []struct {
		name    string
		extra   string
		prepare func(t *testing.T, cont ns.NetNS)
		code    uint
	}{
		{
			// The container already has an interface of that name: the veth
			// cannot be created, after the address was reserved.
			name: "interface name taken in container",
			prepare: func(t *testing.T, cont ns.NetNS) {
				testutil.MustRunIn(t, cont, "ip", "link", "add", "eth0", "type", "bridge")
			},
			code: types.ErrInternal,
		},
		{
			// hostRoutes through a gateway that is not connected: fails after
			// the veth, addresses and container routes exist.
			name:  "unreachable hostRoutes gateway",
			extra: `, "hostRoutes": [{"dst": "10.0.0.0/24", "gw": "172.31.0.2"}]`,
			code:  types.ErrInternal,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			node := testutil.NewNode(t)
			cont := testutil.NewNS(t)
			if tc.prepare != nil {
				tc.prepare(t, cont)
			}
			l := node.ConfList(t, conflist("1.1.0", v4Ranges, v4Routes, tc.extra))
			_, err := node.Add(l, testutil.RuntimeConf("cfail", cont.Path(), "eth0"))
			var te *types.Error
			if !asCNIError(err, &te) || te.Code != tc.code {
				t.Fatalf("ADD error = %v, want CNI code %d", err, tc.code)
			}
			node.RequireClean(t, network)
			if out := testutil.MustRunIn(t, cont, "ip", "-o", "addr", "show", "scope", "global"); strings.TrimSpace(out) != "" {
				t.Errorf("container keeps addresses after failed ADD:\n%s", out)
			}
		})
	}
}

// TestDelIsIdempotent covers DEL without ADD, DEL after the netns is gone,
// and DEL twice.
func TestDelIsIdempotent(t *testing.T) {
	node := testutil.NewNode(t)
	l := node.ConfList(t, conflist("1.1.0", v4Ranges, v4Routes, ""))
	if err := node.Del(l, testutil.RuntimeConf("never-added", "/var/run/netns/does-not-exist", "eth0")); err != nil {
		t.Fatalf("DEL without ADD: %v", err)
	}
	cont := testutil.NewNS(t)
	rt := testutil.RuntimeConf("gone", cont.Path(), "eth0")
	mustAdd(t, node, l, rt)
	// The runtime destroyed the sandbox before DEL: the netns path is gone.
	rt.NetNS = "/var/run/netns/already-removed"
	for i := range 2 {
		if err := node.Del(l, rt); err != nil {
			t.Fatalf("DEL #%d with netns gone: %v", i+1, err)
		}
	}
	node.RequireClean(t, network)
}

// TestCheckCatchesDrift deletes what ADD set up, piece by piece, and expects
// CHECK to name what is missing.
func TestCheckCatchesDrift(t *testing.T) {
	tests := []struct {
		name  string
		drift func(t *testing.T, node *testutil.Node, cont ns.NetNS, res *current.Result)
		want  string
	}{
		{"container default route", func(t *testing.T, _ *testutil.Node, cont ns.NetNS, _ *current.Result) {
			testutil.MustRunIn(t, cont, "ip", "route", "del", "default")
		}, "container route default via 192.168.0.254"},
		{"node host route", func(t *testing.T, node *testutil.Node, _ ns.NetNS, res *current.Result) {
			testutil.MustRunIn(t, node.NS, "ip", "route", "del", res.IPs[0].Address.IP.String()+"/32")
		}, "node route " + "192.168.0.1/32"},
		{"container address", func(t *testing.T, _ *testutil.Node, cont ns.NetNS, res *current.Result) {
			testutil.MustRunIn(t, cont, "ip", "addr", "del", res.IPs[0].Address.String(), "dev", "eth0")
		}, "container address 192.168.0.1/24"},
		{"reservation", func(t *testing.T, node *testutil.Node, _ ns.NetNS, _ *current.Result) {
			testutil.MustRunIn(t, node.NS, "sh", "-c", "rm -f "+node.DataDir+"/"+network+"/owners/*")
		}, "reservation of 192.168.0.1"},
		{"hostRoutes entry", func(t *testing.T, node *testutil.Node, _ ns.NetNS, _ *current.Result) {
			testutil.MustRunIn(t, node.NS, "ip", "route", "del", "10.0.0.0/24")
		}, "node route 10.0.0.0/24 via 172.16.0.2 (hostRoutes) is missing"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			node := testutil.NewNode(t)
			uplink(t, node)
			cont := testutil.NewNS(t)
			l := node.ConfList(t, conflist("1.1.0", v4Ranges, v4Routes, `, "hostRoutes": [{"dst": "10.0.0.0/24", "gw": "172.16.0.2"}]`))
			rt := testutil.RuntimeConf("cdrift", cont.Path(), "eth0")
			res := mustAdd(t, node, l, rt)
			if err := node.Check(l, rt); err != nil {
				t.Fatalf("CHECK before drift: %v", err)
			}
			tc.drift(t, node, cont, res)
			err := node.Check(l, rt)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("CHECK after drift = %v, want it to mention %q", err, tc.want)
			}
			if err := node.Del(l, rt); err != nil {
				t.Fatalf("DEL: %v", err)
			}
		})
	}
}

// uplink gives the node an interface on 172.16.0.0/24 (the article's link
// between routers) so hostRoutes via 172.16.0.2 are valid. The peer lives in
// a namespace of its own.
func uplink(t *testing.T, node *testutil.Node) {
	t.Helper()
	peer := testutil.NewNS(t)
	testutil.MustRunIn(t, node.NS, "ip", "link", "add", "up0", "type", "veth", "peer", "name", "up1", "netns", peer.Path())
	testutil.MustRunIn(t, node.NS, "ip", "addr", "add", "172.16.0.1/24", "dev", "up0")
	testutil.MustRunIn(t, node.NS, "ip", "link", "set", "up0", "up")
	testutil.MustRunIn(t, peer, "ip", "addr", "add", "172.16.0.2/24", "dev", "up1")
	testutil.MustRunIn(t, peer, "ip", "link", "set", "up1", "up")
}

// TestHostRoutes checks that hostRoutes are installed once, survive DEL of
// the containers (they are node routes, not per container), and that a
// conflicting route someone else installed is reported and left alone.
func TestHostRoutes(t *testing.T) {
	node := testutil.NewNode(t)
	uplink(t, node)
	l := node.ConfList(t, conflist("1.1.0", v4Ranges, v4Routes, `, "hostRoutes": [{"dst": "10.0.0.0/24", "gw": "172.16.0.2"}]`))
	for _, id := range []string{"h1", "h2"} {
		cont := testutil.NewNS(t)
		rt := testutil.RuntimeConf(id, cont.Path(), "eth0")
		mustAdd(t, node, l, rt)
		if err := node.Del(l, rt); err != nil {
			t.Fatal(err)
		}
	}
	if r := node.Routes(t, "-4"); strings.Count(r, "10.0.0.0/24 via 172.16.0.2") != 1 {
		t.Fatalf("want exactly one hostRoutes route, got:\n%s", r)
	}

	other := testutil.NewNode(t)
	uplink(t, other)
	testutil.MustRunIn(t, other.NS, "ip", "route", "add", "10.0.0.0/24", "via", "172.16.0.3", "proto", "static")
	cont := testutil.NewNS(t)
	_, err := other.Add(other.ConfList(t, conflist("1.1.0", v4Ranges, v4Routes, `, "hostRoutes": [{"dst": "10.0.0.0/24", "gw": "172.16.0.2"}]`)), testutil.RuntimeConf("h3", cont.Path(), "eth0"))
	if err == nil || !strings.Contains(err.Error(), "conflicts with the node's route 10.0.0.0/24 via 172.16.0.3") {
		t.Fatalf("ADD over a conflicting route = %v, want a conflict error", err)
	}
	if r := other.Routes(t, "-4"); !strings.Contains(r, "10.0.0.0/24 via 172.16.0.3") {
		t.Fatalf("the foreign route was touched:\n%s", r)
	}
	other.RequireClean(t, network)
}

// TestGC keeps the attachments named valid and collects the rest, host veths
// and reservations alike: first the plugin's own GC (executed directly, as
// libcni would DEL what its cache knows before), then libcni's.
func TestGC(t *testing.T) {
	node := testutil.NewNode(t)
	l := node.ConfList(t, conflist("1.1.0", v4Ranges, v4Routes, ""))
	var keep []types.GCAttachment
	for i := range 4 {
		cont := testutil.NewNS(t)
		id := fmt.Sprintf("gc%d", i)
		mustAdd(t, node, l, testutil.RuntimeConf(id, cont.Path(), "eth0"))
		if i%2 == 0 {
			keep = append(keep, types.GCAttachment{ContainerID: id, IfName: "eth0"})
		}
	}
	node.PluginGC(t, l, keep)
	got := node.Reservations(t, network)
	if strings.Join(got, ",") != "gc0:eth0,gc2:eth0" {
		t.Fatalf("reservations after GC = %v, want gc0 and gc2", got)
	}
	links := strings.Join(node.Links(t), ",")
	for i := range 4 {
		name := routing.HostVethName(fmt.Sprintf("gc%d", i), "eth0")
		if strings.Contains(links, name) != (i%2 == 0) {
			t.Errorf("after GC, host veth %s present=%v, want %v (links %s)", name, !(i%2 == 0), i%2 == 0, links)
		}
	}
	if err := node.GC(l, nil); err != nil {
		t.Fatalf("GC of everything: %v", err)
	}
	node.RequireClean(t, network)
}

// TestStatusOnExhaustedPool fills a tiny pool and expects STATUS to report
// code 50, and ADD to fail with "try again later" and leave nothing.
func TestStatusOnExhaustedPool(t *testing.T) {
	node := testutil.NewNode(t)
	l := node.ConfList(t, conflist("1.1.0", `[[{"subnet": "10.77.0.0/30"}]]`, v4Routes, ""))
	if err := node.Status(l); err != nil {
		t.Fatalf("STATUS on an empty pool: %v", err)
	}
	cont := testutil.NewNS(t)
	rt := testutil.RuntimeConf("only", cont.Path(), "eth0") // a /30 has one address besides the gateway
	mustAdd(t, node, l, rt)
	var te *types.Error
	if err := node.Status(l); !asCNIError(err, &te) || te.Code != types.ErrPluginNotAvailable || !strings.Contains(te.Msg, "pool exhausted") {
		t.Fatalf("STATUS on a full pool = %v, want code 50 naming the exhausted pool", err)
	}
	second := testutil.NewNS(t)
	_, err := node.Add(l, testutil.RuntimeConf("second", second.Path(), "eth0"))
	if !asCNIError(err, &te) || te.Code != types.ErrTryAgainLater || !strings.Contains(te.Msg, "pool exhausted") {
		t.Fatalf("ADD on a full pool = %v, want code 11 pool exhausted", err)
	}
	if err := node.Del(l, rt); err != nil {
		t.Fatal(err)
	}
	node.RequireClean(t, network)
}

// TestConcurrentAddDel runs 32 ADDs at once (32 plugin processes), then 32
// DELs at once, and checks 32 distinct addresses and a clean node.
func TestConcurrentAddDel(t *testing.T) {
	node := testutil.NewNode(t)
	l := node.ConfList(t, conflist("1.1.0", v4Ranges, v4Routes, ""))
	const n = 32
	conts := make([]string, n)
	for i := range n {
		conts[i] = testutil.NewNS(t).Path()
	}
	addrs := make([]string, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			res, err := node.Add(l, testutil.RuntimeConf(fmt.Sprintf("con%02d", i), conts[i], "eth0"))
			if err != nil {
				errs[i] = err
				return
			}
			cur, err := current.NewResultFromResult(res)
			if err != nil {
				errs[i] = err
				return
			}
			addrs[i] = cur.IPs[0].Address.IP.String()
		}()
	}
	wg.Wait()
	seen := map[string]int{}
	for i := range n {
		if errs[i] != nil {
			t.Fatalf("ADD %d: %v", i, errs[i])
		}
		if j, dup := seen[addrs[i]]; dup {
			t.Fatalf("address %s given to both con%02d and con%02d", addrs[i], j, i)
		}
		seen[addrs[i]] = i
	}
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = node.Del(l, testutil.RuntimeConf(fmt.Sprintf("con%02d", i), conts[i], "eth0"))
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("DEL %d: %v", i, err)
		}
	}
	node.RequireClean(t, network)
}

// TestRequestedAddress covers the ips capability and CNI_ARGS IP=.
func TestRequestedAddress(t *testing.T) {
	node := testutil.NewNode(t)
	list := `{"cniVersion": "1.1.0", "name": "` + network + `", "plugins": [{"type": "vethroute", "capabilities": {"ips": true},
	  "ipam": {"type": "vethroute", "ranges": ` + v4Ranges + `, "dataDir": "@DATADIR@"}}]}`
	l := node.ConfList(t, list)

	c1 := testutil.NewNS(t)
	rt := testutil.RuntimeConf("req1", c1.Path(), "eth0")
	rt.CapabilityArgs = map[string]interface{}{"ips": []string{"192.168.0.42/24"}}
	if res := mustAdd(t, node, l, rt); res.IPs[0].Address.IP.String() != "192.168.0.42" {
		t.Fatalf("ips capability: got %s, want 192.168.0.42", res.IPs[0].Address.IP)
	}

	c2 := testutil.NewNS(t)
	rt2 := testutil.RuntimeConf("req2", c2.Path(), "eth0")
	rt2.Args = [][2]string{{"IP", "192.168.0.43"}}
	if res := mustAdd(t, node, l, rt2); res.IPs[0].Address.IP.String() != "192.168.0.43" {
		t.Fatalf("CNI_ARGS IP=: got %s, want 192.168.0.43", res.IPs[0].Address.IP)
	}

	c3 := testutil.NewNS(t)
	rt3 := testutil.RuntimeConf("req3", c3.Path(), "eth0")
	rt3.Args = [][2]string{{"IP", "192.168.0.42"}}
	_, err := node.Add(l, rt3)
	var te *types.Error
	if !asCNIError(err, &te) || te.Code != types.ErrInvalidNetworkConfig || !strings.Contains(te.Msg, "192.168.0.42 is already in use") {
		t.Fatalf("ADD of a taken address = %v, want code 7 naming it", err)
	}
	for _, r := range []*libcni.RuntimeConf{rt, rt2, rt3} {
		if err := node.Del(l, r); err != nil {
			t.Fatal(err)
		}
	}
	node.RequireClean(t, network)
}

// asCNIError finds the plugin's CNI error inside libcni's wrapping.
func asCNIError(err error, target **types.Error) bool {
	return errors.As(err, target)
}
