package netconf

import (
	"encoding/json"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/plugins/plugins/ipam/host-local/backend/allocator"
)

// TestExampleConfList loads the repository's example configuration the way
// a runtime hands it to the plugin.
func TestExampleConfList(t *testing.T) {
	b, err := os.ReadFile(filepath.Join("..", "..", "conf", "10-vethroute.conflist"))
	if err != nil {
		t.Fatal(err)
	}
	confs, err := LoadConfList(b)
	if err != nil {
		t.Fatalf("conf/10-vethroute.conflist: %v", err)
	}
	if len(confs) != 1 || confs[0].Builtin == nil || confs[0].Name != "vethroute" || len(confs[0].HostRoutes) != 1 {
		t.Fatalf("conf/10-vethroute.conflist loads as %+v", confs)
	}
}

func TestLoadConfList(t *testing.T) {
	tests := []struct {
		name, list, wantErr string
		want                int
	}{
		{name: "other plugins skipped", want: 1, list: `{"cniVersion": "1.1.0", "name": "n", "plugins": [
			{"type": "vethroute", "ipam": {"type": "vethroute", "ranges": [[{"subnet": "10.1.0.0/24"}]]}},
			{"type": "portmap", "capabilities": {"portMappings": true}}]}`},
		{name: "name injected", wantErr: "plugins[0]: invalid network config: name", list: `{"cniVersion": "1.1.0", "plugins": [{"type": "vethroute", "ipam": {"type": "x"}}]}`},
		{name: "entry validated", wantErr: "plugins[1]: invalid network config: mtu", list: `{"cniVersion": "1.1.0", "name": "n", "plugins": [
			{"type": "tuning"}, {"type": "vethroute", "mtu": 20, "ipam": {"type": "x"}}]}`},
		{name: "not a list", wantErr: "decode configuration list", list: `[]`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			confs, err := LoadConfList([]byte(tc.list))
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("LoadConfList = %v, want an error containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil || len(confs) != tc.want {
				t.Fatalf("LoadConfList = %d entries, %v; want %d", len(confs), err, tc.want)
			}
		})
	}
}

// TestMarshalRoundTrip: what MarshalJSON writes, Load reads back as the
// same configuration, and it carries no empty sections.
func TestMarshalRoundTrip(t *testing.T) {
	_, subnet, _ := net.ParseCIDR("10.1.0.0/24")
	_, def, _ := net.ParseCIDR("0.0.0.0/0")
	c := &NetConf{
		PluginConf:   types.PluginConf{CNIVersion: "1.1.0", Name: "n", Type: PluginType, IPAM: types.IPAM{Type: BuiltinIPAM}},
		MTU:          1450,
		LogFile:      "/var/log/vr.log",
		ReaperSocket: "/run/vethroute/reaper.sock",
		Builtin: &allocator.IPAMConfig{
			Ranges:  []allocator.RangeSet{{{Subnet: types.IPNet(*subnet), Gateway: net.ParseIP("10.1.0.254")}}},
			Routes:  []*types.Route{{Dst: *def}},
			DataDir: "/data",
		},
	}
	b, err := json.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	for _, empty := range []string{`"dns"`, `"prevResult"`, `"ipMasq"`, `"rangeStart"`, `"Name"`} {
		if strings.Contains(string(b), empty) {
			t.Errorf("marshalled configuration carries %s:\n%s", empty, b)
		}
	}
	got, err := Load(b, "")
	if err != nil {
		t.Fatalf("Load(MarshalJSON) = %v\n%s", err, b)
	}
	if got.MTU != c.MTU || got.LogFile != c.LogFile || got.ReaperSocket != c.ReaperSocket || got.Builtin.DataDir != "/data" ||
		got.Builtin.Ranges[0][0].Gateway.String() != "10.1.0.254" || got.Builtin.Routes[0].Dst.String() != "0.0.0.0/0" {
		t.Errorf("round trip lost fields:\n%s\n%+v", b, got)
	}
	if err := got.Validate(); err != nil {
		t.Errorf("Validate of a loaded configuration: %v", err)
	}
}

func TestValidateNeedsBuiltinSection(t *testing.T) {
	c := &NetConf{PluginConf: types.PluginConf{Name: "n", IPAM: types.IPAM{Type: BuiltinIPAM}}, MTU: DefaultMTU}
	if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "ipam") {
		t.Fatalf("Validate without the built-in section = %v", err)
	}
}

func TestParseLevel(t *testing.T) {
	tests := []struct {
		in      string
		def     slog.Level
		want    slog.Level
		wantErr bool
	}{
		{in: "", def: slog.LevelWarn, want: slog.LevelWarn},
		{in: "", def: slog.LevelInfo, want: slog.LevelInfo},
		{in: "DEBUG", def: slog.LevelWarn, want: slog.LevelDebug},
		{in: "info", def: slog.LevelWarn, want: slog.LevelInfo},
		{in: "warning", def: slog.LevelInfo, want: slog.LevelWarn},
		{in: "error", def: slog.LevelInfo, want: slog.LevelError},
		{in: "loud", wantErr: true},
	}
	for _, tc := range tests {
		got, err := ParseLevel(tc.in, tc.def)
		if (err != nil) != tc.wantErr || (!tc.wantErr && got != tc.want) {
			t.Errorf("ParseLevel(%q, %v) = %v, %v; want %v (error %v)", tc.in, tc.def, got, err, tc.want, tc.wantErr)
		}
	}
}

// TestMarshalMatchesLoad: Load's output marshals to bytes Load accepts and
// reads back equal, external IPAM and DNS included.
func TestMarshalMatchesLoad(t *testing.T) {
	for _, in := range []string{
		`{"cniVersion": "1.1.0", "name": "n", "type": "vethroute", "dns": {"nameservers": ["10.1.0.53"]}, "ipam": {"type": "host-local"}}`,
		`{"cniVersion": "1.0.0", "name": "n", "type": "vethroute", "hostRoutes": [{"dst": "10.0.0.0/24", "gw": "172.16.0.2"}], "ipam": {"type": "vethroute", "ranges": [[{"subnet": "fd00::/64"}]]}}`,
	} {
		first, err := Load([]byte(in), "")
		if err != nil {
			t.Fatal(err)
		}
		b, err := json.Marshal(first)
		if err != nil {
			t.Fatal(err)
		}
		again, err := Load(b, "")
		if err != nil || !reflect.DeepEqual(first, again) {
			t.Errorf("Load(Marshal(Load(x))) differs (%v):\n%s\n%+v\n%+v", err, b, first, again)
		}
	}
}
