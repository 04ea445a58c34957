package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vethroute/vethroute/internal/testutil"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

// pluginTimeout bounds every plugin invocation, so that a hung plugin fails
// one operation instead of stalling the run.
const pluginTimeout = 2 * time.Minute

// lab owns everything a run creates: the built binaries, the namespaces
// (named with a per-run prefix, so leftovers of a killed run are
// recognisable) and temporary directories. close removes all of it.
type lab struct {
	root   string
	tmp    string
	binDir string // vethroute, vethroute-agent and floorplugin
	refDir string // ptp and host-local
	prefix string

	mu       sync.Mutex
	seq      int
	spaces   map[string]ns.NetNS
	cleanups []func()
	// closed is set by close: a namespace created after it (by a section
	// still running when a signal arrived) is removed at once.
	closed bool
}

// newLab builds the plugins under test into a temporary directory.
func newLab(root string) (*lab, error) {
	tmp, err := os.MkdirTemp("", "vethroute-bench-")
	if err != nil {
		return nil, err
	}
	l := &lab{root: root, tmp: tmp, binDir: filepath.Join(tmp, "bin"), refDir: filepath.Join(tmp, "ref"),
		prefix: fmt.Sprintf("vrbench%d-", os.Getpid()), spaces: map[string]ns.NetNS{}}
	for _, d := range []string{l.binDir, l.refDir} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			l.close()
			return nil, err
		}
	}
	refs, err := testutil.ReferencePackages("ptp", "host-local")
	if err != nil {
		l.close()
		return nil, err
	}
	steps := []func() error{
		func() error {
			return testutil.Build(root, l.binDir, "./plugins/vethroute", "./cmd/vethroute-agent", "./test/bench/floorplugin")
		},
		func() error { return testutil.Build(root, l.refDir, refs...) },
	}
	for _, s := range steps {
		if err := s(); err != nil {
			l.close()
			return nil, err
		}
	}
	return l, nil
}

// startReaper runs `vethroute-agent reaper` inside node, as the node agent
// would run it, and returns its socket once it listens. The lab stops it on
// close; it also dies with the bench (Pdeathsig).
func (l *lab) startReaper(node *testutil.Node, dir string) (string, error) {
	socket := filepath.Join(dir, "reaper.sock")
	logf, err := os.Create(filepath.Join(dir, "reaper.log"))
	if err != nil {
		return "", err
	}
	cmd := exec.Command("nsenter", "--net="+node.NS.Path(), filepath.Join(l.binDir, "vethroute-agent"), "reaper", "--socket="+socket, "--log-level=warn")
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	exited := make(chan struct{})
	if err := testutil.StartTied(cmd, func(error) { logf.Close(); close(exited) }); err != nil {
		logf.Close()
		return "", fmt.Errorf("start reaper: %w", err)
	}
	l.onClose(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
	})
	for range 200 {
		if _, err := os.Stat(socket); err == nil {
			return socket, nil
		}
		select {
		case <-exited:
			b, _ := os.ReadFile(logf.Name())
			return "", fmt.Errorf("reaper exited before listening: %s", b)
		case <-time.After(25 * time.Millisecond):
		}
	}
	return "", fmt.Errorf("reaper did not listen on %s within 5s", socket)
}

// onClose registers f to run (last registered first) when the lab closes.
func (l *lab) onClose(f func()) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.cleanups = append(l.cleanups, f)
}

// close removes every namespace still open and every temporary file.
func (l *lab) close() {
	l.mu.Lock()
	l.closed = true
	cleanups := l.cleanups
	l.cleanups = nil
	l.mu.Unlock()
	for i := len(cleanups) - 1; i >= 0; i-- {
		cleanups[i]()
	}
	l.mu.Lock()
	spaces := l.spaces
	l.spaces = map[string]ns.NetNS{}
	l.mu.Unlock()
	for _, n := range spaces {
		if err := testutil.RemoveNamedNS(n); err != nil {
			fmt.Fprintln(os.Stderr, "bench: cleanup:", err)
		}
	}
	_ = os.RemoveAll(l.tmp)
}

// newNS creates a namespace named <prefix><role><n>.
func (l *lab) newNS(role string) (ns.NetNS, error) {
	l.mu.Lock()
	l.seq++
	name := fmt.Sprintf("%s%s%d", l.prefix, role, l.seq)
	l.mu.Unlock()
	n, err := testutil.CreateNamedNS(name)
	if err != nil {
		return nil, err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		_ = testutil.RemoveNamedNS(n)
		return nil, errors.New("the run is being stopped")
	}
	l.spaces[n.Path()] = n
	return n, nil
}

