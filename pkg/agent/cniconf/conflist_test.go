package cniconf

import (
	"encoding/json"
	"net/netip"
	"strings"
	"testing"

	"github.com/containernetworking/cni/libcni"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func TestGateway(t *testing.T) {
	tests := []struct {
		prefix, want string
		wantErr      bool
	}{
		{prefix: "192.168.0.0/24", want: "192.168.0.254"},
		{prefix: "10.0.0.0/24", want: "10.0.0.254"},
		{prefix: "10.244.0.0/16", want: "10.244.255.254"},
		{prefix: "10.244.3.0/23", want: "10.244.3.254"},
		{prefix: "10.1.2.3/20", want: "10.1.15.254"},
		{prefix: "10.0.0.0/30", want: "10.0.0.2"},
		{prefix: "10.0.0.0/31", wantErr: true},
		{prefix: "10.0.0.0/32", wantErr: true},
		{prefix: "fd00:10:244:1::/64", want: "fd00:10:244:1:ffff:ffff:ffff:ffff"},
		{prefix: "fd00::/120", want: "fd00::ff"},
		{prefix: "fd00::/126", want: "fd00::3"},
		{prefix: "fd00::/127", wantErr: true},
	}
	for _, tc := range tests {
		t.Run(tc.prefix, func(t *testing.T) {
			got, err := gateway(netip.MustParsePrefix(tc.prefix))
			if tc.wantErr {
				if err == nil {
					t.Fatalf("gateway(%s) = %s, want an error", tc.prefix, got)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got.String() != tc.want {
				t.Errorf("gateway(%s) = %s, want %s", tc.prefix, got, tc.want)
			}
		})
	}
}

// rangeEntry is one IPAM range as the plugin reads it.
type rangeEntry struct {
	Subnet  string `json:"subnet"`
	Gateway string `json:"gateway"`
}

type renderedConf struct {
	CNIVersion string `json:"cniVersion"`
	Name       string `json:"name"`
	Plugins    []struct {
		Type    string          `json:"type"`
		MTU     int             `json:"mtu"`
		LogFile string          `json:"logFile"`
		Reaper  string          `json:"reaperSocket"`
		Caps    map[string]bool `json:"capabilities"`
		IPAM    struct {
			Type   string         `json:"type"`
			Ranges [][]rangeEntry `json:"ranges"`
			Routes []struct {
				Dst string `json:"dst"`
			} `json:"routes"`
			DataDir string `json:"dataDir"`
		} `json:"ipam"`
	} `json:"plugins"`
}

func TestRenderConfList(t *testing.T) {
	base := ConfData{CNIVersion: "1.1.0", Network: "vethroute", DataDir: "/var/lib/cni/vethroute"}
	tests := []struct {
		name       string
		podCIDRs   []string
		base       ConfData
		wantRanges []rangeEntry
		wantRoutes []string
		wantErr    string
	}{
		{
			name:       "single stack",
			podCIDRs:   []string{"192.168.0.0/24"},
			base:       base,
			wantRanges: []rangeEntry{{"192.168.0.0/24", "192.168.0.254"}},
			wantRoutes: []string{"0.0.0.0/0"},
		},
		{
			name:     "dual stack keeps spec order",
			podCIDRs: []string{"fd00:10:244:1::/64", "10.244.1.0/24"},
			base:     ConfData{CNIVersion: "1.0.0", Network: "pods", MTU: 1450, DataDir: "/data", LogFile: "/var/log/vr.log", ReaperSocket: "/run/vethroute/reaper.sock", Chain: []string{"portmap", "bandwidth", "tuning"}},
			wantRanges: []rangeEntry{
				{"fd00:10:244:1::/64", "fd00:10:244:1:ffff:ffff:ffff:ffff"},
				{"10.244.1.0/24", "10.244.1.254"},
			},
			wantRoutes: []string{"::/0", "0.0.0.0/0"},
		},
		{
			name:    "no pod CIDRs",
			base:    base,
			wantErr: "no spec.podCIDRs",
		},
		{
			name:     "pod CIDR too small",
			podCIDRs: []string{"10.0.0.0/31"},
			base:     base,
			wantErr:  "too small",
		},
		{
			name:     "MTU the plugin refuses",
			podCIDRs: []string{"10.0.0.0/24"},
			base:     ConfData{CNIVersion: "1.1.0", Network: "x", MTU: 20, DataDir: "/d"},
			wantErr:  "would fail the plugin: plugins[0]: invalid network config: mtu",
		},
		{
			name:     "IPv6 pod CIDR under the plugin's IPv6 MTU",
			podCIDRs: []string{"fd00::/64"},
			base:     ConfData{CNIVersion: "1.1.0", Network: "x", MTU: 1200, DataDir: "/d"},
			wantErr:  "would fail the plugin: plugins[0]: invalid network config: mtu: 1200 is below 1280",
		},
		{
			name:     "relative dataDir",
			podCIDRs: []string{"10.0.0.0/24"},
			base:     ConfData{CNIVersion: "1.1.0", Network: "x", DataDir: "data"},
			wantErr:  "ipam.dataDir",
		},
		{
			name:     "network name libcni rejects",
			podCIDRs: []string{"10.0.0.0/24"},
			base:     ConfData{CNIVersion: "1.1.0", Network: "", DataDir: "/d"},
			wantErr:  "not a valid CNI configuration list",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "n1"}, Spec: corev1.NodeSpec{PodCIDRs: tc.podCIDRs}}
			data, err := NewConfData(node, tc.base)
			var out []byte
			if err == nil {
				out, err = RenderConfList(data)
			}
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want one containing %q\n%s", err, tc.wantErr, out)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if _, err := libcni.ConfListFromBytes(out); err != nil {
				t.Fatalf("libcni rejects the output: %v\n%s", err, out)
			}
			var c renderedConf
			if err := json.Unmarshal(out, &c); err != nil {
				t.Fatal(err)
			}
			if c.CNIVersion != tc.base.CNIVersion || c.Name != tc.base.Network || len(c.Plugins) != 1+len(tc.base.Chain) {
				t.Fatalf("conflist header/plugins wrong:\n%s", out)
			}
			// Chained plugins follow in order; the runtime hands hostPorts
			// and bandwidth only to a plugin that declares the capability.
			wantCaps := map[string]string{"portmap": "portMappings", "bandwidth": "bandwidth"}
			for i, typ := range tc.base.Chain {
				p := c.Plugins[1+i]
				if p.Type != typ || p.IPAM.Type != "" || p.MTU != 0 {
					t.Errorf("plugins[%d] = %+v, want a bare %s", 1+i, p, typ)
				}
				if capability, ok := wantCaps[typ]; ok && (len(p.Caps) != 1 || !p.Caps[capability]) {
					t.Errorf("plugins[%d] (%s) capabilities = %v, want %s", 1+i, typ, p.Caps, capability)
				} else if !ok && len(p.Caps) != 0 {
					t.Errorf("plugins[%d] (%s) capabilities = %v, want none", 1+i, typ, p.Caps)
				}
			}
			p := c.Plugins[0]
			if p.Type != "vethroute" || p.IPAM.Type != "vethroute" || p.MTU != tc.base.MTU || p.LogFile != tc.base.LogFile || p.Reaper != tc.base.ReaperSocket || p.IPAM.DataDir != tc.base.DataDir {
				t.Errorf("plugin fields wrong:\n%s", out)
			}
			if len(p.IPAM.Ranges) != len(tc.wantRanges) {
				t.Fatalf("ranges = %v, want %v", p.IPAM.Ranges, tc.wantRanges)
			}
			for i, rs := range p.IPAM.Ranges {
				if len(rs) != 1 || rs[0] != tc.wantRanges[i] {
					t.Errorf("range set %d = %v, want [%v]", i, rs, tc.wantRanges[i])
				}
			}
			var routes []string
			for _, r := range p.IPAM.Routes {
				routes = append(routes, r.Dst)
			}
			if strings.Join(routes, ",") != strings.Join(tc.wantRoutes, ",") {
				t.Errorf("routes = %v, want %v", routes, tc.wantRoutes)
			}
			if tc.base.MTU == 0 && strings.Contains(string(out), `"mtu"`) {
				t.Errorf("mtu written although unset:\n%s", out)
			}
			// Rendering is deterministic, so the file is only rewritten
			// when the node changes.
			again, err := RenderConfList(data)
			if err != nil || string(again) != string(out) {
				t.Errorf("second render differs (err %v)", err)
			}
		})
	}
}

