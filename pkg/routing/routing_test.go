package routing

import (
	"errors"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/vethroute/vethroute/internal/testutil"
)

func TestHostVethName(t *testing.T) {
	seen := map[string]string{}
	for _, key := range [][2]string{{"c1", "eth0"}, {"c1", "eth1"}, {"c2", "eth0"}, {strings.Repeat("f", 64), "net1"}} {
		name := HostVethName(key[0], key[1])
		if len(name) != 15 || !strings.HasPrefix(name, "vrt") {
			t.Errorf("HostVethName%v = %q: want 15 characters starting with vrt", key, name)
		}
		if name != HostVethName(key[0], key[1]) {
			t.Errorf("HostVethName%v is not deterministic", key)
		}
		if other, dup := seen[name]; dup {
			t.Errorf("HostVethName%v collides with %s", key, other)
		}
		seen[name] = key[0] + "/" + key[1]
	}
}

func TestAliasRoundTrip(t *testing.T) {
	for _, tc := range []struct {
		alias string
		ok    bool
	}{
		{Alias("net-1.a", "abc_123", "eth0"), true},
		{"vethroute:n:c", false},
		{"other:n:c:eth0", false},
		{"", false},
	} {
		n, c, i, ok := parseAlias(tc.alias)
		if ok != tc.ok {
			t.Errorf("parseAlias(%q) ok = %v, want %v", tc.alias, ok, tc.ok)
		}
		if ok && (n != "net-1.a" || c != "abc_123" || i != "eth0") {
			t.Errorf("parseAlias(%q) = %s %s %s", tc.alias, n, c, i)
		}
	}
}

func addr(t *testing.T, cidr, gw string) Address {
	t.Helper()
	ip, ipn, err := net.ParseCIDR(cidr)
	if err != nil {
		t.Fatal(err)
	}
	if v4 := ip.To4(); v4 != nil {
		ip = v4
	}
	ipn.IP = ip
	return Address{IPNet: *ipn, Gateway: net.ParseIP(gw)}
}

func defaultRoute(t *testing.T, cidr string) *types.Route {
	_, ipn, err := net.ParseCIDR(cidr)
	if err != nil {
		t.Fatal(err)
	}
	return &types.Route{Dst: *ipn}
}

// inNode runs f with the node namespace as the calling thread's namespace,
// which is where Setup, Teardown and Verify put the node side.
func inNode(t *testing.T, node ns.NetNS, f func() error) error {
	t.Helper()
	return node.Do(func(ns.NetNS) error { return f() })
}

func TestSetupVerifyTeardown(t *testing.T) {
	tests := []struct {
		name  string
		addrs func(t *testing.T) []Address
		route []string
	}{
		{"ipv4", func(t *testing.T) []Address { return []Address{addr(t, "10.5.0.2/24", "10.5.0.1")} }, []string{"0.0.0.0/0"}},
		{"ipv6", func(t *testing.T) []Address { return []Address{addr(t, "fd00:5::2/64", "fd00:5::1")} }, []string{"::/0"}},
		{"dual", func(t *testing.T) []Address {
			return []Address{addr(t, "10.5.0.2/24", "10.5.0.1"), addr(t, "fd00:5::2/64", "fd00:5::1")}
		}, []string{"0.0.0.0/0", "::/0"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			node, cont := testutil.NewNS(t), testutil.NewNS(t)
			a := &Attachment{Network: "rt", ContainerID: "c1", IfName: "eth0", NetNS: cont.Path(), MTU: 1400, Addresses: tc.addrs(t)}
			for _, r := range tc.route {
				a.Routes = append(a.Routes, defaultRoute(t, r))
			}
			var ifs *Interfaces
			if err := inNode(t, node, func() (err error) { ifs, err = Setup(a); return err }); err != nil {
				t.Fatalf("Setup: %v", err)
			}
			if ifs.Host.Name != a.HostVeth() || ifs.Container.Name != "eth0" || ifs.Host.MTU != 1400 || ifs.Container.MAC == "" {
				t.Fatalf("interfaces = %+v", ifs)
			}
			if err := inNode(t, node, func() error { return Verify(a, *ifs) }); err != nil {
				t.Fatalf("Verify right after Setup: %v", err)
			}
			for _, ad := range a.Addresses {
				if out, err := testutil.Ping(t, cont, ad.Gateway.String(), 1); err != nil {
					t.Errorf("gateway %s unreachable: %v\n%s", ad.Gateway, err, out)
				}
			}
			// Drift: the node loses its route to the container.
			testutil.MustRunIn(t, node, "ip", "route", "del", hostPrefix(a.Addresses[0].IPNet.IP).String())
			err := inNode(t, node, func() error { return Verify(a, *ifs) })
			if err == nil || !strings.Contains(err.Error(), "node route "+hostPrefix(a.Addresses[0].IPNet.IP).String()) {
				t.Fatalf("Verify after drift = %v, want the missing node route named", err)
			}
			for range 2 {
				if err := inNode(t, node, func() error { return Teardown("rt", "c1", "eth0") }); err != nil {
					t.Fatalf("Teardown: %v", err)
				}
			}
			if out, err := testutil.RunIn(t, cont, 10*time.Second, "ip", "-o", "link", "show", "eth0"); err == nil {
				t.Fatalf("container interface survived Teardown: %s", out)
			}
		})
	}
}

