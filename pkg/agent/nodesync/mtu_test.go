package nodesync

import (
	"errors"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/vethroute/vethroute/pkg/agent/cniconf"
	"github.com/vethroute/vethroute/pkg/uplink"
)

func TestChooseMTU(t *testing.T) {
	v4 := netip.MustParseAddr("172.16.0.1")
	v6 := netip.MustParseAddr("fd00:172:16::1")
	eth0 := func(mtu int) uplink.Uplink { return uplink.Uplink{Addr: v4, Name: "eth0", Index: 2, MTU: mtu} }
	eth1 := func(mtu int) uplink.Uplink { return uplink.Uplink{Addr: v6, Name: "eth1", Index: 3, MTU: mtu} }
	lo := uplink.Uplink{Addr: v4, Name: "lo", Index: 1, MTU: 65536}
	tests := []struct {
		name     string
		override int
		addrs    []netip.Addr
		found    []uplink.Uplink
		ipv6     bool // the node has an IPv6 pod CIDR
		wantMTU  int
		wantFrom string // name of the interface taken; "" for none
		// wantProblem is a part of the expected problem; "" expects none.
		wantProblem string
	}{
		{name: "override wins over detection", override: 1450, addrs: []netip.Addr{v4}, found: []uplink.Uplink{eth0(9000)}, wantMTU: 1450},
		{name: "override without any InternalIP", override: 1450, wantMTU: 1450},
		{name: "IPv4 only", addrs: []netip.Addr{v4}, found: []uplink.Uplink{eth0(1400)}, wantMTU: 1400, wantFrom: "eth0"},
		{name: "IPv6 only", addrs: []netip.Addr{v6}, found: []uplink.Uplink{eth1(9000)}, ipv6: true, wantMTU: 9000, wantFrom: "eth1"},
		{name: "dual stack takes the smaller, IPv6 smaller", addrs: []netip.Addr{v4, v6}, found: []uplink.Uplink{eth0(9000), eth1(1400)}, ipv6: true, wantMTU: 1400, wantFrom: "eth1"},
		{name: "dual stack takes the smaller, IPv4 smaller", addrs: []netip.Addr{v4, v6}, found: []uplink.Uplink{eth0(1400), eth1(9000)}, ipv6: true, wantMTU: 1400, wantFrom: "eth0"},
		{name: "dual stack on one interface", addrs: []netip.Addr{v4, v6}, found: []uplink.Uplink{eth0(1500), {Addr: v6, Name: "eth0", Index: 2, MTU: 1500}}, ipv6: true, wantMTU: 1500, wantFrom: "eth0"},
		{name: "no InternalIP", wantProblem: "no InternalIP"},
		{name: "InternalIP on no interface", addrs: []netip.Addr{v4}, wantProblem: "no interface carries InternalIP 172.16.0.1;"},
		{name: "dual stack on no interface", addrs: []netip.Addr{v4, v6}, ipv6: true, wantProblem: "172.16.0.1 or fd00:172:16::1"},
		{name: "dual stack, IPv6 on no interface", addrs: []netip.Addr{v4, v6}, found: []uplink.Uplink{eth0(9000)}, ipv6: true, wantMTU: 9000, wantFrom: "eth0", wantProblem: "no interface carries InternalIP fd00:172:16::1; pods get the MTU of eth0 alone"},
		{name: "loopback's MTU is above the plugin's maximum", addrs: []netip.Addr{v4}, found: []uplink.Uplink{lo}, wantProblem: "MTU 65536, outside"},
		{name: "MTU below IPv4's minimum", addrs: []netip.Addr{v4}, found: []uplink.Uplink{eth0(60)}, wantProblem: "MTU 60, outside"},
		{name: "MTU below IPv6's minimum with an IPv6 pod CIDR", addrs: []netip.Addr{v4}, found: []uplink.Uplink{eth0(1200)}, ipv6: true, wantProblem: "below IPv6's minimum 1280"},
		{name: "the same MTU without an IPv6 pod CIDR", addrs: []netip.Addr{v4}, found: []uplink.Uplink{eth0(1200)}, wantMTU: 1200, wantFrom: "eth0"},
		{name: "dual stack, loopback and a valid uplink", addrs: []netip.Addr{v4, v6}, found: []uplink.Uplink{lo, eth1(1500)}, ipv6: true, wantMTU: 1500, wantFrom: "eth1"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := chooseMTU(tc.override, tc.addrs, tc.found, tc.ipv6)
			from := ""
			if got.From != nil {
				from = got.From.Name
			}
			if got.MTU != tc.wantMTU || from != tc.wantFrom {
				t.Errorf("MTU %d from %q, want %d from %q", got.MTU, from, tc.wantMTU, tc.wantFrom)
			}
			switch {
			case tc.wantProblem == "" && got.Problem != "":
				t.Errorf("problem %q, want none", got.Problem)
			case !strings.Contains(got.Problem, tc.wantProblem):
				t.Errorf("problem %q, want one containing %q", got.Problem, tc.wantProblem)
			}
			// Whatever is chosen, the plugin accepts; an MTU refused as
			// invalid, the plugin would refuse too.
			if err := renderWithMTU(t, got.MTU, tc.ipv6); err != nil {
				t.Errorf("the chosen MTU %d fails the conflist: %v", got.MTU, err)
			}
			if got.MTU == 0 && len(tc.found) > 0 {
				smallest := slices.MinFunc(tc.found, func(a, b uplink.Uplink) int { return a.MTU - b.MTU })
				if err := renderWithMTU(t, smallest.MTU, tc.ipv6); err == nil {
					t.Errorf("MTU %d refused, but the plugin accepts it", smallest.MTU)
				}
			}
		})
	}
}