// removeNS deletes a namespace before the lab closes.
func (l *lab) removeNS(n ns.NetNS) error {
	l.mu.Lock()
	delete(l.spaces, n.Path())
	l.mu.Unlock()
	return testutil.RemoveNamedNS(n)
}

// newNode makes a node namespace with a libcni client whose CNI path holds
// vethroute, floorplugin, ptp and host-local, plus an uplink: a veth pair
// inside the node whose end up0 carries 172.16.0.1/24, so that a route via
// 172.16.0.2 (the other node of the article's topology) is valid.
func (l *lab) newNode(role string, uplink bool) (*testutil.Node, error) {
	return l.newNodeWith(role, uplink, []string{l.binDir, l.refDir})
}

// newNodeWith is newNode with the given CNI path.
func (l *lab) newNodeWith(role string, uplink bool, cniPath []string) (*testutil.Node, error) {
	nodeNS, err := l.newNS(role)
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp(l.tmp, role+"-")
	if err != nil {
		return nil, err
	}
	n := &testutil.Node{
		NS:       nodeNS,
		CNI:      libcni.NewCNIConfigWithCacheDir(cniPath, filepath.Join(dir, "cache"), nil),
		DataDir:  filepath.Join(dir, "data"),
		CacheDir: filepath.Join(dir, "cache"),
	}
	if uplink {
		if err := withHandle(nodeNS, func(h *netlink.Handle) error {
			attrs := netlink.NewLinkAttrs()
			attrs.Name = "up0"
			up := &netlink.Veth{LinkAttrs: attrs, PeerName: "up1"}
			if err := h.LinkAdd(up); err != nil {
				return fmt.Errorf("create uplink: %w", err)
			}
			return configureUplink(h, "172.16.0.1/24", "up0", "up1")
		}); err != nil {
			return nil, err
		}
	}
	return n, nil
}

// withHandle runs f with a netlink handle inside the namespace n; nothing
// is ever done in the machine's own namespace.
func withHandle(n ns.NetNS, f func(*netlink.Handle) error) error {
	h, err := netlink.NewHandleAt(netns.NsHandle(n.Fd()))
	if err != nil {
		return fmt.Errorf("open netlink in %s: %w", n.Path(), err)
	}
	defer h.Close()
	return f(h)
}

// configureUplink puts cidr on the first link and sets every link up.
func configureUplink(h *netlink.Handle, cidr string, links ...string) error {
	addr, err := netlink.ParseAddr(cidr)
	if err != nil {
		return err
	}
	for i, name := range links {
		l, err := h.LinkByName(name)
		if err != nil {
			return fmt.Errorf("find %s: %w", name, err)
		}
		if i == 0 {
			if err := h.AddrAdd(l, addr); err != nil {
				return fmt.Errorf("address %s on %s: %w", cidr, name, err)
			}
		}
		if err := h.LinkSetUp(l); err != nil {
			return fmt.Errorf("set %s up: %w", name, err)
		}
	}
	return nil
}

// addRoute adds dst via gw in the node: what vethroute's hostRoutes do, done
// by hand for ptp, which has no such setting.
func addRoute(node ns.NetNS, dst, gw string) error {
	_, d, err := net.ParseCIDR(dst)
	if err != nil {
		return err
	}
	return withHandle(node, func(h *netlink.Handle) error {
		return h.RouteAdd(&netlink.Route{Dst: d, Gw: net.ParseIP(gw)})
	})
}

// countVeths returns how many veth interfaces the node holds besides its
// uplink: what a storm's DELs must bring back to zero.
func countVeths(node ns.NetNS) (int, error) {
	n := 0
	err := withHandle(node, func(h *netlink.Handle) error {
		links, err := h.LinkList()
		if err != nil {
			return err
		}
		for _, l := range links {
			if l.Type() == "veth" && !strings.HasPrefix(l.Attrs().Name, "up") {
				n++
			}
		}
		return nil
	})
	return n, err
}

// driver runs one plugin (vethroute, or ptp with host-local) on its node.
type driver struct {
	name   string // as the report names it
	plugin string // binary under test
	node   *testutil.Node
	list   *libcni.NetworkConfigList
	// netconf is the single-plugin configuration a runtime would send on
	// stdin, for invocations without libcni.
	netconf []byte
	cniPath string
	bin     string
}