// TestForeignInterfaceIsLeftAlone plants an interface with the name vethroute
// would choose: Setup must refuse, Teardown and CollectGarbageVia must not
// delete it.
func TestForeignInterfaceIsLeftAlone(t *testing.T) {
	node, cont := testutil.NewNS(t), testutil.NewNS(t)
	name := HostVethName("c1", "eth0")
	testutil.MustRunIn(t, node, "ip", "link", "add", name, "type", "bridge")
	a := &Attachment{Network: "rt", ContainerID: "c1", IfName: "eth0", NetNS: cont.Path(), MTU: 1500,
		Addresses: []Address{addr(t, "10.5.0.2/24", "10.5.0.1")}}
	err := inNode(t, node, func() error { _, err := Setup(a); return err })
	if !errors.Is(err, ErrForeign) {
		t.Fatalf("Setup over a foreign interface = %v, want ErrForeign", err)
	}
	if err := inNode(t, node, func() error { return Teardown("rt", "c1", "eth0") }); !errors.Is(err, ErrForeign) {
		t.Fatalf("Teardown of a foreign interface = %v, want ErrForeign", err)
	}
	if err := inNode(t, node, func() error {
		_, err := CollectGarbageVia("rt", func(string, string) bool { return false }, nil)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	testutil.MustRunIn(t, node, "ip", "link", "show", name) // fails the test if it is gone
	if out, err := testutil.RunIn(t, cont, 10*time.Second, "ip", "-o", "link", "show", "eth0"); err == nil {
		t.Fatalf("failed Setup left eth0 in the container: %s", out)
	}
}

// TestCollectGarbageVia hands stale host veths to unlink and, after unlink's
// first failure, deletes the rest in-process: every stale veth goes, the
// kept one stays, and a failing helper is asked once.
func TestCollectGarbageVia(t *testing.T) {
	tests := []struct {
		name string
		// fail makes unlink fail from its nth call on (0: never).
		fail      int
		wantCalls int
	}{
		{name: "helper deletes all", fail: 0, wantCalls: 3},
		{name: "helper down", fail: 1, wantCalls: 1},
		{name: "helper fails midway", fail: 2, wantCalls: 2},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			node := testutil.NewNS(t)
			for i := range 4 {
				a := &Attachment{Network: "rt", ContainerID: fmt.Sprintf("c%d", i), IfName: "eth0", NetNS: testutil.NewNS(t).Path(), MTU: 1500,
					Addresses: []Address{addr(t, fmt.Sprintf("10.5.0.%d/24", i+2), "10.5.0.1")}}
				if err := inNode(t, node, func() error { _, err := Setup(a); return err }); err != nil {
					t.Fatalf("Setup %s: %v", a.ContainerID, err)
				}
			}
			calls := 0
			unlink := func(link netlink.Link, alias string) error {
				calls++
				if !OwnsLink(link, alias) {
					t.Errorf("unlink asked for %s with alias %q it does not carry", link.Attrs().Name, alias)
				}
				if tc.fail > 0 && calls >= tc.fail {
					return errors.New("helper unavailable")
				}
				h, err := netlink.NewHandleAt(netns.NsHandle(node.Fd()))
				if err != nil {
					return err
				}
				defer h.Close()
				return h.LinkDel(link)
			}
			var removed []string
			err := inNode(t, node, func() (err error) {
				removed, err = CollectGarbageVia("rt", func(id, _ string) bool { return id == "c0" }, unlink)
				return err
			})
			if err != nil {
				t.Fatalf("CollectGarbageVia: %v", err)
			}
			if len(removed) != 3 || calls != tc.wantCalls {
				t.Errorf("removed %v with %d unlink calls, want 3 removed and %d calls", removed, calls, tc.wantCalls)
			}
			links := testutil.MustRunIn(t, node, "ip", "-o", "link", "show")
			for i := range 4 {
				if name := HostVethName(fmt.Sprintf("c%d", i), "eth0"); strings.Contains(links, name) != (i == 0) {
					t.Errorf("after GC, %s present = %v, want %v (links: %s)", name, !(i == 0), i == 0, links)
				}
			}
		})
	}
}

// TestTeardownAfterLateReaper is issue 14's finding 5: the reaper deletes the
// link but answers too late (or its answer is lost), so the plugin deletes
// the link itself and the kernel says ENODEV. The link is gone, which is what
// DEL and GC want: both succeed.
func TestTeardownAfterLateReaper(t *testing.T) {
	testutil.RequireRoot(t)
	for _, verb := range []string{"DEL", "GC"} {
		t.Run(verb, func(t *testing.T) {
			node := testutil.NewNS(t)
			a := &Attachment{Network: "rt", ContainerID: "c1", IfName: "eth0", NetNS: testutil.NewNS(t).Path(), MTU: 1500,
				Addresses: []Address{addr(t, "10.5.0.2/24", "10.5.0.1")}}
			if err := inNode(t, node, func() error { _, err := Setup(a); return err }); err != nil {
				t.Fatalf("Setup: %v", err)
			}
			lateUnlink := func(link netlink.Link, _ string) error {
				h, err := netlink.NewHandleAt(netns.NsHandle(node.Fd()))
				if err != nil {
					return err
				}
				defer h.Close()
				if err := h.LinkDel(link); err != nil {
					return err
				}
				return errors.New("reaper: no answer before the deadline")
			}
			err := inNode(t, node, func() error {
				if verb == "DEL" {
					return TeardownVia("rt", "c1", "eth0", lateUnlink)
				}
				_, err := CollectGarbageVia("rt", func(string, string) bool { return false }, lateUnlink)
				return err
			})
			if err != nil {
				t.Fatalf("%s after a late reaper: %v", verb, err)
			}
			if links := testutil.MustRunIn(t, node, "ip", "-o", "link", "show"); strings.Contains(links, HostVethName("c1", "eth0")) {
				t.Fatalf("host veth still there: %s", links)
			}
		})
	}
}