func TestCNIVersionFor(t *testing.T) {
	tests := []struct {
		runtime string
		want    string
	}{
		// libcni reads cniVersion 1.1.0 from v1.2.0, in containerd from 2.0.
		{"containerd://2.1.4", "1.1.0"},
		{"containerd://v2.0.0", "1.1.0"},
		{"containerd://1.7.27", "1.0.0"},
		{"containerd://1.6.20", "1.0.0"},
		{"cri-o://1.34.0", "1.0.0"},
		{"containerd://", "1.0.0"},
		{"", "1.0.0"},
	}
	for _, tc := range tests {
		t.Run(tc.runtime, func(t *testing.T) {
			n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "n1"}, Spec: corev1.NodeSpec{PodCIDRs: []string{"10.1.0.0/24"}}}
			n.Status.NodeInfo.ContainerRuntimeVersion = tc.runtime
			if got := cniVersionFor(n); got != tc.want {
				t.Errorf("cniVersionFor(%q) = %s, want %s", tc.runtime, got, tc.want)
			}
			data, err := NewConfData(n, ConfData{CNIVersion: AutoCNIVersion, Network: "x"})
			if err != nil {
				t.Fatal(err)
			}
			if data.CNIVersion != tc.want {
				t.Errorf("NewConfData with auto: cniVersion %s, want %s", data.CNIVersion, tc.want)
			}
			pinned, err := NewConfData(n, ConfData{CNIVersion: "0.4.0", Network: "x"})
			if err != nil {
				t.Fatal(err)
			}
			if pinned.CNIVersion != "0.4.0" {
				t.Errorf("NewConfData with a pinned version: cniVersion %s, want 0.4.0 untouched", pinned.CNIVersion)
			}
		})
	}
}
