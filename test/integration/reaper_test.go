package integration

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vethroute/vethroute/internal/testutil"
)

// TestDelThroughReaper runs DEL and GC with reaperSocket set: through the real
// `vethroute-agent reaper` in the node (with only CAP_NET_ADMIN), and with the socket missing (agent
// down), when the plugin must delete the host veth itself. Either way DEL
// leaves the node clean, and a container re-added right after DEL gets its
// interface back (the old one is gone from the namespace when DEL returns).
func TestDelThroughReaper(t *testing.T) {
	testutil.RequireRoot(t)
	tests := []struct {
		name      string
		runReaper bool
	}{
		{name: "agent serving", runReaper: true},
		{name: "agent down", runReaper: false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			node := testutil.NewNode(t)
			socket := filepath.Join(t.TempDir(), "run", "reaper.sock")
			var reaper *testutil.Daemon
			if tc.runReaper {
				// With CAP_NET_ADMIN alone, as the DaemonSet runs the agent.
				reaper = testutil.StartDaemon(t, node.NS, "setpriv", "--bounding-set=-all,+net_admin",
					testutil.AgentBinary(t), "reaper", "--socket="+socket, "--log-level=debug")
				waitForSocket(t, socket, reaper)
			}
			l := node.ConfList(t, conflist("1.1.0", v4Ranges, v4Routes, fmt.Sprintf(`, "reaperSocket": %q, "logLevel": "debug"`, socket)))
			cont := testutil.NewNS(t)
			rt := testutil.RuntimeConf("reaped", cont.Path(), "eth0")
			for round := range 3 {
				mustAdd(t, node, l, rt)
				if err := node.Del(l, rt); err != nil {
					t.Fatalf("DEL round %d: %v", round, err)
				}
				// No waiting: DEL returned, so the node must already be clean.
				node.RequireClean(t, network)
				if out, err := testutil.RunIn(t, cont, 5*time.Second, "ip", "-o", "link", "show", "eth0"); err == nil {
					t.Fatalf("container still has eth0 after DEL round %d:\n%s", round, out)
				}
			}
			// GC hands the stale host veths to the reaper the same way.
			for i := range 2 {
				mustAdd(t, node, l, testutil.RuntimeConf(fmt.Sprintf("stale%d", i), testutil.NewNS(t).Path(), "eth0"))
			}
			node.PluginGC(t, l, nil)
			node.RequireClean(t, network)
			if reaper != nil {
				// The daemon's log shows it served the requests: the test
				// would pass through the fallback too, so prove the path.
				if _, err := reaper.Stop(10 * time.Second); err != nil {
					t.Fatalf("stop reaper: %v", err)
				}
				log := reaper.Log()
				if n := strings.Count(log, "msg=deleted"); n != 5 {
					t.Errorf("reaper deleted %d links, want the 3 of the DELs and the 2 of GC:\n%s", n, log)
				}
				if strings.Contains(log, "refused") || strings.Contains(log, "failed") {
					t.Errorf("reaper log reports problems:\n%s", log)
				}
			}
		})
	}
}

// waitForSocket waits (bounded) until the daemon has created its socket.
func waitForSocket(t *testing.T, socket string, d *testutil.Daemon) {
	t.Helper()
	for range 100 {
		if _, err := os.Stat(socket); err == nil {
			return
		}
		if d.Exited() {
			t.Fatalf("reaper exited before listening:\n%s", d.Log())
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("reaper did not create %s within 5s:\n%s", socket, d.Log())
}
