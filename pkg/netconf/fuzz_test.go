package netconf

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"testing"

	"github.com/containernetworking/cni/pkg/types"
)

// FuzzLoadConf feeds arbitrary stdin and CNI_ARGS to the configuration
// parser. It must never panic; it must either reject the input with a CNI
// error of a configuration code (6 or 7) and a message, or return a
// configuration that satisfies every promise the rest of the plugin relies
// on; and it must be deterministic.
func FuzzLoadConf(f *testing.F) {
	// The example configuration of the repository is the first seed.
	if b, err := os.ReadFile(filepath.Join("..", "..", "conf", "10-vethroute.conflist")); err == nil {
		f.Add(b, "")
	}
	for _, s := range []struct{ stdin, args string }{
		{`{"cniVersion":"1.1.0","name":"n","type":"vethroute","ipam":{"type":"vethroute","ranges":[[{"subnet":"10.1.0.0/24"}]]}}`, ""},
		{`{"cniVersion":"1.1.0","name":"n","type":"vethroute","ipam":{"type":"vethroute","ranges":[[{"subnet":"10.1.0.0/24"}]]}}`, "IgnoreUnknown=1;IP=10.1.0.9"},
		{`{"cniVersion":"1.1.0","name":"n","type":"vethroute","mtu":1400,"ipam":{"type":"vethroute","ranges":[[{"subnet":"10.1.0.0/24","gateway":"10.1.0.1"}],[{"subnet":"fd00::/64"}]],"routes":[{"dst":"0.0.0.0/0"},{"dst":"::/0"}],"dataDir":"/run/x"}}`, ""},
		{`{"cniVersion":"1.1.0","name":"n","type":"vethroute","hostRoutes":[{"dst":"10.0.0.0/24","gw":"172.16.0.2"}],"ipam":{"type":"host-local"}}`, ""},
		{`{"cniVersion":"1.1.0","name":"n","type":"vethroute","mtu":1000,"ipam":{"type":"vethroute","ranges":[[{"subnet":"fd00::/64"}]]}}`, ""},
		{`{"cniVersion":"1.1.0","name":"n","type":"vethroute","hostRoutes":[{"dst":"10.0.0.0/99","gw":"1.2.3.4"}],"ipam":{"type":"vethroute"}}`, ""},
		{`{"cniVersion":"1.1.0","name":"n","type":"vethroute","runtimeConfig":{"ips":["10.1.0.5/24"]},"ipam":{"type":"vethroute","ranges":[[{"subnet":"10.1.0.0/24"}]]}}`, ""},
		{`{"cniVersion":"1.1.0","name":"n","type":"vethroute","prevResult":{"cniVersion":"1.1.0","ips":[{"address":"10.1.0.2/24","gateway":"10.1.0.1"}]},"ipam":{"type":"vethroute","ranges":[[{"subnet":"10.1.0.0/24"}]]}}`, ""},
		{`{"name":"n","ipam":{"type":"vethroute","ranges":[[{"subnet":"10.1.0.0/24","rangeStart":"10.1.0.9","rangeEnd":"10.1.0.3"}]]}}`, ""},
		{`{"name":"n","logLevel":"DEBUG","logFile":"/tmp/x","ipMasq":true,"ipMasqBackend":"nftables","ipam":{"type":"x"}}`, ""},
		{`{"name":"n","cni.dev/valid-attachments":[{"containerID":"c","ifname":"eth0"}],"ipam":{"type":"x"}}`, ""},
		{`{"name":"n","mtu":"1500"}`, ""},
		{`[]`, ""},
		{``, ""},
		{`{"name":"n","ipam":{"type":"vethroute","ranges":[[{"subnet":"10.1.0.0/24"}]],"dataDir":"rel"}}`, "IP=10.1.0.300"},
	} {
		f.Add([]byte(s.stdin), s.args)
	}
	f.Fuzz(func(t *testing.T, stdin []byte, envArgs string) {
		conf, err := Load(stdin, envArgs)
		if err != nil {
			var te *types.Error
			if !errors.As(err, &te) {
				t.Fatalf("Load returned %T %v, not a CNI error", err, err)
			}
			if te.Code != types.ErrDecodingFailure && te.Code != types.ErrInvalidNetworkConfig {
				t.Fatalf("Load returned code %d (%s), not 6 or 7", te.Code, te.Msg)
			}
			if te.Msg == "" {
				t.Fatal("Load returned an error without a message")
			}
			return
		}
		if conf.Name == "" || len(conf.Name) > MaxNetworkNameLen {
			t.Fatalf("accepted network name %q", conf.Name)
		}
		if conf.MTU < MinMTU || conf.MTU > MaxMTU {
			t.Fatalf("accepted MTU %d", conf.MTU)
		}
		for i, r := range conf.HostRoutes {
			if r == nil || r.Dst.IP == nil || r.GW == nil || (r.Dst.IP.To4() == nil) != (r.GW.To4() == nil) || !r.Dst.IP.Mask(r.Dst.Mask).Equal(r.Dst.IP) {
				t.Fatalf("accepted hostRoutes[%d] %+v", i, r)
			}
		}
		if conf.LogFile != "" && !filepath.IsAbs(conf.LogFile) {
			t.Fatalf("accepted relative logFile %q", conf.LogFile)
		}
		if _, err := ParseLevel(conf.LogLevel, DefaultLogLevel); err != nil {
			t.Fatalf("accepted logLevel %q", conf.LogLevel)
		}
		if (conf.IPAM.Type == BuiltinIPAM) != (conf.Builtin != nil) {
			t.Fatalf("ipam.type %q but builtin config %v", conf.IPAM.Type, conf.Builtin)
		}
		if b := conf.Builtin; b != nil {
			if !filepath.IsAbs(b.DataDir) || len(b.Ranges) == 0 {
				t.Fatalf("accepted dataDir %q with %d range sets", b.DataDir, len(b.Ranges))
			}
			for i, rs := range b.Ranges {
				for j, r := range rs {
					// What the allocator relies on: a canonical range whose
					// bounds are in it.
					if r.RangeStart == nil || r.RangeEnd == nil || !r.Contains(r.RangeStart) || !r.Contains(r.RangeEnd) {
						t.Fatalf("accepted range %d/%d %+v", i, j, r)
					}
					if r.RangeStart.To4() == nil && conf.MTU < MinMTU6 {
						t.Fatalf("accepted MTU %d for IPv6 range %v", conf.MTU, r)
					}
				}
			}
			for i, r := range b.Routes {
				if r == nil || r.Dst.IP == nil {
					t.Fatalf("accepted ipam.routes[%d] %+v", i, r)
				}
			}
		}
		again, err := Load(stdin, envArgs)
		if err != nil || !reflect.DeepEqual(conf, again) {
			t.Fatalf("Load is not deterministic: %+v then %+v, %v", conf, again, err)
		}
	})
}
