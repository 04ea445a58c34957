// Package chain proves that vethroute's result is what chained meta plugins
// need: vethroute followed by the reference portmap, bandwidth, tuning and
// firewall plugins, run through libcni from inside a node namespace as a
// runtime would. Each plugin must act on the interfaces and addresses
// vethroute reports, and DEL must remove what each of them added.
package chain

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/cni/libcni"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vethroute/vethroute/internal/testutil"
	"github.com/vethroute/vethroute/pkg/routing"
)

const (
	networkName = "chain"
	gateway     = "10.98.0.254"
	// hostPort on the node is mapped to containerPort in the server pod.
	hostPort      = 8080
	containerPort = 80
	// somaxconn is what tuning sets in every pod; a fresh namespace has
	// the kernel default (4096), so seeing this value proves tuning ran.
	somaxconn = "1234"
)

// conflistTemplate takes the cniVersion, portmap's backend key (empty for
// the plugin's default) and tuning's somaxconn.
const conflistTemplate = `{
  "cniVersion": %q,
  "name": "chain",
  "plugins": [
    {
      "type": "vethroute",
      "ipam": {
        "type": "vethroute",
        "ranges": [[{ "subnet": "10.98.0.0/24", "gateway": "10.98.0.254" }]],
        "routes": [{ "dst": "0.0.0.0/0" }],
        "dataDir": "@DATADIR@"
      }
    },
    { "type": "portmap", "capabilities": { "portMappings": true }%s },
    { "type": "bandwidth", "capabilities": { "bandwidth": true } },
    {
      "type": "tuning",
      "sysctl": { "net.core.somaxconn": %q },
      "promisc": true,
      "dataDir": "@DATADIR@/tuning"
    },
    { "type": "firewall", "backend": "iptables" }
  ]
}`

// bandwidth is the server pod's runtime bandwidth: ingress (toward the pod)
// is a tbf on the host veth, egress (from the pod) an ingress qdisc on the
// host veth redirected to an ifb device.
var bandwidth = map[string]any{
	"ingressRate": 10_000_000, "ingressBurst": 1_000_000,
	"egressRate": 10_000_000, "egressBurst": 1_000_000,
}

func TestChain(t *testing.T) {
	testutil.RequireRoot(t)
	ref := testutil.ReferencePlugins(t, "portmap", "bandwidth", "tuning", "firewall")
	tests := []struct {
		name       string
		cniVersion string
		// backend is portmap's "backend" key; "" leaves the choice to
		// the plugin.
		backend string
		// wantBackend is where the DNAT must appear. With no key,
		// portmap picks iptables whenever the iptables command works
		// (here iptables-nft 1.8.x), nftables only without it.
		wantBackend string
		// wantPeerIsNode: whether the server sees the node's gateway
		// instead of the client as its peer. portmap's iptables backend
		// masquerades every source in the pod's subnet (the address
		// vethroute reports carries the subnet's prefix), taking it for
		// bridge hairpin traffic; its nftables backend only true
		// hairpin, the pod's own address.
		wantPeerIsNode bool
	}{
		{name: "1.1.0 iptables", cniVersion: "1.1.0", backend: "iptables", wantBackend: "iptables", wantPeerIsNode: true},
		{name: "1.0.0 nftables", cniVersion: "1.0.0", backend: "nftables", wantBackend: "nftables", wantPeerIsNode: false},
		{name: "0.4.0 default backend", cniVersion: "0.4.0", wantBackend: "iptables", wantPeerIsNode: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			backendKey := ""
			if tc.backend != "" {
				backendKey = fmt.Sprintf(`, "backend": %q`, tc.backend)
			}
			node := testutil.NewNode(t, ref)
			testutil.MustRunIn(t, node.NS, "ip", "link", "set", "lo", "up")
			list := node.ConfList(t, fmt.Sprintf(conflistTemplate, tc.cniVersion, backendKey, somaxconn))
			runChain(t, node, list, tc.wantBackend, tc.wantPeerIsNode)
		})
	}
}

