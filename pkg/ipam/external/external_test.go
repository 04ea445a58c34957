package external

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"testing"

	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"

	"github.com/vethroute/vethroute/internal/testutil"
	"github.com/vethroute/vethroute/pkg/ipam"
)

func TestMain(m *testing.M) { testutil.Main(m) }

// network is the name of the network every test's configuration uses;
// host-local keeps its reservations in dataDir/network.
const network = "ipamext"

// attach sets the CNI environment of attachment (id, eth0) with cniPath
// as CNI_PATH, as the runtime does for the plugin: the delegated IPAM
// plugin inherits it.
func attach(t *testing.T, cniPath, id string) {
	t.Helper()
	t.Setenv("CNI_PATH", cniPath)
	t.Setenv("CNI_CONTAINERID", id)
	t.Setenv("CNI_IFNAME", "eth0")
	// host-local never enters the namespace, and a path that is no
	// namespace passes skel's check that it is not the plugin's own.
	t.Setenv("CNI_NETNS", "/nonexistent/vethroute-ipamext-netns")
	t.Setenv("CNI_ARGS", "")
}

// netConf is the runtime's stdin for the vethroute plugin with host-local as
// its IPAM: ipamKeys are the JSON members of the ipam section besides type
// and dataDir, top the top-level keys besides cniVersion, name and type.
func netConf(t *testing.T, version, dataDir, ipamKeys string, top map[string]any) []byte {
	t.Helper()
	conf := map[string]any{"cniVersion": version, "name": network, "type": "vethroute"}
	for k, v := range top {
		conf[k] = v
	}
	section := fmt.Sprintf(`{"type": "host-local", "dataDir": %q, %s}`, dataDir, ipamKeys)
	if !json.Valid([]byte(section)) {
		t.Fatalf("ipam section is not JSON: %s", section)
	}
	conf["ipam"] = json.RawMessage(section)
	return []byte(testutil.JSON(t, conf))
}

