package agent

import (
	"flag"
	"strings"
	"testing"
)

func TestOptionsValidate(t *testing.T) {
	env := map[string]string{"NODE_NAME": "from-env"}
	getenv := func(k string) string { return env[k] }
	tests := []struct {
		name     string
		args     []string
		wantErr  string
		wantNode string
	}{
		{name: "defaults with NODE_NAME", args: []string{"--cluster-cidrs=10.244.0.0/16"}, wantNode: "from-env"},
		{name: "cluster CIDRs are required", wantErr: "--cluster-cidrs is required"},
		{name: "cluster CIDR of everything", args: []string{"--cluster-cidrs=0.0.0.0/0"}, wantErr: "--cluster-cidrs"},
		{name: "IPv4-mapped cluster CIDR", args: []string{"--cluster-cidrs=::ffff:10.0.0.0/104"}, wantErr: "--cluster-cidrs"},
		{name: "flag wins over env", args: []string{"--node-name=n1"}, wantNode: "n1"},
		{name: "plugin's protocol refused", args: []string{"--route-protocol=86"}, wantErr: "--route-protocol"},
		{name: "kernel protocol refused", args: []string{"--route-protocol=2"}, wantErr: "--route-protocol"},
		{name: "dhcp's protocol refused", args: []string{"--route-protocol=16"}, wantErr: "--route-protocol"},
		{name: "bgp's protocol refused", args: []string{"--route-protocol=186"}, wantErr: "--route-protocol"},
		{name: "babel's protocol refused", args: []string{"--route-protocol=42"}, wantErr: "--route-protocol"},
		{name: "a free protocol", args: []string{"--route-protocol=200"}, wantNode: "from-env"},
		{name: "relative conf dir", args: []string{"--cni-conf-dir=etc"}, wantErr: "--cni-conf-dir"},
		{name: "conf name without .conflist", args: []string{"--cni-conf-name=10-vethroute.conf"}, wantErr: "--cni-conf-name"},
		{name: "bad network name", args: []string{"--network-name=a:b"}, wantErr: "--network-name"},
		{name: "bad cluster CIDR", args: []string{"--cluster-cidrs=10.0.0.0/8,nope"}, wantErr: "--cluster-cidrs"},
		{name: "cluster CIDRs", args: []string{"--cluster-cidrs=10.0.0.0/8, fd00::/48"}, wantNode: "from-env"},
		{name: "metrics on an IPv6 node address", args: []string{"--metrics-addr=fd00::1:9387"}, wantNode: "from-env"},
		{name: "metrics address without port", args: []string{"--metrics-addr=10.0.0.1"}, wantErr: "--metrics-addr"},
		{name: "resync too short", args: []string{"--resync-period=10ms"}, wantErr: "--resync-period"},
		{name: "bad log level", args: []string{"--log-level=loud"}, wantErr: "--log-level"},
		{name: "bad log format", args: []string{"--log-format=xml"}, wantErr: "--log-format"},
		{name: "bad mtu", args: []string{"--mtu=20"}, wantErr: "--mtu"},
		{name: "pinned cni version", args: []string{"--cni-version=1.0.0"}, wantNode: "from-env"},
		{name: "unknown cni version", args: []string{"--cni-version=1.2"}, wantErr: "--cni-version"},
		{name: "reaper socket", args: []string{"--reaper-socket=/run/vethroute/reaper.sock"}, wantNode: "from-env"},
		{name: "no-masquerade CIDRs", args: []string{"--no-masquerade-cidrs=172.18.0.0/16, fc00:f853:ccd:e793::/64"}, wantNode: "from-env"},
		{name: "no-masquerade default route", args: []string{"--no-masquerade-cidrs=0.0.0.0/0"}, wantErr: "--masquerade=false"},
		{name: "no-masquerade garbage", args: []string{"--no-masquerade-cidrs=10.0.0.0/8,x"}, wantErr: "--no-masquerade-cidrs"},
		{name: "chain of two", args: []string{"--chain=portmap, bandwidth"}, wantNode: "from-env"},
		{name: "empty chain", args: []string{"--chain="}, wantNode: "from-env"},
		{name: "chain with a path", args: []string{"--chain=../../tmp/x"}, wantErr: "--chain"},
		{name: "chain repeats a plugin", args: []string{"--chain=portmap,portmap"}, wantErr: "--chain"},
		{name: "chain repeats vethroute", args: []string{"--chain=vethroute"}, wantErr: "--chain"},
		{name: "relative reaper socket", args: []string{"--reaper-socket=run/reaper.sock"}, wantErr: "--reaper-socket"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var o Options
			fs := flag.NewFlagSet("test", flag.ContinueOnError)
			o.AddFlags(fs)
			args := tc.args
			if !strings.Contains(strings.Join(args, " "), "--cluster-cidrs") && !strings.Contains(tc.name, "required") {
				args = append([]string{"--cluster-cidrs=10.244.0.0/16"}, args...)
			}
			if err := fs.Parse(args); err != nil {
				t.Fatal(err)
			}
			err := o.Validate(getenv)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("Validate() = %v, want an error about %s", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if o.NodeName != tc.wantNode {
				t.Errorf("node name %q, want %q", o.NodeName, tc.wantNode)
			}
		})
	}
}