// attachment is one pod attached through the whole chain.
type attachment struct {
	rt       *libcni.RuntimeConf
	netns    ns.NetNS
	ip       net.IP
	hostVeth string
	result   *current.Result
}

func attach(t *testing.T, node *testutil.Node, list *libcni.NetworkConfigList, id string, caps map[string]any) *attachment {
	t.Helper()
	podNS := testutil.NewNS(t)
	rt := testutil.RuntimeConf(id, podNS.Path(), "eth0")
	rt.CapabilityArgs = caps
	// DEL on the way out even when a check fails, so the plugins' state
	// goes before the namespaces; DEL of a detached pod is a no-op.
	t.Cleanup(func() { _ = node.Del(list, rt) })
	raw, err := node.Add(list, rt)
	if err != nil {
		t.Fatalf("ADD %s: %v", id, err)
	}
	res, err := current.NewResultFromResult(raw)
	if err != nil {
		t.Fatalf("convert result of %s: %v", id, err)
	}
	if len(res.IPs) == 0 {
		t.Fatalf("ADD %s returned no address: %+v", id, res)
	}
	return &attachment{rt: rt, netns: podNS, ip: res.IPs[0].Address.IP, hostVeth: routing.HostVethName(id, "eth0"), result: res}
}

func runChain(t *testing.T, node *testutil.Node, list *libcni.NetworkConfigList, backend string, peerIsNode bool) {
	portMaps := []map[string]any{{"hostPort": hostPort, "containerPort": containerPort, "protocol": "tcp"}}
	server := attach(t, node, list, "chain-server", map[string]any{"portMappings": portMaps, "bandwidth": bandwidth})
	// The client has no port mapping and no bandwidth: a control for the
	// per-pod checks below, and the "other container" that connects
	// through the node's port.
	client := attach(t, node, list, "chain-client", nil)

	for _, a := range []*attachment{server, client} {
		if err := node.Check(list, a.rt); err != nil {
			t.Errorf("CHECK %s: %v", a.rt.ContainerID, err)
		}
	}

	ifb := ifbName(t, server)
	t.Run("portmap", func(t *testing.T) {
		requireDNAT(t, node, backend, server.ip, true)
		requireDNAT(t, node, backend, client.ip, false)
		// Through the node's port: client -> gateway:hostPort, DNAT to
		// the server pod's containerPort, reply un-NATed back.
		peer := client.ip.String()
		if peerIsNode {
			peer = gateway
		}
		requireEcho(t, server, client, net.JoinHostPort(gateway, fmt.Sprint(hostPort)), peer)
	})
	t.Run("bandwidth", func(t *testing.T) {
		qd := testutil.MustRunIn(t, node.NS, "tc", "qdisc", "show", "dev", server.hostVeth)
		for _, want := range []string{"qdisc tbf", "qdisc ingress"} {
			if !strings.Contains(qd, want) {
				t.Errorf("server's host veth %s lacks %q:\n%s", server.hostVeth, want, qd)
			}
		}
		if qd := testutil.MustRunIn(t, node.NS, "tc", "qdisc", "show", "dev", client.hostVeth); strings.Contains(qd, "tbf") {
			t.Errorf("client without bandwidth has a tbf on %s:\n%s", client.hostVeth, qd)
		}
		if !linkExists(t, node, ifb) {
			t.Errorf("ifb device %s missing from the node", ifb)
		}
	})
	t.Run("tuning", func(t *testing.T) {
		for _, a := range []*attachment{server, client} {
			if got := strings.TrimSpace(testutil.MustRunIn(t, a.netns, "sysctl", "-n", "net.core.somaxconn")); got != somaxconn {
				t.Errorf("%s: net.core.somaxconn = %s, want %s", a.rt.ContainerID, got, somaxconn)
			}
			if out := testutil.MustRunIn(t, a.netns, "ip", "-o", "link", "show", "dev", "eth0"); !strings.Contains(out, "PROMISC") {
				t.Errorf("%s: eth0 not promiscuous:\n%s", a.rt.ContainerID, out)
			}
		}
		if n := len(backups(t, node)); n != 2 {
			t.Errorf("tuning holds %d backups, want 2 (one per pod)", n)
		}
	})
	t.Run("firewall", func(t *testing.T) {
		for _, a := range []*attachment{server, client} {
			requireFirewall(t, node, a.ip, true)
		}
	})
	if t.Failed() {
		return
	}

	if err := node.Del(list, server.rt); err != nil {
		t.Fatalf("DEL server: %v", err)
	}
	t.Run("server deleted", func(t *testing.T) {
		requireDNAT(t, node, backend, server.ip, false)
		if linkExists(t, node, server.hostVeth) {
			t.Errorf("server's host veth %s still exists", server.hostVeth)
		}
		if linkExists(t, node, ifb) {
			t.Errorf("ifb device %s still exists", ifb)
		}
		requireFirewall(t, node, server.ip, false)
		if n := len(backups(t, node)); n != 1 {
			t.Errorf("tuning holds %d backups, want 1 (the client's)", n)
		}
		// The client is untouched by the server's DEL.
		if err := node.Check(list, client.rt); err != nil {
			t.Errorf("CHECK client after DEL of server: %v", err)
		}
		requireFirewall(t, node, client.ip, true)
	})

	if err := node.Del(list, client.rt); err != nil {
		t.Fatalf("DEL client: %v", err)
	}
	t.Run("all deleted", func(t *testing.T) {
		node.RequireClean(t, networkName)
		requireDNAT(t, node, backend, client.ip, false)
		requireFirewall(t, node, client.ip, false)
		if n := backups(t, node); len(n) != 0 {
			t.Errorf("tuning left backups %v", n)
		}
		if out := strings.TrimSpace(testutil.MustRunIn(t, node.NS, "ip", "-o", "link", "show", "type", "ifb")); out != "" {
			t.Errorf("ifb devices left:\n%s", out)
		}
	})
}

