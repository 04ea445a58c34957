package reliability

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/vethroute/vethroute/internal/testutil"
	"github.com/vethroute/vethroute/pkg/routing"
)

const foreignRanges = `[[{"subnet": "10.55.0.0/24", "rangeStart": "10.55.0.1", "rangeEnd": "10.55.0.20", "gateway": "10.55.0.254"}]]`

// linkFacts is what must not change about an interface vethroute does not
// own: the same ifindex means it was neither deleted nor recreated.
func (f *fixture) linkFacts(name string) string {
	f.t.Helper()
	return withHandle(f.t, f.node.NS, func(h netlinksafe.Handle) string {
		l, err := h.LinkByName(name)
		if err != nil {
			return "absent"
		}
		at := l.Attrs()
		return fmt.Sprintf("%s index %d type %s group %d alias %q mac %s mtu %d flags %v master %d",
			at.Name, at.Index, l.Type(), at.Group, at.Alias, at.HardwareAddr, at.MTU, at.Flags, at.MasterIndex)
	})
}

// TestForeignInterfaces puts an interface that vethroute did not create
// where vethroute would put its own (the name routing.HostVethName chooses),
// and checks that ADD refuses to reuse it, and ADD, DEL and GC all leave it
// exactly as it was.
func TestForeignInterfaces(t *testing.T) {
	testutil.RequireRoot(t)
	f := newFixture(t, foreignRanges, "")
	cont := testutil.NewNS(t)
	cases := []struct {
		name string
		// create makes the foreign interface called name in the node.
		create func(name string)
	}{
		{"veth", func(name string) {
			testutil.MustRunIn(t, f.node.NS, "ip", "link", "add", name, "type", "veth", "peer", "name", "fpeer")
		}},
		{"bridge", func(name string) {
			testutil.MustRunIn(t, f.node.NS, "ip", "link", "add", name, "type", "bridge")
		}},
		{"veth carrying this attachment's alias but not vethroute's group", func(name string) {
			testutil.MustRunIn(t, f.node.NS, "ip", "link", "add", name, "type", "veth", "peer", "name", "fpeer")
			testutil.MustRunIn(t, f.node.NS, "ip", "link", "set", name, "alias", routing.Alias(network, "foreign", "eth0"))
		}},
		{"veth in vethroute's group with another network's alias", func(name string) {
			testutil.MustRunIn(t, f.node.NS, "ip", "link", "add", name, "group", fmt.Sprint(routing.LinkGroup), "type", "veth", "peer", "name", "fpeer")
			testutil.MustRunIn(t, f.node.NS, "ip", "link", "set", name, "alias", routing.Alias("othernet", "foreign", "eth0"))
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f.t = t
			name := routing.HostVethName("foreign", "eth0")
			tc.create(name)
			t.Cleanup(func() { testutil.MustRunIn(t, f.node.NS, "ip", "link", "del", name) })
			testutil.MustRunIn(t, f.node.NS, "ip", "link", "set", name, "up")
			before := f.linkFacts(name)

			ips, o := f.add("foreign", cont.Path())
			if ips != nil {
				t.Fatalf("ADD reused the foreign %s: %s", name, o)
			}
			cerr, err := o.CNIError()
			if err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(cerr.Msg, name) || !strings.Contains(cerr.Msg, "not created by vethroute") {
				t.Errorf("ADD's error does not say that %s is not vethroute's: %q", name, cerr.Msg)
			}
			if got := f.linkFacts(name); got != before {
				t.Errorf("ADD changed the foreign interface:\nbefore %s\nafter  %s", before, got)
			}
			if res := f.reservations(); len(res) != 0 {
				t.Errorf("the failed ADD kept reservations %v", res)
			}
			if links := containerLinks(t, cont); len(links) != 1 {
				t.Errorf("the failed ADD left interfaces %v in the container", links)
			}
			// The runtime owes a DEL to the failed ADD; then a GC that
			// knows no attachment at all.
			f.mustDel("foreign", cont.Path())
			if got := f.linkFacts(name); got != before {
				t.Errorf("DEL changed the foreign interface:\nbefore %s\nafter  %s", before, got)
			}
			if o := f.gc(nil); o.ExitCode != 0 {
				t.Fatalf("GC: %s", o)
			}
			if got := f.linkFacts(name); got != before {
				t.Errorf("GC changed the foreign interface:\nbefore %s\nafter  %s", before, got)
			}
		})
	}
	f.t = t
}

