package agent

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"

	"github.com/vethroute/vethroute/internal/testutil"
)

// TestIdleConnectionFlood is issue 14's finding 6 against the real agent
// process: 10 000 idle connections to its metrics address must neither grow
// it without bound nor keep /healthz from answering. The agent needs no API
// server for this (its kubeconfig points nowhere): the HTTP servers start
// before the informers sync.
func TestIdleConnectionFlood(t *testing.T) {
	testutil.RequireRoot(t)
	node := testutil.NewNS(t)
	testutil.MustRunIn(t, node, "ip", "link", "set", "lo", "up")
	// A listen backlog that holds every connection, so that they all
	// complete and wait on the agent, as they would against the old
	// uncapped server; the backlog is the kernel's memory, not the agent's.
	testutil.MustRunIn(t, node, "sysctl", "-qw", "net.core.somaxconn=16384")
	dir := t.TempDir()
	kubeconfig := filepath.Join(dir, "kubeconfig")
	if err := os.WriteFile(kubeconfig, []byte(`apiVersion: v1
kind: Config
clusters: [{name: none, cluster: {server: "https://127.0.0.1:1"}}]
users: [{name: none, user: {token: none}}]
contexts: [{name: none, context: {cluster: none, user: none}}]
current-context: none
`), 0o600); err != nil {
		t.Fatal(err)
	}
	const health, metrics = "127.0.0.1:9387", "127.0.0.1:9388"
	agent := testutil.StartDaemon(t, node, testutil.AgentBinary(t),
		"--kubeconfig="+kubeconfig, "--node-name=flood", "--cluster-cidrs=10.244.0.0/16",
		"--cni-conf-dir="+filepath.Join(dir, "net.d"), "--ipam-data-dir="+filepath.Join(dir, "ipam"),
		"--health-addr="+health, "--metrics-addr="+metrics)
	client := testutil.HTTPClientIn(node)
	client.Timeout = 5 * time.Second
	healthz := func() error {
		resp, err := client.Get("http://" + health + "/healthz")
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			return fmt.Errorf("status %d", resp.StatusCode)
		}
		return nil
	}
	var err error
	for range 100 {
		if err = healthz(); err == nil {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err != nil {
		t.Fatalf("/healthz before the flood: %v\n%s", err, agent.Log())
	}
	before := rssKiB(t, agent.Pid())

	const idle = 10000
	conns := make([]net.Conn, 0, idle)
	t.Cleanup(func() {
		for _, c := range conns {
			c.Close()
		}
	})
	if err := node.Do(func(ns.NetNS) error {
		for range idle {
			c, err := net.DialTimeout("tcp", metrics, 2*time.Second)
			if err != nil {
				return fmt.Errorf("dial %d: %w", len(conns), err)
			}
			conns = append(conns, c)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	// Let the agent take what it will take of them.
	time.Sleep(time.Second)
	if err := healthz(); err != nil {
		t.Errorf("/healthz with %d idle metrics connections: %v", idle, err)
	}
	after := rssKiB(t, agent.Pid())
	t.Logf("agent RSS %d KiB before, %d KiB with %d idle connections", before, after, idle)
	if grown := after - before; grown > 32<<10 {
		t.Errorf("%d idle connections grew the agent by %d KiB, want at most 32 MiB", idle, grown)
	}
	if agent.Exited() {
		t.Fatalf("agent exited during the flood:\n%s", agent.Log())
	}
}

// rssKiB reads a process's resident set size.
func rssKiB(t *testing.T, pid int) int {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "VmRSS:" {
			n, err := strconv.Atoi(f[1])
			if err != nil {
				t.Fatal(err)
			}
			return n
		}
	}
	t.Fatalf("no VmRSS in /proc/%d/status", pid)
	return 0
}