// renderWithMTU renders the conflist of a node with an IPv4 pod CIDR, and
// an IPv6 one when ipv6 is set, with the pods' MTU set to mtu.
func renderWithMTU(t *testing.T, mtu int, ipv6 bool) error {
	t.Helper()
	cidrs := []string{"10.244.1.0/24"}
	if ipv6 {
		cidrs = append(cidrs, "fd00:10:244:1::/64")
	}
	data, err := cniconf.NewConfData(node("n", cidrs), cniconf.ConfData{CNIVersion: "1.1.0", Network: "vethroute", DataDir: "/var/lib/cni/vethroute", MTU: mtu})
	if err != nil {
		t.Fatal(err)
	}
	_, err = cniconf.RenderConfList(data)
	return err
}

// fakeUplinks is a FindUplinks whose answer the test changes: an interface
// eth0 carrying every address asked for, with MTU mtu, or none when mtu is
// 0.
type fakeUplinks struct {
	mu    sync.Mutex
	mtu   int
	err   error
	calls int
	asked []netip.Addr
}

func (f *fakeUplinks) find(addrs ...netip.Addr) ([]uplink.Uplink, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls++
	f.asked = slices.Clone(addrs)
	if f.err != nil || f.mtu == 0 {
		return nil, f.err
	}
	var out []uplink.Uplink
	for _, a := range addrs {
		out = append(out, uplink.Uplink{Addr: a, Name: "eth0", Index: 2, MTU: f.mtu})
	}
	return out, nil
}

func (f *fakeUplinks) set(mtu int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.mtu = mtu
}

func (f *fakeUplinks) state() (calls int, asked []netip.Addr) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls, slices.Clone(f.asked)
}

// withUplinks makes the controller resync quickly and detect its MTU
// through f.
func withUplinks(f *fakeUplinks) func(*Config) {
	return func(c *Config) {
		c.FindUplinks = f.find
		c.ResyncPeriod = 20 * time.Millisecond
	}
}

// waitConfMTU waits until the conflist holds the MTU want, or none when
// want is 0.
func (h *harness) waitConfMTU(t *testing.T, want int) {
	t.Helper()
	waitFor(t, "conflist with MTU "+strconv.Itoa(want), func() bool {
		b, err := os.ReadFile(h.conf)
		if err != nil {
			return false
		}
		if want == 0 {
			return !strings.Contains(string(b), `"mtu"`)
		}
		return strings.Contains(string(b), `"mtu": `+strconv.Itoa(want)+",")
	})
}

