package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/cni/pkg/version"
	"github.com/vethroute/vethroute/pkg/ipam"
	"github.com/vethroute/vethroute/pkg/ipam/external"
	"github.com/vethroute/vethroute/pkg/netconf"
	"github.com/vethroute/vethroute/pkg/routing"
)

// network is a configuration of network "n" with the given ipam section.
func network(ipam string) []byte {
	return []byte(`{"cniVersion": "1.1.0", "name": "n", "type": "vethroute", "dns": {"nameservers": ["10.1.0.53"]}, "ipam": ` + ipam + `}`)
}

const builtinIPAM = `{"type": "vethroute", "ranges": [[{"subnet": "10.1.0.0/24"}]], "dataDir": "/tmp/x"}`

// TestResultEveryVersion converts the ADD result to each supported version
// and checks what chained plugins read from it.
func TestResultEveryVersion(t *testing.T) {
	c, err := netconf.Load(network(builtinIPAM), "")
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
	log, closer := newLogger(&netconf.NetConf{LogFile: path, LogLevel: "debug"})
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
		log, closer := newLogger(&netconf.NetConf{LogFile: path, LogLevel: "info"})
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

// TestAllocatorFor: ipam.type "vethroute" is the in-process pool with the
// attachment as owner; any other type is exec'd.
func TestAllocatorFor(t *testing.T) {
	args := &skel.CmdArgs{ContainerID: "c1", IfName: "eth0"}
	tests := []struct {
		name, ipam string
		builtin    bool
	}{
		{"built-in", builtinIPAM, true},
		{"external", `{"type": "host-local", "ranges": [[{"subnet": "10.1.0.0/24"}]]}`, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, err := netconf.Load(network(tc.ipam), "")
			if err != nil {
				t.Fatal(err)
			}
			switch a := allocatorFor(c, args).(type) {
			case *ipam.Builtin:
				if !tc.builtin || a.Owner != (ipam.Owner{ContainerID: "c1", IfName: "eth0"}) || a.Network != "n" {
					t.Errorf("allocatorFor = %+v", a)
				}
			case *external.Plugin:
				if tc.builtin || a.Type != "host-local" {
					t.Errorf("allocatorFor = %+v", a)
				}
			default:
				t.Errorf("allocatorFor = %T", a)
			}
		})
	}
}