// reservations lists host-local's reservations in dataDir as
// "address containerID/ifName", sorted.
func reservations(t *testing.T, dataDir string) []string {
	t.Helper()
	entries, err := os.ReadDir(filepath.Join(dataDir, network))
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	out := []string{}
	for _, e := range entries {
		if e.Name() == "lock" || strings.HasPrefix(e.Name(), "last_reserved_ip.") {
			continue
		}
		owner, err := os.ReadFile(filepath.Join(dataDir, network, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, e.Name()+" "+strings.ReplaceAll(strings.TrimSpace(string(owner)), "\r\n", "/"))
	}
	sort.Strings(out)
	return out
}

// owners is reservations without the addresses.
func owners(t *testing.T, dataDir string) []string {
	t.Helper()
	out := []string{}
	for _, r := range reservations(t, dataDir) {
		out = append(out, r[strings.IndexByte(r, ' ')+1:])
	}
	sort.Strings(out)
	return out
}

// TestAllocate: each address host-local hands out lies in its range and
// comes with the range's gateway; the configuration's routes come back.
func TestAllocate(t *testing.T) {
	dir := testutil.ReferencePlugins(t, "host-local")
	type want struct {
		first, last, gateway string
		prefix               int
	}
	for _, tc := range []struct {
		name       string
		ipam       string
		want       []want
		wantRoutes []string
	}{
		{
			name: "ipv4, gateway defaulted to the subnet's first address",
			ipam: `"ranges": [[{"subnet": "10.9.0.0/29"}]]`,
			want: []want{{"10.9.0.2", "10.9.0.6", "10.9.0.1", 29}},
		},
		{
			name: "ipv4, explicit range and gateway",
			ipam: `"ranges": [[{"subnet": "10.9.0.0/28", "rangeStart": "10.9.0.8", "rangeEnd": "10.9.0.9", "gateway": "10.9.0.14"}]]`,
			want: []want{{"10.9.0.8", "10.9.0.9", "10.9.0.14", 28}},
		},
		{
			name: "dual-stack with routes",
			ipam: `"ranges": [[{"subnet": "10.9.0.0/29", "gateway": "10.9.0.6"}], [{"subnet": "fd00:9::/120"}]],
				"routes": [{"dst": "0.0.0.0/0"}, {"dst": "fd00:1::/64"}]`,
			want: []want{
				{"10.9.0.1", "10.9.0.5", "10.9.0.6", 29},
				{"fd00:9::2", "fd00:9::ff", "fd00:9::1", 120},
			},
			wantRoutes: []string{"0.0.0.0/0", "fd00:1::/64"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dataDir := t.TempDir()
			attach(t, dir, "a")
			p := &Plugin{Type: "host-local", Stdin: netConf(t, "1.1.0", dataDir, tc.ipam, nil)}
			leases, routes, err := p.Allocate()
			if err != nil {
				t.Fatalf("Allocate = %v", err)
			}
			if len(leases) != len(tc.want) {
				t.Fatalf("Allocate gave %d leases %v, want %d", len(leases), leases, len(tc.want))
			}
			var wantHeld []string
			for i, w := range tc.want {
				l := leases[i]
				ip := l.Address.IP
				if bytes.Compare(ip.To16(), net.ParseIP(w.first).To16()) < 0 || bytes.Compare(ip.To16(), net.ParseIP(w.last).To16()) > 0 {
					t.Errorf("lease %d: %s outside %s-%s", i, ip, w.first, w.last)
				}
				if ones, _ := l.Address.Mask.Size(); ones != w.prefix {
					t.Errorf("lease %d: %s has prefix /%d, want /%d", i, l.Address.String(), ones, w.prefix)
				}
				if !l.Gateway.Equal(net.ParseIP(w.gateway)) {
					t.Errorf("lease %d: gateway %s, want %s", i, l.Gateway, w.gateway)
				}
				wantHeld = append(wantHeld, ip.String()+" a/eth0")
			}
			var gotRoutes []string
			for _, r := range routes {
				gotRoutes = append(gotRoutes, r.Dst.String())
			}
			if !reflect.DeepEqual(gotRoutes, tc.wantRoutes) {
				t.Errorf("routes = %v, want %v", gotRoutes, tc.wantRoutes)
			}
			sort.Strings(wantHeld)
			if got := reservations(t, dataDir); !reflect.DeepEqual(got, wantHeld) {
				t.Errorf("host-local holds %v, want %v", got, wantHeld)
			}
		})
	}
}

// TestLifecycle drives one network through allocate, check, release (twice,
// and of an attachment that never allocated), each step in the environment
// of its attachment, and checks host-local's reservations after each.
func TestLifecycle(t *testing.T) {
	dir := testutil.ReferencePlugins(t, "host-local")
	dataDir := t.TempDir()
	stdin := netConf(t, "1.1.0", dataDir, `"ranges": [[{"subnet": "10.9.0.0/29"}]]`, nil)
	allocate := func(p *Plugin) error { _, _, err := p.Allocate(); return err }
	check := func(p *Plugin) error { return p.Check(nil) }
	release := func(p *Plugin) error { return p.Release() }
	for _, step := range []struct {
		name      string
		id        string
		run       func(*Plugin) error
		wantErr   string // "" for success
		wantHeld  []string
		wantCheck bool // CHECK of id succeeds after the step
	}{
		{"allocate a", "a", allocate, "", []string{"a/eth0"}, true},
		{"check b before it allocates", "b", check, `ipam plugin host-local CHECK: host-local: Failed to find address added by container b`, []string{"a/eth0"}, false},
		{"allocate b", "b", allocate, "", []string{"a/eth0", "b/eth0"}, true},
		{"release a", "a", release, "", []string{"b/eth0"}, false},
		{"check a after its release", "a", check, "Failed to find address added by container a", []string{"b/eth0"}, false},
		{"release a again", "a", release, "", []string{"b/eth0"}, false},
		{"release c, which never allocated", "c", release, "", []string{"b/eth0"}, false},
		{"allocate a anew", "a", allocate, "", []string{"a/eth0", "b/eth0"}, true},
	} {
		attach(t, dir, step.id)
		p := &Plugin{Type: "host-local", Stdin: stdin}
		err := step.run(p)
		if step.wantErr == "" && err != nil || step.wantErr != "" && (err == nil || !strings.Contains(err.Error(), step.wantErr)) {
			t.Fatalf("%s: error %v, want %q", step.name, err, step.wantErr)
		}
		if got := owners(t, dataDir); !reflect.DeepEqual(got, step.wantHeld) {
			t.Fatalf("%s: host-local holds %v, want %v", step.name, got, step.wantHeld)
		}
		if err := p.Check(nil); (err == nil) != step.wantCheck {
			t.Fatalf("%s: CHECK of %s afterwards = %v, want success %v", step.name, step.id, err, step.wantCheck)
		}
	}
}

// TestHeld: Held reports prevResult's addresses, in whatever version the
// runtime sent it, and nothing without one; it never asks the plugin, so it
// needs no CNI environment.
func TestHeld(t *testing.T) {
	v4 := &current.IPConfig{Address: mustCIDR(t, "10.9.0.2/29"), Gateway: net.ParseIP("10.9.0.1")}
	v6 := &current.IPConfig{Address: mustCIDR(t, "fd00:9::2/120"), Gateway: net.ParseIP("fd00:9::1")}
	older, err := (&current.Result{CNIVersion: "1.0.0", IPs: []*current.IPConfig{v4}}).GetAsVersion("0.4.0")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		prev types.Result
		want []string
	}{
		{"no prevResult", nil, nil},
		{"dual-stack prevResult", &current.Result{CNIVersion: "1.1.0", IPs: []*current.IPConfig{v4, v6}}, []string{"10.9.0.2/29", "fd00:9::2/120"}},
		{"prevResult of CNI 0.4.0", older, []string{"10.9.0.2/29"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			held, err := (&Plugin{Type: "host-local", PrevResult: tc.prev}).Held()
			if err != nil {
				t.Fatalf("Held = %v", err)
			}
			var got []string
			for _, h := range held {
				got = append(got, h.String())
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("Held = %v, want %v", got, tc.want)
			}
		})
	}
}

