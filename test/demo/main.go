// Command demo reproduces the article's routed topology with the vethroute
// plugin doing the per-container work: two node namespaces (router01,
// router02) joined by a veth, and one container behind each (ns01, ns02),
// attached by invoking the plugin through libcni from inside its node, as a
// runtime on that node would. It pings ns02 from ns01 across both routers
// (ttl=62), runs CHECK, then DELs everything and removes the namespaces.
// Nothing in the machine's own network namespace is changed.
//
// Usage (as root): go run ./test/demo -bin ./bin
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/containernetworking/cni/libcni"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/plugins/pkg/ns"
)

// node is one router namespace and the container the plugin attaches to it.
type node struct {
	name, container, ifName string
	subnet, start, end, gw  string
	uplink, uplinkAddr      string
	peerSubnet, peerAddr    string
}

var nodes = []node{
	{name: "router01", container: "ns01", ifName: "ns01-veth0",
		subnet: "192.168.0.0/24", start: "192.168.0.1", end: "192.168.0.250", gw: "192.168.0.254",
		uplink: "gw01-veth1", uplinkAddr: "172.16.0.1/24", peerSubnet: "10.0.0.0/24", peerAddr: "172.16.0.2"},
	{name: "router02", container: "ns02", ifName: "ns02-veth0",
		subnet: "10.0.0.0/24", start: "10.0.0.1", end: "10.0.0.250", gw: "10.0.0.254",
		uplink: "gw02-veth0", uplinkAddr: "172.16.0.2/24", peerSubnet: "192.168.0.0/24", peerAddr: "172.16.0.1"},
}

func main() {
	bin := flag.String("bin", "bin", "directory holding the vethroute binary")
	flag.Parse()
	if err := run(*bin); err != nil {
		fmt.Fprintf(os.Stderr, "demo failed: %v\n", err)
		os.Exit(1)
	}
}

func run(bin string) (err error) {
	if os.Geteuid() != 0 {
		return errors.New("needs root: it creates network namespaces")
	}
	binDir, err := filepath.Abs(bin)
	if err != nil {
		return err
	}
	if _, err := os.Stat(filepath.Join(binDir, "vethroute")); err != nil {
		return fmt.Errorf("no plugin in %s (run make build): %w", binDir, err)
	}
	for _, n := range nodes {
		for _, name := range []string{n.name, n.container} {
			if _, err := os.Stat("/var/run/netns/" + name); err == nil {
				return fmt.Errorf("namespace %s already exists; remove it with `ip netns del %s` first", name, name)
			}
		}
	}
	work, err := os.MkdirTemp("", "vethroute-demo-")
	if err != nil {
		return err
	}

	// Every namespace the demo creates is removed on any exit, also on ^C.
	var created []string
	cleanup := func() {
		for i := len(created) - 1; i >= 0; i-- {
			_ = exec.Command("ip", "netns", "del", created[i]).Run()
		}
		_ = os.RemoveAll(work)
	}
	defer cleanup()
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
	go func() {
		<-sig
		cleanup()
		os.Exit(130)
	}()

	step("1. Namespaces: two routers (nodes) and one container behind each")
	for _, n := range nodes {
		for _, name := range []string{n.name, n.container} {
			if err := sh("ip", "netns", "add", name); err != nil {
				return err
			}
			created = append(created, name)
		}
	}

	step("2. The link between the routers (the article's 172.16.0.0/24)")
	if err := sh("ip", "-n", "router01", "link", "add", "gw01-veth1", "type", "veth", "peer", "name", "gw02-veth0", "netns", "router02"); err != nil {
		return err
	}
	for _, n := range nodes {
		if err := sh("ip", "-n", n.name, "addr", "add", n.uplinkAddr, "dev", n.uplink); err != nil {
			return err
		}
		if err := sh("ip", "-n", n.name, "link", "set", n.uplink, "up"); err != nil {
			return err
		}
	}

	step("3. ADD: the plugin, run by libcni inside each router, wires each container")
	cni := libcni.NewCNIConfigWithCacheDir([]string{binDir}, filepath.Join(work, "cache"), nil)
	lists := map[string]*libcni.NetworkConfigList{}
	for _, n := range nodes {
		l, err := libcni.ConfListFromBytes([]byte(conflist(n, filepath.Join(work, n.name))))
		if err != nil {
			return fmt.Errorf("conflist for %s: %w", n.name, err)
		}
		lists[n.name] = l
		fmt.Printf("   %s: ADD container %s (ifname %s), range %s, gateway %s, hostRoutes %s via %s\n",
			n.name, n.container, n.ifName, n.subnet, n.gw, n.peerSubnet, n.peerAddr)
		var res *current.Result
		err = inNode(n, func() error {
			r, err := cni.AddNetworkList(context.Background(), l, rtConf(n))
			if err != nil {
				return err
			}
			res, err = current.NewResultFromResult(r)
			return err
		})
		if err != nil {
			return fmt.Errorf("ADD %s on %s: %w", n.container, n.name, err)
		}
		defer func() {
			if derr := inNode(n, func() error { return cni.DelNetworkList(context.Background(), l, rtConf(n)) }); derr != nil {
				fmt.Fprintf(os.Stderr, "DEL %s: %v\n", n.container, derr)
				if err == nil {
					err = derr
				}
				return
			}
			fmt.Printf("   DEL %s on %s: ok\n", n.container, n.name)
		}()
		fmt.Printf("   -> %s got %s, node veth %s\n", n.container, res.IPs[0].Address.String(), res.Interfaces[0].Name)
	}

	step("4. What the plugin set up")
	for _, n := range nodes {
		_ = sh("ip", "-n", n.container, "-br", "addr", "show", n.ifName)
		_ = sh("ip", "-n", n.container, "route")
		_ = sh("ip", "-n", n.name, "route")
	}

	step("5. Ping ns02 from ns01 across router01 and router02 (ttl=62: two routers crossed)")
	out, perr := exec.Command("ip", "netns", "exec", "ns01", "ping", "-c", "3", "-W", "2", "10.0.0.1", "-I", "192.168.0.1").CombinedOutput()
	fmt.Print(indent(string(out)))
	if perr != nil {
		return fmt.Errorf("ping 10.0.0.1 from ns01: %w", perr)
	}
	if !strings.Contains(string(out), "ttl=62") {
		return errors.New("ping answered, but not with ttl=62")
	}

	step("6. CHECK: the plugin compares the live state with what ADD reported")
	for _, n := range nodes {
		err := inNode(n, func() error { return cni.CheckNetworkList(context.Background(), lists[n.name], rtConf(n)) })
		verdict := "ok"
		if err != nil {
			verdict = "FAILED: " + err.Error()
		}
		fmt.Printf("   CHECK %s on %s: %s\n", n.container, n.name, verdict)
		if err != nil {
			return err
		}
	}

	step("7. DEL both containers and remove the namespaces")
	return nil
}