// ifbName returns the ifb device bandwidth reported in the server's result:
// bandwidth appends it, without a sandbox, to vethroute's interfaces.
func ifbName(t *testing.T, a *attachment) string {
	t.Helper()
	for _, intf := range a.result.Interfaces {
		if strings.HasPrefix(intf.Name, "bwp") && intf.Sandbox == "" {
			return intf.Name
		}
	}
	t.Fatalf("result of %s lists no ifb device: %+v", a.rt.ContainerID, a.result.Interfaces)
	return ""
}

// requireDNAT checks whether the node has portmap's DNAT to ip:containerPort
// for hostPort, in the given backend, and that the other backend has none.
func requireDNAT(t *testing.T, node *testutil.Node, backend string, ip net.IP, want bool) {
	t.Helper()
	ipt := testutil.MustRunIn(t, node.NS, "iptables-save", "-t", "nat")
	iptHas := strings.Contains(ipt, fmt.Sprintf("--to-destination %s:%d", ip, containerPort))
	// `nft list table` fails when portmap never created its table.
	nft, _ := testutil.RunIn(t, node.NS, 30*time.Second, "nft", "list", "table", "ip", "cni_hostport")
	nftHas := strings.Contains(nft, fmt.Sprintf("dnat to %s:%d", ip, containerPort)) ||
		strings.Contains(nft, fmt.Sprintf("dnat ip to %s:%d", ip, containerPort))
	got := map[string]bool{"iptables": iptHas, "nftables": nftHas}
	for b, has := range got {
		switch {
		case b == backend && has != want:
			t.Errorf("%s DNAT to %s:%d present = %v, want %v\niptables:\n%s\nnft:\n%s", b, ip, containerPort, has, want, ipt, nft)
		case b != backend && has:
			t.Errorf("DNAT to %s:%d found in %s, but portmap should use %s\n%s%s", ip, containerPort, b, backend, ipt, nft)
		}
	}
}