// TestCollect: GC keeps what the runtime lists as valid and releases the
// rest, by container and interface; Collect cannot count what the plugin
// released and says 0.
func TestCollect(t *testing.T) {
	dir := testutil.ReferencePlugins(t, "host-local")
	a := types.GCAttachment{ContainerID: "a", IfName: "eth0"}
	b := types.GCAttachment{ContainerID: "b", IfName: "eth0"}
	aNet1 := types.GCAttachment{ContainerID: "a", IfName: "net1"}
	all := []string{"a/eth0", "a/net1", "b/eth0"}
	for _, tc := range []struct {
		name     string
		version  string
		top      map[string]any
		keep     []types.GCAttachment // what the plugin's own GC keeps
		wantCode uint                 // CNI error code of GC, 0 for success
		wantHeld []string
	}{
		{
			name: "valid-attachments lists a/eth0", version: "1.1.0",
			top:  map[string]any{"cni.dev/valid-attachments": []types.GCAttachment{a}},
			keep: []types.GCAttachment{a}, wantHeld: []string{"a/eth0"},
		},
		{
			name: "empty valid-attachments releases all", version: "1.1.0",
			top:      map[string]any{"cni.dev/valid-attachments": []types.GCAttachment{}},
			wantHeld: []string{},
		},
		{
			name: "the draft key cni.dev/attachments lists a/eth0", version: "1.1.0",
			top:  map[string]any{"cni.dev/attachments": []types.GCAttachment{a}},
			keep: []types.GCAttachment{a}, wantHeld: []string{"a/eth0"},
		},
		{
			name: "both keys: what either lists is kept", version: "1.1.0",
			top:  map[string]any{"cni.dev/valid-attachments": []types.GCAttachment{b}, "cni.dev/attachments": []types.GCAttachment{aNet1}},
			keep: []types.GCAttachment{b, aNet1}, wantHeld: []string{"a/net1", "b/eth0"},
		},
		{
			name: "CNI 1.0.0 has no GC", version: "1.0.0",
			top:      map[string]any{"cni.dev/valid-attachments": []types.GCAttachment{}},
			wantCode: types.ErrIncompatibleCNIVersion, wantHeld: all,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dataDir := t.TempDir()
			stdin := netConf(t, tc.version, dataDir, `"ranges": [[{"subnet": "10.9.0.0/29"}]]`, nil)
			for _, o := range []types.GCAttachment{a, aNet1, b} {
				attach(t, dir, o.ContainerID)
				t.Setenv("CNI_IFNAME", o.IfName)
				if _, _, err := (&Plugin{Type: "host-local", Stdin: stdin}).Allocate(); err != nil {
					t.Fatalf("Allocate %v = %v", o, err)
				}
			}
			if got := owners(t, dataDir); !reflect.DeepEqual(got, all) {
				t.Fatalf("host-local holds %v before GC, want %v", got, all)
			}

			// A runtime's GC has no attachment in its environment.
			attach(t, dir, "")
			keep := func(o ipam.Owner) bool {
				for _, k := range tc.keep {
					if k.ContainerID == o.ContainerID && k.IfName == o.IfName {
						return true
					}
				}
				return false
			}
			p := &Plugin{Type: "host-local", Stdin: netConf(t, tc.version, dataDir, `"ranges": [[{"subnet": "10.9.0.0/29"}]]`, tc.top)}
			n, err := p.Collect(keep)
			var te *types.Error
			switch {
			case tc.wantCode == 0 && err != nil:
				t.Fatalf("Collect = %v", err)
			case tc.wantCode != 0 && (!errors.As(err, &te) || te.Code != tc.wantCode || !strings.HasPrefix(err.Error(), "ipam plugin host-local GC: ")):
				t.Fatalf("Collect = %v, want CNI code %d from ipam plugin host-local GC", err, tc.wantCode)
			}
			if n != 0 {
				t.Errorf("Collect counted %d, want 0: the plugin does not say", n)
			}
			if got := owners(t, dataDir); !reflect.DeepEqual(got, tc.wantHeld) {
				t.Errorf("host-local holds %v after GC, want %v", got, tc.wantHeld)
			}
		})
	}
}

