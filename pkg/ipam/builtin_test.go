package ipam

import (
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/plugins/plugins/ipam/host-local/backend/allocator"
)

// TestBuiltinLifecycle drives the Allocator of the built-in pool through
// every verb on a range of two addresses.
func TestBuiltinLifecycle(t *testing.T) {
	conf := &allocator.IPAMConfig{DataDir: t.TempDir(), Ranges: []allocator.RangeSet{rangeSet(t, "10.9.0.0/29 10.9.0.2 10.9.0.3")}}
	a := &Builtin{Config: conf, Network: "n", Owner: Owner{ContainerID: "a", IfName: "eth0"}}
	b := &Builtin{Config: conf, Network: "n", Owner: Owner{ContainerID: "b", IfName: "eth0"}}

	leases, _, err := a.Allocate()
	if err != nil || len(leases) != 1 {
		t.Fatalf("Allocate = %v, %v", leases, err)
	}
	if err := a.Status(); err != nil {
		t.Fatalf("Status with a free address = %v", err)
	}
	if _, _, err := b.Allocate(); err != nil {
		t.Fatal(err)
	}
	var te *types.Error
	if err := a.Status(); err == nil || !errors.As(err, &te) || te.Code != types.ErrPluginNotAvailable || !strings.Contains(te.Msg, "pool exhausted") {
		t.Fatalf("Status on a full pool = %v, want code 50 naming the exhausted pool", err)
	}
	held, err := a.Held()
	if err != nil || len(held) != 1 || held[0].String() != leases[0].Address.String() {
		t.Fatalf("Held = %v, %v; want %s", held, err, leases[0].Address.String())
	}
	if err := a.Check([]net.IP{leases[0].Address.IP}); err != nil {
		t.Fatalf("Check of the held address = %v", err)
	}
	if err := a.Check([]net.IP{net.ParseIP("10.9.0.5")}); err == nil {
		t.Fatal("Check of an address the attachment does not hold succeeded")
	}
	n, err := a.Collect(func(o Owner) bool { return o.ContainerID == "a" })
	if err != nil || n != 1 {
		t.Fatalf("Collect keeping a = %d, %v; want b's reservation released", n, err)
	}
	if err := a.Release(); err != nil {
		t.Fatal(err)
	}
	if held, err := a.Held(); err != nil || len(held) != 0 {
		t.Fatalf("Held after Release = %v, %v", held, err)
	}
	if err := a.Release(); err != nil {
		t.Fatalf("second Release = %v; releasing nothing is success", err)
	}
}

// TestBuiltinDataDirBelowFile: a dataDir under a regular file is the
// configuration's mistake (code 7 naming ipam.dataDir), and STATUS says the
// store is unusable (code 50).
func TestBuiltinDataDirBelowFile(t *testing.T) {
	file := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	a := &Builtin{Config: &allocator.IPAMConfig{DataDir: filepath.Join(file, "store"), Ranges: []allocator.RangeSet{rangeSet(t, "10.9.0.0/29")}}, Network: "n", Owner: Owner{ContainerID: "a", IfName: "eth0"}}
	var te *types.Error
	if _, _, err := a.Allocate(); !errors.As(err, &te) || te.Code != types.ErrInvalidNetworkConfig || !strings.Contains(te.Msg, "ipam.dataDir") {
		t.Fatalf("Allocate = %v, want code 7 naming ipam.dataDir", err)
	}
	if err := a.Status(); !errors.As(err, &te) || te.Code != types.ErrPluginNotAvailable {
		t.Fatalf("Status = %v, want code 50", err)
	}
}
