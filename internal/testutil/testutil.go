package testutil

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/containernetworking/plugins/pkg/testutils"
)

// RequireRoot skips the test when it cannot create network namespaces.
// Integration tests call it first so that `go test ./...` as an ordinary
// user reports a skip with the reason instead of a confusing failure.
func RequireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: this test creates network namespaces and veth pairs (run `make test` as root)")
	}
}

// NewNS creates a fresh network namespace (bind-mounted under /var/run/netns,
// so `ip netns exec` and `nsenter --net=` can reach it) and registers its
// removal with t.Cleanup, so a failing test leaves nothing behind. Deleting
// the namespace also deletes every veth end inside it.
func NewNS(t testing.TB) ns.NetNS {
	t.Helper()
	RequireRoot(t)
	netns, err := testutils.NewNS()
	if err != nil {
		t.Fatalf("create network namespace: %v", err)
	}
	t.Cleanup(func() {
		_ = netns.Close()
		if err := testutils.UnmountNS(netns); err != nil {
			t.Errorf("remove network namespace %s: %v", netns.Path(), err)
		}
	})
	return netns
}

// NSName returns the name under which `ip netns` knows a namespace made by NewNS.
func NSName(netns ns.NetNS) string {
	return filepath.Base(netns.Path())
}

// RunIn runs a command inside a network namespace with nsenter and returns
// its combined output. It is bounded by timeout so a hung ping or daemon
// cannot stall the suite.
func RunIn(t testing.TB, netns ns.NetNS, timeout time.Duration, name string, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	full := append([]string{"--net=" + netns.Path(), name}, args...)
	out, err := exec.CommandContext(ctx, "nsenter", full...).CombinedOutput()
	return string(out), err
}

// MustRunIn is RunIn that fails the test on error.
func MustRunIn(t testing.TB, netns ns.NetNS, name string, args ...string) string {
	t.Helper()
	out, err := RunIn(t, netns, 30*time.Second, name, args...)
	if err != nil {
		t.Fatalf("%s %s in %s: %v\n%s", name, strings.Join(args, " "), netns.Path(), err, out)
	}
	return out
}

// Ping sends count pings from inside netns to dst and returns the output.
// It only ever targets addresses inside namespaces the test created.
func Ping(t testing.TB, netns ns.NetNS, dst string, count int) (string, error) {
	t.Helper()
	args := []string{"-c", strconv.Itoa(count), "-W", "2", "-i", "0.2", dst}
	if strings.Contains(dst, ":") {
		args = append([]string{"-6"}, args...)
	}
	return RunIn(t, netns, time.Duration(count*3+5)*time.Second, "ping", args...)
}
