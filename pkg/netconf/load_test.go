package netconf

import (
	"strings"
	"testing"

	"github.com/containernetworking/cni/pkg/types"
)

const goodIPAM = `"ipam": {"type": "vethroute", "ranges": [[{"subnet": "10.1.0.0/24"}]], "dataDir": "/tmp/x"}`

func conf(fields string) string {
	if fields != "" {
		fields = ", " + fields
	}
	return `{"cniVersion": "1.1.0", "name": "n", "type": "vethroute"` + fields + `}`
}

func TestLoadRejects(t *testing.T) {
	tests := []struct {
		name  string
		input string
		code  uint
		want  string // a substring the message must contain
	}{
		{"invalid json", `{"name": `, types.ErrDecodingFailure, "decode network config"},
		{"no name", `{"cniVersion": "1.1.0", "type": "vethroute", ` + goodIPAM + `}`, types.ErrInvalidNetworkConfig, "name"},
		{"mtu too small", conf(`"mtu": 20, ` + goodIPAM), types.ErrInvalidNetworkConfig, "mtu: 20 is outside 68..65535"},
		{"mtu too large", conf(`"mtu": 70000, ` + goodIPAM), types.ErrInvalidNetworkConfig, "mtu"},
		{"mtu below ipv6 minimum", conf(`"mtu": 1200, "ipam": {"type": "vethroute", "ranges": [[{"subnet": "fd00::/64"}]]}`), types.ErrInvalidNetworkConfig, "minimum for IPv6"},
		{"no ipam type", conf(`"ipam": {}`), types.ErrInvalidNetworkConfig, "ipam.type"},
		{"no ranges", conf(`"ipam": {"type": "vethroute"}`), types.ErrInvalidNetworkConfig, "no IP ranges"},
		{"bad subnet", conf(`"ipam": {"type": "vethroute", "ranges": [[{"subnet": "10.1.0.0/33"}]]}`), types.ErrDecodingFailure, "10.1.0.0/33"},
		{"host bits in subnet", conf(`"ipam": {"type": "vethroute", "ranges": [[{"subnet": "10.1.0.5/24"}]]}`), types.ErrInvalidNetworkConfig, "host bits"},
		{"gateway outside subnet", conf(`"ipam": {"type": "vethroute", "ranges": [[{"subnet": "10.1.0.0/24", "gateway": "10.2.0.1"}]]}`), types.ErrInvalidNetworkConfig, "gateway 10.2.0.1 not in network"},
		{"range start after end", conf(`"ipam": {"type": "vethroute", "ranges": [[{"subnet": "10.1.0.0/24", "rangeStart": "10.1.0.9", "rangeEnd": "10.1.0.3"}]]}`), types.ErrInvalidNetworkConfig, "RangeStart 10.1.0.9"},
		{"overlapping range sets", conf(`"ipam": {"type": "vethroute", "ranges": [[{"subnet": "10.1.0.0/24"}], [{"subnet": "10.1.0.0/25"}]]}`), types.ErrInvalidNetworkConfig, "overlaps"},
		{"relative dataDir", conf(`"ipam": {"type": "vethroute", "ranges": [[{"subnet": "10.1.0.0/24"}]], "dataDir": "data"}`), types.ErrInvalidNetworkConfig, "ipam.dataDir"},
		{"hostRoutes without gw", conf(`"hostRoutes": [{"dst": "10.0.0.0/24"}], ` + goodIPAM), types.ErrInvalidNetworkConfig, "hostRoutes[0].gw"},
		{"hostRoutes mixed families", conf(`"hostRoutes": [{"dst": "10.0.0.0/24", "gw": "fd00::1"}], ` + goodIPAM), types.ErrInvalidNetworkConfig, "different address families"},
		{"hostRoutes host bits", conf(`"hostRoutes": [{"dst": "10.0.0.7/24", "gw": "172.16.0.2"}], ` + goodIPAM), types.ErrInvalidNetworkConfig, "host bits"},
		{"bad log level", conf(`"logLevel": "loud", ` + goodIPAM), types.ErrInvalidNetworkConfig, "logLevel"},
		{"relative log file", conf(`"logFile": "x.log", ` + goodIPAM), types.ErrInvalidNetworkConfig, "logFile"},
		{"relative reaper socket", conf(`"reaperSocket": "run/reaper.sock", ` + goodIPAM), types.ErrInvalidNetworkConfig, "reaperSocket"},
		{"bad masq backend", conf(`"ipMasqBackend": "ipchains", ` + goodIPAM), types.ErrInvalidNetworkConfig, "ipMasqBackend"},
		{"requested ip garbage", conf(goodIPAM + `, "runtimeConfig": {"ips": ["not-an-ip"]}`), types.ErrDecodingFailure, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Load([]byte(tc.input), "")
			te, ok := err.(*types.Error)
			if !ok {
				t.Fatalf("Load error = %v (%T), want a *types.Error", err, err)
			}
			if tc.code == types.ErrDecodingFailure && te.Code == types.ErrInvalidNetworkConfig {
				// Some malformed values are caught by host-local's parser
				// after decoding; either code tells the user the config is bad.
			} else if te.Code != tc.code {
				t.Errorf("code = %d, want %d (%s)", te.Code, tc.code, te.Msg)
			}
			if !strings.Contains(te.Msg, tc.want) {
				t.Errorf("message %q does not mention %q", te.Msg, tc.want)
			}
		})
	}
}

func TestLoadDefaultsAndRequests(t *testing.T) {
	c, err := Load([]byte(conf(`"ipam": {"type": "vethroute", "ranges": [[{"subnet": "10.1.0.0/24"}]], "routes": [{"dst": "0.0.0.0/0"}]}, "runtimeConfig": {"ips": ["10.1.0.9/24"]}`)), "IgnoreUnknown=1;IP=10.1.0.7")
	if err != nil {
		t.Fatal(err)
	}
	if c.MTU != DefaultMTU || c.Builtin.DataDir != DefaultDataDir {
		t.Errorf("defaults: mtu %d dataDir %s", c.MTU, c.Builtin.DataDir)
	}
	got := []string{}
	for _, ip := range c.Builtin.IPArgs {
		got = append(got, ip.String())
	}
	if strings.Join(got, ",") != "10.1.0.7,10.1.0.9" {
		t.Errorf("requested addresses = %v, want CNI_ARGS IP then runtimeConfig ips", got)
	}
	if r := c.Builtin.Ranges[0][0]; r.Gateway.String() != "10.1.0.1" || r.RangeEnd.String() != "10.1.0.254" {
		t.Errorf("range defaults: gateway %s end %s", r.Gateway, r.RangeEnd)
	}

	ext, err := Load([]byte(conf(`"ipam": {"type": "host-local", "ranges": [[{"subnet": "10.1.0.0/24"}]]}`)), "")
	if err != nil || ext.Builtin != nil {
		t.Fatalf("external ipam: builtin=%v err=%v", ext.Builtin, err)
	}
}

func TestGCAcceptsBothAttachmentKeys(t *testing.T) {
	c, err := Load([]byte(conf(goodIPAM+`, "cni.dev/valid-attachments": [{"containerID": "a", "ifname": "eth0"}], "cni.dev/attachments": [{"containerID": "b", "ifname": "eth1"}]`)), "")
	if err != nil {
		t.Fatal(err)
	}
	if got := c.Attachments(); len(got) != 2 || got[0].ContainerID != "a" || got[1].ContainerID != "b" {
		t.Fatalf("attachments = %+v", got)
	}
}