// pluginConf is the configuration of a plugin under test. Both plugins get
// the same range, routes and MTU; vethroute also gets the article's router
// route toward the other node, which ptp's node has installed by hand.
type pluginConf struct {
	subnet, rangeStart, rangeEnd, gateway string
	// peerSubnet is the other node's pod subnet; peerGW its uplink address.
	peerSubnet, peerGW string
}

// newDriver sets up plugin ("vethroute" or "ptp") on a fresh node. With
// uplink the node gets its own uplink (see newNode) and, for ptp, the router
// route by hand; without, the caller links the node and adds them.
// vethroute's node runs the agent's reaper, as a Kubernetes node does.
func (l *lab) newDriver(plugin, role string, pc pluginConf, uplink bool) (*driver, error) {
	return l.newDriverFrom(l.binDir, plugin, role, pc, uplink, plugin == "vethroute")
}

// newDriverFrom is newDriver with vethroute taken from binDir, and the
// reaper only when reaper is set.
func (l *lab) newDriverFrom(binDir, plugin, role string, pc pluginConf, uplink, reaper bool) (*driver, error) {
	node, err := l.newNodeWith(role, uplink, []string{binDir, l.refDir})
	if err != nil {
		return nil, err
	}
	ipamConf := map[string]any{
		"ranges":  [][]map[string]string{{{"subnet": pc.subnet, "rangeStart": pc.rangeStart, "rangeEnd": pc.rangeEnd, "gateway": pc.gateway}}},
		"routes":  []map[string]string{{"dst": "0.0.0.0/0"}},
		"dataDir": node.DataDir,
	}
	p := map[string]any{"type": plugin, "mtu": 1500, "ipam": ipamConf}
	d := &driver{plugin: plugin, node: node, cniPath: binDir + ":" + l.refDir}
	switch plugin {
	case "vethroute":
		d.name, d.bin = "vethroute", filepath.Join(binDir, "vethroute")
		ipamConf["type"] = "vethroute"
		if pc.peerSubnet != "" {
			p["hostRoutes"] = []map[string]string{{"dst": pc.peerSubnet, "gw": pc.peerGW}}
		}
		if reaper {
			sock, err := l.startReaper(node, filepath.Dir(node.DataDir))
			if err != nil {
				return nil, err
			}
			p["reaperSocket"] = sock
		}
	case "ptp":
		d.name, d.bin = "ptp+host-local", filepath.Join(l.refDir, "ptp")
		ipamConf["type"] = "host-local"
		p["ipMasq"] = false
		if pc.peerSubnet != "" && uplink {
			if err := addRoute(node.NS, pc.peerSubnet, pc.peerGW); err != nil {
				return nil, fmt.Errorf("router route for ptp's node: %w", err)
			}
		}
	default:
		return nil, fmt.Errorf("unknown plugin %q", plugin)
	}
	list := map[string]any{"cniVersion": "1.1.0", "name": "bench", "plugins": []any{p}}
	raw, err := json.Marshal(list)
	if err != nil {
		return nil, err
	}
	if d.list, err = libcni.ConfListFromBytes(raw); err != nil {
		return nil, fmt.Errorf("parse conflist: %w\n%s", err, raw)
	}
	single := map[string]any{"cniVersion": "1.1.0", "name": "bench"}
	for k, v := range p {
		single[k] = v
	}
	if d.netconf, err = json.Marshal(single); err != nil {
		return nil, err
	}
	return d, nil
}

// add runs ADD through libcni from inside the node, as a runtime there would.
func (d *driver) add(cid string, cont ns.NetNS) (time.Duration, error) {
	ctx, cancel := context.WithTimeout(context.Background(), pluginTimeout)
	defer cancel()
	rt := testutil.RuntimeConf(cid, cont.Path(), "eth0")
	var took time.Duration
	err := d.node.Do(func() error {
		start := time.Now()
		_, err := d.node.CNI.AddNetworkList(ctx, d.list, rt)
		took = time.Since(start)
		return err
	})
	return took, err
}

// addIP runs ADD through libcni and returns the container's first address.
func (d *driver) addIP(cid string, cont ns.NetNS) (net.IP, error) {
	ctx, cancel := context.WithTimeout(context.Background(), pluginTimeout)
	defer cancel()
	rt := testutil.RuntimeConf(cid, cont.Path(), "eth0")
	var res types.Result
	err := d.node.Do(func() (err error) {
		res, err = d.node.CNI.AddNetworkList(ctx, d.list, rt)
		return err
	})
	if err != nil {
		return nil, err
	}
	cur, err := current.NewResultFromResult(res)
	if err != nil {
		return nil, err
	}
	if len(cur.IPs) == 0 {
		return nil, fmt.Errorf("%s returned no address for %s", d.name, cid)
	}
	return cur.IPs[0].Address.IP, nil
}

