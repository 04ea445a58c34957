package testutil

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/plugins/pkg/ns"
)

// Node is a network namespace standing in for a Kubernetes node, with a
// libcni client that runs plugins from inside it, as a runtime on that node
// would: the node side of every veth lands in Node.NS, never in the
// machine's own namespace.
type Node struct {
	NS      ns.NetNS
	CNI     *libcni.CNIConfig
	DataDir string
	// CacheDir is libcni's result cache, private to the test.
	CacheDir string
}

// NewNode makes a node namespace (removed with t.Cleanup) whose CNI path
// holds the vethroute binary and every directory in extraPaths.
func NewNode(t testing.TB, extraPaths ...string) *Node {
	t.Helper()
	nodeNS := NewNS(t)
	// A real node has an uplink besides lo, so its first veth never gets
	// ifindex 2, the index its peer gets in a fresh container namespace. A
	// veth whose index equals its peer's is not treated as urgent by the
	// kernel's link watcher and comes up to a second late, which would make
	// the first container of a test namespace look slow for no real reason.
	MustRunIn(t, nodeNS, "ip", "link", "add", "uplink0", "type", "bridge")
	MustRunIn(t, nodeNS, "ip", "link", "set", "uplink0", "up")
	cache := t.TempDir()
	paths := append([]string{PluginDir(t)}, extraPaths...)
	return &Node{
		NS:       nodeNS,
		CNI:      libcni.NewCNIConfigWithCacheDir(paths, cache, nil),
		DataDir:  t.TempDir(),
		CacheDir: cache,
	}
}

// ConfList parses a conflist, replacing every "@DATADIR@" with the node's
// data directory so each test has its own reservation store.
func (n *Node) ConfList(t testing.TB, conflist string) *libcni.NetworkConfigList {
	t.Helper()
	conflist = strings.ReplaceAll(conflist, "@DATADIR@", n.DataDir)
	l, err := libcni.ConfListFromBytes([]byte(conflist))
	if err != nil {
		t.Fatalf("parse conflist: %v\n%s", err, conflist)
	}
	return l
}

// RuntimeConf describes one attachment as a runtime would.
func RuntimeConf(containerID, netnsPath, ifName string) *libcni.RuntimeConf {
	return &libcni.RuntimeConf{ContainerID: containerID, NetNS: netnsPath, IfName: ifName}
}

// Do runs f on a thread inside the node's namespace, so that plugins libcni
// executes start there.
func (n *Node) Do(f func() error) error {
	return n.NS.Do(func(ns.NetNS) error { return f() })
}

// Add runs ADD of the whole list from inside the node.
func (n *Node) Add(l *libcni.NetworkConfigList, rt *libcni.RuntimeConf) (types.Result, error) {
	var res types.Result
	err := n.Do(func() (err error) {
		res, err = n.CNI.AddNetworkList(context.Background(), l, rt)
		return err
	})
	return res, err
}

// Check runs CHECK of the whole list from inside the node.
func (n *Node) Check(l *libcni.NetworkConfigList, rt *libcni.RuntimeConf) error {
	return n.Do(func() error { return n.CNI.CheckNetworkList(context.Background(), l, rt) })
}

// Del runs DEL of the whole list from inside the node.
func (n *Node) Del(l *libcni.NetworkConfigList, rt *libcni.RuntimeConf) error {
	return n.Do(func() error { return n.CNI.DelNetworkList(context.Background(), l, rt) })
}

// GC runs GC of the list, keeping the given attachments.
func (n *Node) GC(l *libcni.NetworkConfigList, keep []types.GCAttachment) error {
	return n.Do(func() error {
		return n.CNI.GCNetworkList(context.Background(), l, &libcni.GCArgs{ValidAttachments: keep})
	})
}

// PluginGC runs GC by executing the list's first plugin directly, with
// valid as cni.dev/valid-attachments, and fails the test unless it
// succeeds. libcni's GCNetworkList first DELs every cached attachment that
// valid leaves out, so only a direct GC shows what the plugin collects on
// its own: what no runtime's cache remembers any more.
func (n *Node) PluginGC(t testing.TB, l *libcni.NetworkConfigList, valid []types.GCAttachment) {
	t.Helper()
	var conf map[string]any
	if err := json.Unmarshal(l.Plugins[0].Bytes, &conf); err != nil {
		t.Fatalf("decode plugin configuration: %v", err)
	}
	if valid == nil {
		valid = []types.GCAttachment{}
	}
	conf["cniVersion"], conf["name"], conf["cni.dev/valid-attachments"] = l.CNIVersion, l.Name, valid
	stdin, err := json.Marshal(conf)
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(PluginDir(t), l.Plugins[0].Network.Type)
	env := CNIEnv("GC", "", "", "", "", strings.Join(n.CNI.Path, string(os.PathListSeparator)))
	if o := n.RunPlugin(t, bin, Invocation{Env: env, Stdin: stdin}); o.ExitCode != 0 {
		t.Fatalf("GC: %s", o)
	}
}

// Status runs STATUS of the list.
func (n *Node) Status(l *libcni.NetworkConfigList) error {
	return n.Do(func() error { return n.CNI.GetStatusNetworkList(context.Background(), l) })
}

// Links returns the names of the node's interfaces other than lo.
func (n *Node) Links(t testing.TB) []string {
	t.Helper()
	out := MustRunIn(t, n.NS, "ip", "-o", "link", "show")
	var names []string
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		name, _, _ := strings.Cut(strings.TrimSuffix(f[1], ":"), "@")
		if name != "lo" {
			names = append(names, name)
		}
	}
	return names
}

// Routes returns `ip route show` output of the node for a family ("-4"/"-6").
func (n *Node) Routes(t testing.TB, family string) string {
	t.Helper()
	return MustRunIn(t, n.NS, "ip", family, "route", "show")
}

// Reservations lists the owner records of a network in the node's store.
func (n *Node) Reservations(t testing.TB, network string) []string {
	t.Helper()
	entries, err := os.ReadDir(filepath.Join(n.DataDir, network, "owners"))
	if err != nil && !os.IsNotExist(err) {
		t.Fatalf("read store: %v", err)
	}
	var out []string
	for _, e := range entries {
		out = append(out, e.Name())
	}
	return out
}

// RequireClean fails the test if the node still has any vethroute interface,
// container route or reservation of network: what every DEL/GC must leave behind.
func (n *Node) RequireClean(t testing.TB, network string) {
	t.Helper()
	if links := strings.TrimSpace(MustRunIn(t, n.NS, "ip", "-o", "link", "show", "group", "30322")); links != "" {
		t.Errorf("node still has vethroute interfaces:\n%s", links)
	}
	for _, fam := range []string{"-4", "-6"} {
		// Container routes are the link-scoped proto-86 routes; hostRoutes
		// (proto 86 too, through a gateway) are node configuration and stay.
		if r := strings.TrimSpace(MustRunIn(t, n.NS, "ip", fam, "route", "show", "proto", "86", "scope", "link")); r != "" {
			t.Errorf("node still has container routes:\n%s", r)
		}
	}
	if res := n.Reservations(t, network); len(res) != 0 {
		t.Errorf("store still holds reservations %v", res)
	}
}

// JSON marshals v or fails the test.
func JSON(t testing.TB, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
