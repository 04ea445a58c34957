package testutil

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"sync"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/containernetworking/plugins/pkg/testutils"
	"golang.org/x/sys/unix"
)

// netnsRunDir is where `ip netns` looks for named namespaces.
const netnsRunDir = "/var/run/netns"

// CreateNamedNS creates a network namespace bind-mounted at
// /var/run/netns/<name>, without a testing.TB: programs such as the
// benchmark runner create thousands and name them with their own prefix, so
// that leftovers of a killed run can be told from other tests' namespaces.
// The caller removes it with RemoveNamedNS.
func CreateNamedNS(name string) (ns.NetNS, error) {
	if err := os.MkdirAll(netnsRunDir, 0o755); err != nil {
		return nil, fmt.Errorf("create %s: %w", netnsRunDir, err)
	}
	path := filepath.Join(netnsRunDir, name)
	f, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_RDONLY, 0o444)
	if err != nil {
		return nil, fmt.Errorf("create mount point %s: %w", path, err)
	}
	f.Close()

	var wg sync.WaitGroup
	var mountErr error
	wg.Add(1)
	go func() {
		defer wg.Done()
		// The thread is never unlocked, so the runtime ends it with the
		// goroutine instead of reusing a thread left in the new namespace.
		runtime.LockOSThread()
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			mountErr = fmt.Errorf("unshare network namespace: %w", err)
			return
		}
		self := fmt.Sprintf("/proc/%d/task/%d/ns/net", os.Getpid(), unix.Gettid())
		if err := unix.Mount(self, path, "none", unix.MS_BIND, ""); err != nil {
			mountErr = fmt.Errorf("bind mount network namespace at %s: %w", path, err)
		}
	}()
	wg.Wait()
	if mountErr != nil {
		_ = os.Remove(path)
		return nil, mountErr
	}
	netns, err := ns.GetNS(path)
	if err != nil {
		_ = unix.Unmount(path, unix.MNT_DETACH)
		_ = os.Remove(path)
		return nil, fmt.Errorf("open network namespace %s: %w", path, err)
	}
	return netns, nil
}

// RemoveNamedNS closes and unmounts a namespace made by CreateNamedNS; the
// kernel deletes it, and every interface in it, once nothing holds it.
func RemoveNamedNS(netns ns.NetNS) error {
	_ = netns.Close()
	return testutils.UnmountNS(netns)
}
