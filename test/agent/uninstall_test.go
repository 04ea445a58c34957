package agent

import (
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"

	"github.com/vethroute/vethroute/internal/testutil"
)

// uninstallNode is a node namespace holding everything vethroute puts on
// a node, plus things of others that uninstall must leave alone.
type uninstallNode struct {
	ns                                  ns.NetNS
	confDir, binDir, pluginDir, dataDir string
	socket                              string
}

func newUninstallNode(t *testing.T) *uninstallNode {
	t.Helper()
	n := &uninstallNode{ns: testutil.NewNS(t), confDir: t.TempDir(), binDir: t.TempDir(), pluginDir: t.TempDir(), dataDir: filepath.Join(t.TempDir(), "vethroute")}
	n.socket = filepath.Join(t.TempDir(), "reaper.sock")
	write := func(path, data string) {
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(data), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	write(filepath.Join(n.confDir, "10-vethroute.conflist"), "{}")
	write(filepath.Join(n.confDir, "20-other.conflist"), "{}")
	for _, p := range []string{"vethroute", "portmap", "bandwidth"} {
		write(filepath.Join(n.pluginDir, p), "image's "+p)
	}
	write(filepath.Join(n.binDir, "vethroute"), "image's vethroute")
	write(filepath.Join(n.binDir, "portmap"), "image's portmap")
	// Someone else's bandwidth, installed over vethroute's copy.
	write(filepath.Join(n.binDir, "bandwidth"), "another bandwidth")
	write(filepath.Join(n.binDir, "loopback"), "loopback")
	write(filepath.Join(n.dataDir, "pods", "lock"), "")

	run := func(args ...string) { testutil.MustRunIn(t, n.ns, args[0], args[1:]...) }
	run("ip", "link", "add", "uplink0", "type", "bridge")
	run("ip", "addr", "add", "172.30.0.1/24", "dev", "uplink0")
	run("ip", "link", "set", "uplink0", "up")
	run("ip", "route", "add", "10.9.0.0/24", "via", "172.30.0.2", "proto", "86")
	run("ip", "route", "add", "10.8.0.0/24", "via", "172.30.0.2", "proto", "87")
	run("ip", "route", "add", "10.7.0.0/24", "via", "172.30.0.2", "proto", "static")
	run("nft", "add", "table", "inet", "vethroute-agent")
	run("nft", "add", "table", "inet", "vethroute-netpol")
	run("nft", "add", "table", "inet", "someone-else")
	return n
}

func (n *uninstallNode) uninstall(t *testing.T, extra ...string) (string, error) {
	t.Helper()
	args := append([]string{"uninstall",
		"--cni-conf-dir=" + n.confDir, "--cni-bin-dir=" + n.binDir, "--from=" + n.pluginDir,
		"--ipam-data-dir=" + n.dataDir, "--reaper-socket=" + n.socket}, extra...)
	return testutil.RunIn(t, n.ns, time.Minute, testutil.AgentBinary(t), args...)
}

// state lists what the node holds, for a before/after comparison.
func (n *uninstallNode) state(t *testing.T) string {
	t.Helper()
	var b strings.Builder
	for _, dir := range []string{n.confDir, n.binDir} {
		entries, _ := os.ReadDir(dir)
		for _, e := range entries {
			b.WriteString("file " + e.Name() + "\n")
		}
	}
	if _, err := os.Stat(n.dataDir); err == nil {
		b.WriteString("dataDir\n")
	}
	b.WriteString(testutil.MustRunIn(t, n.ns, "ip", "route", "show"))
	b.WriteString(testutil.MustRunIn(t, n.ns, "nft", "list", "tables"))
	b.WriteString(testutil.MustRunIn(t, n.ns, "ip", "-o", "link", "show", "group", "30322"))
	return b.String()
}

// TestUninstall is issue 17's uninstall: the node loses vethroute's
// conflist, binaries, routes (proto 86 and 87) and nftables tables, and
// keeps everyone else's; it refuses while pods use vethroute or an agent
// serves the reaper.
func TestUninstall(t *testing.T) {
	testutil.RequireRoot(t)

	t.Run("refuses while a pod's veth exists", func(t *testing.T) {
		n := newUninstallNode(t)
		testutil.MustRunIn(t, n.ns, "ip", "link", "add", "vrt0123456789a", "group", "30322", "type", "veth", "peer", "name", "pod-end")
		before := n.state(t)
		out, err := n.uninstall(t)
		if err == nil || !strings.Contains(out, "pods still use vethroute") || !strings.Contains(out, "vrt0123456789a") {
			t.Fatalf("uninstall with a vethroute veth: %v\n%s", err, out)
		}
		if after := n.state(t); after != before {
			t.Errorf("a refused uninstall changed the node:\nbefore:\n%s\nafter:\n%s", before, after)
		}
		// --force removes the veth along with the rest.
		if out, err := n.uninstall(t, "--force"); err != nil || !strings.Contains(out, "removed veth vrt0123456789a") {
			t.Fatalf("uninstall --force: %v\n%s", err, out)
		}
		if links := testutil.MustRunIn(t, n.ns, "ip", "-o", "link", "show", "group", "30322"); strings.TrimSpace(links) != "" {
			t.Errorf("vethroute veths left after --force:\n%s", links)
		}
	})

	t.Run("refuses while an agent serves the reaper", func(t *testing.T) {
		n := newUninstallNode(t)
		ln, err := net.Listen("unix", n.socket)
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				c.Close()
			}
		}()
		if out, err := n.uninstall(t); err == nil || !strings.Contains(out, "serves the reaper socket") {
			t.Fatalf("uninstall with a live reaper: %v\n%s", err, out)
		}
		if _, err := os.Stat(filepath.Join(n.confDir, "10-vethroute.conflist")); err != nil {
			t.Errorf("refused uninstall removed the conflist: %v", err)
		}
	})

	t.Run("removes vethroute's and keeps the rest", func(t *testing.T) {
		n := newUninstallNode(t)
		// A stale socket of a dead agent is removed.
		ln, err := net.Listen("unix", n.socket)
		if err != nil {
			t.Fatal(err)
		}
		ln.(*net.UnixListener).SetUnlinkOnClose(false)
		ln.Close()
		before := n.state(t)
		out, err := n.uninstall(t)
		if err != nil {
			t.Fatalf("uninstall: %v\n%s", err, out)
		}
		after := n.state(t)
		t.Logf("before:\n%s\nafter:\n%s\nuninstall said:\n%s", before, after, out)
		for _, gone := range []string{"file 10-vethroute.conflist", "file vethroute", "file portmap", "10.9.0.0/24", "10.8.0.0/24", "table inet vethroute-agent", "table inet vethroute-netpol"} {
			if !strings.Contains(before, gone) {
				t.Fatalf("setup lacks %q:\n%s", gone, before)
			}
			if strings.Contains(after, gone) {
				t.Errorf("%q is still there after uninstall", gone)
			}
		}
		for _, kept := range []string{"file 20-other.conflist", "file bandwidth", "file loopback", "10.7.0.0/24", "table inet someone-else", "dataDir"} {
			if !strings.Contains(after, kept) {
				t.Errorf("uninstall removed %q, which is not vethroute's (or is the IPAM store, kept without --purge-data)", kept)
			}
		}
		if _, err := os.Lstat(n.socket); err == nil {
			t.Error("the dead agent's reaper socket is still there")
		}
		// A second run finds nothing to do; --purge-data takes the store.
		out, err = n.uninstall(t, "--purge-data")
		if err != nil || !strings.Contains(out, "done, 1 removed") {
			t.Errorf("second uninstall --purge-data: %v\n%s", err, out)
		}
		if _, err := os.Stat(n.dataDir); err == nil {
			t.Error("--purge-data left the IPAM store")
		}
	})
}
