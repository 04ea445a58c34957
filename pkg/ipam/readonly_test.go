package ipam

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/plugins/plugins/ipam/host-local/backend/allocator"
)

// TestMain lets the test binary run a test body as a child process in a
// mount namespace of its own (unshare -m), where it may mount and remount
// file systems without touching the machine's.
func TestMain(m *testing.M) {
	if name := os.Getenv(childEnv); name != "" {
		body, ok := childBodies[name]
		if !ok {
			fmt.Printf("no child body %q\n", name)
			os.Exit(2)
		}
		if err := body(os.Getenv(childDirEnv)); err != nil {
			fmt.Print(err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

const (
	childEnv    = "VETHROUTE_IPAM_TEST_CHILD"
	childDirEnv = "VETHROUTE_IPAM_TEST_DIR"
)

var childBodies = map[string]func(dir string) error{
	"readonly": readOnlyStoreChild,
}

// readOnlyStoreChild fills a store on a tmpfs, remounts it read-only and
// checks what still works: reading (CHECK's Get, STATUS's Usage and
// Exhausted, List) works, and a write fails with EROFS (which the plugin
// reports as an I/O failure, code 5) naming the store's path.
func readOnlyStoreChild(dir string) error {
	if err := syscall.Mount("none", "/", "", syscall.MS_REC|syscall.MS_PRIVATE, ""); err != nil {
		return fmt.Errorf("make mounts private: %w", err)
	}
	if err := syscall.Mount("tmpfs", dir, "tmpfs", 0, "size=1m"); err != nil {
		return fmt.Errorf("mount tmpfs: %w", err)
	}
	ranges := allocator.RangeSet{{Subnet: types.IPNet{IP: net.IPv4(10, 9, 0, 0).To4(), Mask: net.CIDRMask(29, 32)}}}
	if err := ranges.Canonicalize(); err != nil {
		return err
	}
	p, err := Open(dir, "ro", []allocator.RangeSet{ranges})
	if err != nil {
		return err
	}
	live := Owner{ContainerID: "c1", IfName: "eth0"}
	leases, err := p.Allocate(live, nil)
	p.Close()
	if err != nil {
		return err
	}
	if err := syscall.Mount("", dir, "", syscall.MS_REMOUNT|syscall.MS_RDONLY, ""); err != nil {
		return fmt.Errorf("remount read-only: %w", err)
	}
	p, err = Open(dir, "ro", []allocator.RangeSet{ranges})
	if err != nil {
		return fmt.Errorf("open a read-only store: %w", err)
	}
	defer p.Close()
	held, err := p.Get(live)
	if err != nil || len(held) != 1 || !held[0].Equal(leases[0].Address.IP) {
		return fmt.Errorf("Get on a read-only store = %v, %v; want %s", held, err, leases[0].Address.IP)
	}
	if _, _, err := p.Usage(); err != nil {
		return fmt.Errorf("Usage on a read-only store: %w", err)
	}
	if _, err := p.List(); err != nil {
		return fmt.Errorf("List on a read-only store: %w", err)
	}
	_, err = p.Release(live)
	if !errors.Is(err, syscall.EROFS) {
		return fmt.Errorf("Release on a read-only store = %v, want EROFS", err)
	}
	if _, err := p.Allocate(Owner{ContainerID: "c2", IfName: "eth0"}, nil); !errors.Is(err, syscall.EROFS) {
		return fmt.Errorf("Allocate on a read-only store = %v, want EROFS", err)
	}
	return nil
}

// TestReadOnlyStore is issue 14's finding 8 (store part): a read-only
// dataDir served no verb at all, since the lock was opened for writing.
func TestReadOnlyStore(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: mounts a tmpfs in a mount namespace of its own")
	}
	dir := t.TempDir()
	cmd := exec.Command("unshare", "-m", os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"=readonly", childDirEnv+"="+filepath.Clean(dir))
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
}
