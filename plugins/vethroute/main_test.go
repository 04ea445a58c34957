package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/cni/pkg/version"
	"github.com/vethroute/vethroute/pkg/routing"
)

const goodIPAM = `"ipam": {"type": "vethroute", "ranges": [[{"subnet": "10.1.0.0/24"}]], "dataDir": "/tmp/x"}`

func conf(fields string) string {
	if fields != "" {
		fields = ", " + fields
	}
	return `{"cniVersion": "1.1.0", "name": "n", "type": "vethroute"` + fields + `}`
}

func TestLoadConfRejects(t *testing.T) {
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
			_, err := loadConf([]byte(tc.input), "")
			te, ok := err.(*types.Error)
			if !ok {
				t.Fatalf("loadConf error = %v (%T), want a *types.Error", err, err)
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

func TestLoadConfDefaultsAndRequests(t *testing.T) {
	c, err := loadConf([]byte(conf(`"ipam": {"type": "vethroute", "ranges": [[{"subnet": "10.1.0.0/24"}]], "routes": [{"dst": "0.0.0.0/0"}]}, "runtimeConfig": {"ips": ["10.1.0.9/24"]}`)), "IgnoreUnknown=1;IP=10.1.0.7")
	if err != nil {
		t.Fatal(err)
	}
	if c.MTU != defaultMTU || c.builtin.DataDir != defaultDataDir {
		t.Errorf("defaults: mtu %d dataDir %s", c.MTU, c.builtin.DataDir)
	}
	got := []string{}
	for _, ip := range c.builtin.IPArgs {
		got = append(got, ip.String())
	}
	if strings.Join(got, ",") != "10.1.0.7,10.1.0.9" {
		t.Errorf("requested addresses = %v, want CNI_ARGS IP then runtimeConfig ips", got)
	}
	if r := c.builtin.Ranges[0][0]; r.Gateway.String() != "10.1.0.1" || r.RangeEnd.String() != "10.1.0.254" {
		t.Errorf("range defaults: gateway %s end %s", r.Gateway, r.RangeEnd)
	}

	ext, err := loadConf([]byte(conf(`"ipam": {"type": "host-local", "ranges": [[{"subnet": "10.1.0.0/24"}]]}`)), "")
	if err != nil || ext.builtin != nil {
		t.Fatalf("external ipam: builtin=%v err=%v", ext.builtin, err)
	}
}

func TestGCAcceptsBothAttachmentKeys(t *testing.T) {
	c, err := loadConf([]byte(conf(goodIPAM+`, "cni.dev/valid-attachments": [{"containerID": "a", "ifname": "eth0"}], "cni.dev/attachments": [{"containerID": "b", "ifname": "eth1"}]`)), "")
	if err != nil {
		t.Fatal(err)
	}
	if got := c.attachments(); len(got) != 2 || got[0].ContainerID != "a" || got[1].ContainerID != "b" {
		t.Fatalf("attachments = %+v", got)
	}
}

// TestResultEveryVersion converts the ADD result to each supported version
// and checks what chained plugins read from it.
func TestResultEveryVersion(t *testing.T) {
	c, err := loadConf([]byte(conf(`"dns": {"nameservers": ["10.1.0.53"]}, `+goodIPAM)), "")
	if err != nil {
		t.Fatal(err)
	}
	args := &skel.CmdArgs{ContainerID: "c1", IfName: "eth0", Netns: "/var/run/netns/c1"}
	_, v4, _ := net.ParseCIDR("10.1.0.2/24")
	v4.IP = net.ParseIP("10.1.0.2").To4()
	_, v6, _ := net.ParseCIDR("fd00::2/64")
	v6.IP = net.ParseIP("fd00::2")
	_, def, _ := net.ParseCIDR("0.0.0.0/0")
	ifs := &routing.Interfaces{
		Host:      routing.Link{Name: routing.HostVethName("c1", "eth0"), MAC: "02:00:00:00:00:01", MTU: 1500},
		Container: routing.Link{Name: "eth0", MAC: "02:00:00:00:00:02", MTU: 1500},
	}
	addrs := []routing.Address{{IPNet: *v4, Gateway: net.ParseIP("10.1.0.1")}, {IPNet: *v6, Gateway: net.ParseIP("fd00::1")}}
	res := buildResult(c, args, ifs, addrs, []*types.Route{{Dst: *def}})
	if res.Routes[0].GW.String() != "10.1.0.1" {
		t.Errorf("default route gateway = %v, want the range's gateway", res.Routes[0].GW)
	}
	for _, ver := range version.PluginSupports("0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0").SupportedVersions() {
		t.Run(ver, func(t *testing.T) {
			conv, err := res.GetAsVersion(ver)
			if err != nil {
				t.Fatalf("convert: %v", err)
			}
			raw, _ := json.Marshal(conv)
			back, err := version.NewResult(ver, raw)
			if err != nil {
				t.Fatalf("parse back: %v\n%s", err, raw)
			}
			cur, err := current.NewResultFromResult(back)
			if err != nil {
				t.Fatal(err)
			}
			if len(cur.Interfaces) != 2 || cur.Interfaces[0].Sandbox != "" || cur.Interfaces[1].Sandbox != args.Netns {
				t.Errorf("interfaces %s", raw)
			}
			if len(cur.IPs) != 2 || *cur.IPs[0].Interface != 1 || *cur.IPs[1].Interface != 1 {
				t.Errorf("ips %s", raw)
			}
			if len(cur.DNS.Nameservers) != 1 {
				t.Errorf("dns lost: %s", raw)
			}
		})
	}
}

// TestLogFileIsNotFollowed is issue 14's finding 8: a symbolic link
// planted at logFile must not make the plugin (root) append to its target.
func TestLogFileIsNotFollowed(t *testing.T) {
	dir := t.TempDir()
	target := filepath.Join(dir, "shadow")
	if err := os.WriteFile(target, []byte("keep\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "vethroute.log")
	if err := os.Symlink(target, path); err != nil {
		t.Fatal(err)
	}
	log, closer := newLogger(&NetConf{LogFile: path, LogLevel: "debug"})
	log.Info("must not land in the link's target")
	closer.Close()
	if b, _ := os.ReadFile(target); string(b) != "keep\n" {
		t.Fatalf("the log was written through a symlink into %s: %q", target, b)
	}
}

// TestLogFileIsCapped: past maxLogSize the file is rotated to logFile.1.
func TestLogFileIsCapped(t *testing.T) {
	old := maxLogSize
	maxLogSize = 200
	t.Cleanup(func() { maxLogSize = old })
	path := filepath.Join(t.TempDir(), "vethroute.log")
	for i := range 20 {
		log, closer := newLogger(&NetConf{LogFile: path, LogLevel: "info"})
		log.Info("a line of some length to fill the file", "i", i)
		closer.Close()
	}
	for _, p := range []string{path, path + ".1"} {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		// One line may land after the check: at most one line over.
		if fi.Size() > maxLogSize+200 {
			t.Errorf("%s is %d bytes, cap %d", p, fi.Size(), maxLogSize)
		}
	}
}

// TestIOErrorsAreCode5: a file system that takes no write is an I/O failure
// (code 5), not 999.
func TestIOErrorsAreCode5(t *testing.T) {
	for _, errno := range []syscall.Errno{syscall.EROFS, syscall.ENOSPC, syscall.EDQUOT, syscall.EIO} {
		err := cniError(fmt.Errorf("claim 10.0.0.2: %w", &os.PathError{Op: "symlink", Path: "/var/lib/cni/vethroute/x", Err: errno}))
		var te *types.Error
		if !errors.As(err, &te) || te.Code != types.ErrIOFailure {
			t.Errorf("%v: got %v, want code %d", errno, err, types.ErrIOFailure)
		}
	}
}