// requireFirewall checks the firewall plugin's per-address rules in its
// CNI-FORWARD chain.
func requireFirewall(t *testing.T, node *testutil.Node, ip net.IP, want bool) {
	t.Helper()
	out, err := testutil.RunIn(t, node.NS, 30*time.Second, "iptables", "-S", "CNI-FORWARD")
	if err != nil {
		if want {
			t.Errorf("firewall chain CNI-FORWARD missing: %v\n%s", err, out)
		}
		return
	}
	for _, rule := range []string{
		fmt.Sprintf("-A CNI-FORWARD -d %s/32 -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT", ip),
		fmt.Sprintf("-A CNI-FORWARD -s %s/32 -j ACCEPT", ip),
	} {
		if has := strings.Contains(out, rule); has != want {
			t.Errorf("firewall rule %q present = %v, want %v:\n%s", rule, has, want, out)
		}
	}
}

// requireEcho runs a TCP server in the server pod's namespace and connects
// from the client pod's namespace to addr; the bytes must arrive from peer
// and the server's answer must come back.
func requireEcho(t *testing.T, server, client *attachment, addr, peer string) {
	t.Helper()
	var ln net.Listener
	// A socket stays in the namespace it was created in, so the listener
	// and the connection keep working after Do returns.
	if err := server.netns.Do(func(ns.NetNS) (err error) {
		ln, err = net.Listen("tcp4", fmt.Sprintf(":%d", containerPort))
		return err
	}); err != nil {
		t.Fatalf("listen in server pod: %v", err)
	}
	defer ln.Close()
	payload := []byte(fmt.Sprintf("hello from %s through %s", client.ip, addr))
	got := make(chan string, 1)
	go func() {
		conn, err := ln.Accept()
		if err != nil {
			got <- "accept: " + err.Error()
			return
		}
		defer conn.Close()
		_ = conn.SetDeadline(time.Now().Add(20 * time.Second))
		b := make([]byte, len(payload))
		if _, err := io.ReadFull(conn, b); err != nil {
			got <- "read: " + err.Error()
			return
		}
		_, _ = conn.Write(append([]byte("ack:"), b...))
		got <- string(b) + " from " + conn.RemoteAddr().(*net.TCPAddr).IP.String()
	}()

	var conn net.Conn
	if err := client.netns.Do(func(ns.NetNS) (err error) {
		conn, err = net.DialTimeout("tcp4", addr, 10*time.Second)
		return err
	}); err != nil {
		t.Fatalf("connect from client pod to %s: %v", addr, err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(20 * time.Second))
	if _, err := conn.Write(payload); err != nil {
		t.Fatalf("send to %s: %v", addr, err)
	}
	reply := make([]byte, len("ack:")+len(payload))
	if _, err := io.ReadFull(conn, reply); err != nil {
		t.Fatalf("read reply from %s: %v", addr, err)
	}
	if !bytes.Equal(reply, append([]byte("ack:"), payload...)) {
		t.Errorf("reply = %q", reply)
	}
	select {
	case s := <-got:
		if want := string(payload) + " from " + peer; s != want {
			t.Errorf("server got %q, want %q", s, want)
		}
	case <-time.After(20 * time.Second):
		t.Error("server got nothing within 20s")
	}
}

func linkExists(t *testing.T, node *testutil.Node, name string) bool {
	t.Helper()
	_, err := testutil.RunIn(t, node.NS, 30*time.Second, "ip", "link", "show", "dev", name)
	return err == nil
}

// backups lists tuning's saved link settings in its data dir.
func backups(t *testing.T, node *testutil.Node) []string {
	t.Helper()
	entries, err := os.ReadDir(filepath.Join(node.DataDir, "tuning"))
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	var out []string
	for _, e := range entries {
		out = append(out, e.Name())
	}
	return out
}