func conflist(n node, dataDir string) string {
	return fmt.Sprintf(`{
  "cniVersion": "1.1.0", "name": "vethroute",
  "plugins": [{
    "type": "vethroute", "mtu": 1500,
    "hostRoutes": [{"dst": %q, "gw": %q}],
    "ipam": {"type": "vethroute",
      "ranges": [[{"subnet": %q, "rangeStart": %q, "rangeEnd": %q, "gateway": %q}]],
      "routes": [{"dst": "0.0.0.0/0"}], "dataDir": %q}
  }]}`, n.peerSubnet, n.peerAddr, n.subnet, n.start, n.end, n.gw, dataDir)
}

func rtConf(n node) *libcni.RuntimeConf {
	return &libcni.RuntimeConf{ContainerID: n.container, NetNS: "/var/run/netns/" + n.container, IfName: n.ifName}
}

// inNode runs f on a thread inside the router's namespace, so the plugin
// libcni starts runs there, as it would on that node.
func inNode(n node, f func() error) error {
	netns, err := ns.GetNS("/var/run/netns/" + n.name)
	if err != nil {
		return err
	}
	defer netns.Close()
	return netns.Do(func(ns.NetNS) error { return f() })
}

func step(s string) { fmt.Printf("\n== %s\n", s) }

func sh(name string, args ...string) error {
	fmt.Printf("   $ %s %s\n", name, strings.Join(args, " "))
	out, err := exec.Command(name, args...).CombinedOutput()
	if len(out) > 0 {
		fmt.Print(indent(string(out)))
	}
	if err != nil {
		return fmt.Errorf("%s %s: %w", name, strings.Join(args, " "), err)
	}
	return nil
}

func indent(s string) string {
	s = strings.TrimRight(s, "\n")
	if s == "" {
		return ""
	}
	return "     " + strings.ReplaceAll(s, "\n", "\n     ") + "\n"
}