// TestControllerFollowsUplinkMTU checks that the conflist gets the MTU of
// the interface carrying the node's InternalIP, and a new one at the next
// resync after that interface's MTU changed, logged at info.
func TestControllerFollowsUplinkMTU(t *testing.T) {
	uplinks := &fakeUplinks{mtu: 9000}
	h := startControllerWith(t, &fakeTable{}, withUplinks(uplinks),
		node("router01", []string{"192.168.0.0/24", "fd00:10:244:1::/64"}, "172.16.0.1", "fd00:172:16::1"))
	h.waitConfMTU(t, 9000)
	if _, asked := uplinks.state(); !slices.Equal(asked, []netip.Addr{netip.MustParseAddr("172.16.0.1"), netip.MustParseAddr("fd00:172:16::1")}) {
		t.Errorf("asked for the interfaces of %v, want both InternalIPs", asked)
	}
	if got := h.logs.lines("uplink MTU detected"); len(got) != 1 || !strings.Contains(got[0], "mtu=9000 interface=eth0") {
		t.Errorf("detection logged as %q, want one line with mtu=9000 interface=eth0", got)
	}

	// No API event: the resync alone brings the new MTU.
	uplinks.set(1400)
	h.waitConfMTU(t, 1400)
	if got := h.logs.lines("uplink MTU changed"); len(got) != 1 || !strings.Contains(got[0], "level=INFO") || !strings.Contains(got[0], "old=9000 new=1400 interface=eth0") {
		t.Errorf("change logged as %q, want one info line with old=9000 new=1400 interface=eth0", got)
	}

	// Further resyncs of the same MTU rewrite and log nothing.
	calls, _ := uplinks.state()
	waitFor(t, "more resyncs", func() bool { c, _ := uplinks.state(); return c >= calls+3 })
	if got := testutil.ToFloat64(h.metrics.ConfWrites); got != 2 {
		t.Errorf("cni_config_writes_total = %v, want 2 (9000, then 1400)", got)
	}
	if got := h.logs.lines("uplink MTU"); len(got) != 2 {
		t.Errorf("uplink MTU logged %d times, want 2:\n%s", len(got), strings.Join(got, "\n"))
	}
}

// TestControllerUplinkMTUFallback checks that a node whose InternalIP no
// interface carries gets the plugin's default MTU with one warning, not
// one per resync, and its uplink's MTU once the address shows up.
func TestControllerUplinkMTUFallback(t *testing.T) {
	uplinks := &fakeUplinks{}
	h := startControllerWith(t, &fakeTable{}, withUplinks(uplinks), node("router01", []string{"192.168.0.0/24"}, "172.16.0.1"))
	h.waitConfMTU(t, 0)
	waitFor(t, "more resyncs", func() bool { c, _ := uplinks.state(); return c >= 4 })
	if got := h.logs.lines("uplink MTU detection"); len(got) != 1 || !strings.Contains(got[0], "level=WARN") || !strings.Contains(got[0], "no interface carries InternalIP 172.16.0.1") {
		t.Errorf("fallback logged as %q, want one warning naming 172.16.0.1", got)
	}

	uplinks.set(1400)
	h.waitConfMTU(t, 1400)
	if got := h.logs.lines("uplink MTU problem resolved"); len(got) != 1 {
		t.Errorf("resolution logged as %q, want one line", got)
	}
}

// TestControllerMTUOverride checks that a set MTU is written as it is,
// without looking for the uplink.
func TestControllerMTUOverride(t *testing.T) {
	uplinks := &fakeUplinks{mtu: 9000}
	h := startControllerWith(t, &fakeTable{}, func(c *Config) {
		withUplinks(uplinks)(c)
		c.ConfBase.MTU = 1450
	}, node("router01", []string{"192.168.0.0/24"}, "172.16.0.1"))
	h.waitConfMTU(t, 1450)
	if calls, _ := uplinks.state(); calls != 0 {
		t.Errorf("looked for the uplink %d times with the MTU set", calls)
	}
}

// TestControllerUplinkMTUError checks that a failing lookup fails the
// reconcile (retried with backoff) instead of writing the default MTU.
func TestControllerUplinkMTUError(t *testing.T) {
	uplinks := &fakeUplinks{mtu: 9000, err: errors.New("netlink down")}
	h := startControllerWith(t, &fakeTable{}, withUplinks(uplinks), node("router01", []string{"192.168.0.0/24"}, "172.16.0.1"))
	waitFor(t, "a failed reconcile", func() bool { return testutil.ToFloat64(h.metrics.ReconcileErrors) > 0 })
	if _, err := os.Stat(h.conf); !os.IsNotExist(err) {
		t.Errorf("conflist written although the uplink lookup failed: %v", err)
	}
	if got := h.logs.lines("netlink down"); len(got) == 0 {
		t.Error("the lookup's error is not in the log")
	}
}