// TestForeignRoutes checks that routes vethroute did not install survive
// its DEL and GC, that hostRoutes already present are left to their owner,
// and that an address reused after DEL never meets a stale route.
func TestForeignRoutes(t *testing.T) {
	testutil.RequireRoot(t)
	// The node has an uplink on 172.16.0.0/24 toward another node at
	// 172.16.0.2, the article's router link.
	f := newFixture(t, foreignRanges, `, "hostRoutes": [{"dst": "10.0.0.0/24", "gw": "172.16.0.2"}]`)
	in := func(args ...string) string { return testutil.MustRunIn(t, f.node.NS, args[0], args[1:]...) }
	in("ip", "addr", "add", "172.16.0.1/24", "dev", "uplink0")
	f.acceptNodeAddrs()
	in("ip", "route", "add", "10.0.0.0/24", "via", "172.16.0.2", "proto", "static")
	a, b := testutil.NewNS(t), testutil.NewNS(t)
	// addAt runs ADD requesting the address ip (CNI_ARGS IP=).
	addAt := func(cid, netnsPath, ip string) testutil.Outcome {
		inv := f.inv("ADD", cid, netnsPath)
		inv.Env = testutil.CNIEnv("ADD", cid, netnsPath, "eth0", "IP="+ip, filepath.Dir(f.bin))
		return f.run(inv)
	}

	t.Run("someone else's routes survive DEL and GC", func(t *testing.T) {
		f.t = t
		if o := addAt("a", a.Path(), "10.55.0.7"); o.ExitCode != 0 {
			t.Fatalf("ADD: %s", o)
		}
		foreign := [][]string{
			{"10.55.0.7/32", "via", "172.16.0.2", "proto", "static", "metric", "50"},
			{"10.55.0.7/32", "dev", "uplink0", "table", "100", "proto", "boot"},
			{"10.55.0.0/24", "dev", "uplink0", "proto", "static"},
		}
		for _, r := range foreign {
			in(append([]string{"ip", "route", "add"}, r...)...)
		}
		want := foreignRoutes(t, f)
		f.mustDel("a", a.Path())
		if o := f.gc(nil); o.ExitCode != 0 {
			t.Fatalf("GC: %s", o)
		}
		if got := foreignRoutes(t, f); got != want {
			t.Errorf("DEL or GC changed routes vethroute did not install:\nbefore\n%s\nafter\n%s", want, got)
		}
		if !strings.Contains(want, "10.0.0.0/24 via 172.16.0.2 dev uplink0 proto static") {
			t.Errorf("ADD replaced the node's own route to the hostRoutes destination:\n%s", want)
		}
		for _, r := range foreign {
			in(append([]string{"ip", "route", "del"}, r...)...)
		}
	})

	t.Run("ADD refuses an address someone else routes", func(t *testing.T) {
		f.t = t
		in("ip", "route", "add", "10.55.0.8/32", "dev", "uplink0", "proto", "static")
		defer in("ip", "route", "del", "10.55.0.8/32", "dev", "uplink0", "proto", "static")
		before := foreignRoutes(t, f)
		o := addAt("a", a.Path(), "10.55.0.8")
		if o.ExitCode == 0 {
			t.Fatalf("ADD took 10.55.0.8, which the node routes elsewhere: %s", o)
		}
		if cerr, err := o.CNIError(); err != nil || !strings.Contains(cerr.Msg, "10.55.0.8") {
			t.Errorf("ADD's error does not name the conflicting route: %v %v", cerr, err)
		}
		f.mustDel("a", a.Path())
		if got := foreignRoutes(t, f); got != before {
			t.Errorf("the failed ADD or its DEL changed foreign routes:\nbefore\n%s\nafter\n%s", before, got)
		}
		if res := f.reservations(); len(res) != 0 {
			t.Errorf("reservations left: %v", res)
		}
	})

	t.Run("a reused address never meets a stale route", func(t *testing.T) {
		f.t = t
		if o := addAt("a", a.Path(), "10.55.0.9"); o.ExitCode != 0 {
			t.Fatalf("ADD a: %s", o)
		}
		f.mustDel("a", a.Path())
		// A route vethroute left behind (an older version, a node that lost
		// the veth but not the route): same protocol, wrong interface.
		in("ip", "route", "add", "10.55.0.9/32", "dev", "uplink0", "proto", "86")
		if o := addAt("b", b.Path(), "10.55.0.9"); o.ExitCode != 0 {
			t.Fatalf("ADD b with the reused address: %s", o)
		}
		hostVeth := routing.HostVethName("b", "eth0")
		got := strings.TrimSpace(in("ip", "-4", "route", "show", "table", "all", "10.55.0.9/32"))
		if want := fmt.Sprintf("10.55.0.9 dev %s proto 86 scope link", hostVeth); got != want {
			t.Errorf("routes to the reused address:\n%s\nwant only\n%s", got, want)
		}
		if out, err := testutil.Ping(t, f.node.NS, "10.55.0.9", 1); err != nil {
			t.Errorf("the node cannot reach the reused address in its new container: %v\n%s", err, out)
		}
		f.mustDel("b", b.Path())
		f.requireConsistent(map[string]*attachment{}, nil, nil)
	})
	f.t = t
}

// foreignRoutes lists the node's routes (every table, both families) that
// neither vethroute (proto 86) nor the kernel installed.
func foreignRoutes(t testing.TB, f *fixture) string {
	t.Helper()
	var out []string
	for _, fam := range []string{"-4", "-6"} {
		for _, l := range strings.Split(testutil.MustRunIn(t, f.node.NS, "ip", fam, "route", "show", "table", "all"), "\n") {
			if l != "" && !strings.Contains(l, "proto 86") && !strings.Contains(l, "proto kernel") {
				out = append(out, l)
			}
		}
	}
	return strings.Join(out, "\n")
}