// del runs DEL through libcni from inside the node.
func (d *driver) del(cid string, cont ns.NetNS) (time.Duration, error) {
	ctx, cancel := context.WithTimeout(context.Background(), pluginTimeout)
	defer cancel()
	rt := testutil.RuntimeConf(cid, cont.Path(), "eth0")
	var took time.Duration
	err := d.node.Do(func() error {
		start := time.Now()
		err := d.node.CNI.DelNetworkList(ctx, d.list, rt)
		took = time.Since(start)
		return err
	})
	return took, err
}

// execResult is one plugin process run without libcni.
type execResult struct {
	wall     time.Duration
	maxRSSKB int64
	user     time.Duration
	sys      time.Duration
	stdout   []byte
	stderr   []byte
}

// execIn runs bin with env inside node, stdin as given, and returns its
// resource usage as wait4 reports it: the process and the children it
// waited for (ptp's host-local). Its maxRSSKB is not the plugin's: see
// peakRSS.
func execIn(node *testutil.Node, bin string, args, env []string, stdin []byte) (execResult, error) {
	ctx, cancel := context.WithTimeout(context.Background(), pluginTimeout)
	defer cancel()
	var res execResult
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = env
	cmd.Stdin = bytes.NewReader(stdin)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := node.Do(func() error {
		start := time.Now()
		err := cmd.Run()
		res.wall = time.Since(start)
		return err
	})
	res.stdout, res.stderr = out.Bytes(), errb.Bytes()
	if ps := cmd.ProcessState; ps != nil {
		if ru, ok := ps.SysUsage().(*syscall.Rusage); ok {
			res.maxRSSKB = ru.Maxrss
			res.user = time.Duration(ru.Utime.Nano())
			res.sys = time.Duration(ru.Stime.Nano())
		}
	}
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return res, fmt.Errorf("%s %s: %v\nstdout: %s\nstderr: %s", filepath.Base(bin), strings.Join(env, " "), err, out.Bytes(), errb.Bytes())
		}
		return res, err
	}
	return res, nil
}

// peakRSS runs bin like execIn, but under GNU time, and returns the peak
// RSS (KiB) of bin and the children it waited for. wait4's ru_maxrss of a
// process this Go program starts is useless: the child is forked sharing the
// runtime's address space, and the kernel carries that address space's
// high-water mark across exec, so every plugin would "peak" at the size of
// the benchmark itself. GNU time is a small C program whose own footprint
// is what the child inherits instead (about 1-2 MiB, far below any Go plugin).
func peakRSS(node *testutil.Node, bin string, env []string, stdin []byte) (int64, error) {
	timeBin, err := exec.LookPath("time")
	if err != nil {
		return 0, fmt.Errorf("GNU time is not installed (apt-get install time)")
	}
	f, err := os.CreateTemp("", "vethroute-rss-")
	if err != nil {
		return 0, err
	}
	f.Close()
	defer os.Remove(f.Name())
	if _, err := execIn(node, timeBin, []string{"-f", "%M", "-o", f.Name(), bin}, env, stdin); err != nil {
		return 0, err
	}
	b, err := os.ReadFile(f.Name())
	if err != nil {
		return 0, err
	}
	fields := strings.Fields(string(b))
	if len(fields) == 0 {
		return 0, fmt.Errorf("GNU time wrote nothing")
	}
	return strconv.ParseInt(fields[len(fields)-1], 10, 64)
}

// cniEnv is the environment of a direct plugin invocation.
func (d *driver) cniEnv(command, cid string, cont ns.NetNS) []string {
	return []string{"CNI_COMMAND=" + command, "CNI_CONTAINERID=" + cid, "CNI_NETNS=" + cont.Path(),
		"CNI_IFNAME=eth0", "CNI_PATH=" + d.cniPath}
}

// exec runs the plugin binary directly (no libcni) with command.
func (d *driver) exec(command, cid string, cont ns.NetNS) (execResult, error) {
	return execIn(d.node, d.bin, nil, d.cniEnv(command, cid, cont), d.netconf)
}