// TestStatus: STATUS is the plugin's answer (host-local, which has none,
// always succeeds), even for a full range, and the plugin's CNI error comes
// back as it is; a plugin that fails without one cannot service ADD: code
// 50.
func TestStatus(t *testing.T) {
	dir := testutil.ReferencePlugins(t, "host-local")
	for _, tc := range []struct {
		name     string
		version  string
		script   string // when set, the IPAM plugin is this shell script instead of host-local
		fill     bool   // allocate the range's only address first
		wantCode uint   // 0 for success
		wantMsg  string // in the CNI error's message
	}{
		{name: "free range", version: "1.1.0"},
		{name: "full range", version: "1.1.0", fill: true},
		{name: "CNI 1.0.0, which has no STATUS", version: "1.0.0", wantCode: types.ErrIncompatibleCNIVersion, wantMsg: "does not allow STATUS"},
		{name: "the plugin's own CNI error", version: "1.1.0", script: `echo '{"code": 11, "msg": "daemon restarting"}'; exit 1`, wantCode: types.ErrTryAgainLater, wantMsg: "daemon restarting"},
		{name: "a plugin failing without a CNI error", version: "1.1.0", script: `echo crashed >&2; exit 2`, wantCode: types.ErrPluginNotAvailable, wantMsg: `ipam plugin scripted STATUS: netplugin failed: "crashed\n"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			typ, cniPath := "host-local", dir
			if tc.script != "" {
				typ, cniPath = "scripted", t.TempDir()
				if err := os.WriteFile(filepath.Join(cniPath, typ), []byte("#!/bin/sh\n"+tc.script+"\n"), 0o755); err != nil {
					t.Fatal(err)
				}
			}
			attach(t, cniPath, "a")
			p := &Plugin{Type: typ, Stdin: netConf(t, tc.version, t.TempDir(), `"ranges": [[{"subnet": "10.9.0.0/30"}]]`, nil)}
			if tc.fill {
				if _, _, err := p.Allocate(); err != nil {
					t.Fatal(err)
				}
			}
			err := p.Status()
			var te *types.Error
			if tc.wantCode == 0 && err != nil || tc.wantCode != 0 && (!errors.As(err, &te) || te.Code != tc.wantCode || !strings.Contains(te.Msg, tc.wantMsg)) {
				t.Fatalf("Status = %v, want code %d with %q", err, tc.wantCode, tc.wantMsg)
			}
		})
	}
}

// TestExhausted allocates from ranges with few addresses until host-local
// refuses. Its refusal is a CNI error of its own, which the plugin's
// cniError passes through unchanged: code 999 with host-local's message,
// not ipam.ErrExhausted, which only the built-in allocator returns. The
// refused ADD holds nothing, and a release makes room again.
func TestExhausted(t *testing.T) {
	dir := testutil.ReferencePlugins(t, "host-local")
	for _, tc := range []struct {
		name   string
		subnet string
		want   []string // the addresses handed out, in order
	}{
		{"ipv4 /30: gateway .1, broadcast .3", "10.9.0.0/30", []string{"10.9.0.2"}},
		{"ipv6 /126: gateway ::1", "fd00:9::/126", []string{"fd00:9::2", "fd00:9::3"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dataDir := t.TempDir()
			stdin := netConf(t, "1.1.0", dataDir, fmt.Sprintf(`"ranges": [[{"subnet": %q}]]`, tc.subnet), nil)
			var got []string
			var err error
			for i := 0; i <= len(tc.want); i++ {
				attach(t, dir, fmt.Sprintf("c%d", i))
				var leases []ipam.Lease
				if leases, _, err = (&Plugin{Type: "host-local", Stdin: stdin}).Allocate(); err != nil {
					break
				}
				got = append(got, leases[0].Address.IP.String())
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("handed out %v before refusing, want %v", got, tc.want)
			}
			var te *types.Error
			if !errors.As(err, &te) || te.Code != types.ErrInternal || !strings.Contains(te.Msg, "no IP addresses available in range set") {
				t.Fatalf("Allocate from a full range = %v, want host-local's code 999 naming the full range set", err)
			}
			if !strings.HasPrefix(err.Error(), "ipam plugin host-local: ") {
				t.Errorf("Allocate error %q does not name the ipam plugin", err)
			}
			if errors.Is(err, ipam.ErrExhausted) {
				t.Errorf("Allocate error %v is ipam.ErrExhausted, which cniError would turn into code 11", err)
			}
			if o := owners(t, dataDir); len(o) != len(tc.want) {
				t.Fatalf("host-local holds %v after the refused ADD, want %d reservations", o, len(tc.want))
			}

			attach(t, dir, "c0")
			if err := (&Plugin{Type: "host-local", Stdin: stdin}).Release(); err != nil {
				t.Fatal(err)
			}
			attach(t, dir, "again")
			leases, _, err := (&Plugin{Type: "host-local", Stdin: stdin}).Allocate()
			if err != nil || leases[0].Address.IP.String() != tc.want[0] {
				t.Fatalf("Allocate after a release = %v, %v; want %s", leases, err, tc.want[0])
			}
		})
	}
}

// TestMissingPlugin: with Type nowhere in CNI_PATH every verb fails naming
// the plugin and the lookup. ADD, DEL, CHECK and GC carry no CNI error, so
// the plugin's cniError answers 999; STATUS answers code 50, the plugin
// cannot service ADD.
func TestMissingPlugin(t *testing.T) {
	empty := t.TempDir()
	attach(t, empty, "a")
	dataDir := t.TempDir()
	p := &Plugin{Type: "host-local", Stdin: netConf(t, "1.1.0", dataDir, `"ranges": [[{"subnet": "10.9.0.0/29"}]]`, nil)}
	for _, tc := range []struct {
		verb     string
		run      func() error
		wantCode uint // 0: no CNI error
	}{
		{"ADD", func() error { _, _, err := p.Allocate(); return err }, 0},
		{"DEL", p.Release, 0},
		{"CHECK", func() error { return p.Check(nil) }, 0},
		{"GC", func() error { _, err := p.Collect(func(ipam.Owner) bool { return false }); return err }, 0},
		{"STATUS", p.Status, types.ErrPluginNotAvailable},
	} {
		t.Run(tc.verb, func(t *testing.T) {
			err := tc.run()
			if err == nil || !strings.HasPrefix(err.Error(), "ipam plugin host-local") || !strings.Contains(err.Error(), `failed to find plugin "host-local" in path [`+empty+`]`) {
				t.Fatalf("%s = %v, want an error naming ipam plugin host-local and the path searched", tc.verb, err)
			}
			var te *types.Error
			isCNI := errors.As(err, &te)
			if tc.wantCode == 0 && isCNI || tc.wantCode != 0 && (!isCNI || te.Code != tc.wantCode) {
				t.Fatalf("%s = %#v, want CNI code %d (0: none)", tc.verb, err, tc.wantCode)
			}
		})
	}
	if _, err := os.Stat(filepath.Join(dataDir, network)); !os.IsNotExist(err) {
		t.Errorf("store created without the plugin: %v", err)
	}
}

func mustCIDR(t *testing.T, s string) net.IPNet {
	t.Helper()
	ip, n, err := net.ParseCIDR(s)
	if err != nil {
		t.Fatal(err)
	}
	n.IP = ip
	return *n
}
