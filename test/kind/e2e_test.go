// Package kind_test runs vethroute as the only CNI of a three-node kind
// cluster: one control plane and two workers, each node a Docker container
// booted from the node image test/kind/build.sh makes without a registry.
// The agent DaemonSet from deploy/ installs the plugin and keeps the routes
// between nodes; the test checks what a user of the plugin would: nodes get
// Ready, pods on different nodes reach each other through both nodes as
// routers (ttl 62, the article's two routers), pods reach the API server
// through the kubernetes service, a recreated pod works, and a removed node's
// routes disappear from the others.
//
// It runs under `make e2e-kind`, which builds the images and sets
// KIND_BIN, KIND_NODE_IMAGE, KIND_PROBE_ARCHIVE and VETHROUTE_IMAGE. The
// cluster's lifecycle is internal/kindcluster's, the same code as
// `make kind-up`.
package kind_test

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/vethroute/vethroute/internal/kindcluster"
	"github.com/vethroute/vethroute/internal/testutil"
)

// cluster is one kind cluster under test and the commands to drive it,
// each failing the test on error.
type cluster struct {
	t *testing.T
	*kindcluster.Cluster
}

const (
	// defaultClusterName is the cluster's name (and its Docker network's)
	// unless KIND_E2E_CLUSTER names another.
	defaultClusterName = "vethroute-e2e"
	// vethGroup is the link group vethroute puts every host-side veth in
	// (pkg/routing.LinkGroup); counting them is the leak check.
	vethGroup = "30322"
	// agentRouteProto is the route protocol vethroute-agent installs its
	// routes toward other nodes' pod CIDRs with (pkg/noderoutes).
	agentRouteProto = "87"
)

func TestKindCluster(t *testing.T) {
	testutil.RequireRoot(t)
	kindBin, nodeImage := os.Getenv("KIND_BIN"), os.Getenv("KIND_NODE_IMAGE")
	probeArchive, pluginImage := os.Getenv("KIND_PROBE_ARCHIVE"), os.Getenv("VETHROUTE_IMAGE")
	if kindBin == "" || nodeImage == "" || probeArchive == "" || pluginImage == "" {
		t.Skip("kind e2e: run it with `make e2e-kind`, which builds the node image and sets KIND_BIN, KIND_NODE_IMAGE, KIND_PROBE_ARCHIVE and VETHROUTE_IMAGE")
	}
	if testing.Short() {
		t.Skip("kind e2e: skipped in -short mode (it boots a three-node cluster)")
	}
	fam := kindcluster.Dual
	if s := os.Getenv("KIND_E2E_FAMILY"); s != "" {
		var err error
		if fam, err = kindcluster.ParseFamily(s); err != nil {
			t.Fatalf("KIND_E2E_FAMILY: %v", err)
		}
	}
	families = familiesOf(fam)
	kubernetesVIP = fam.KubernetesVIP()
	name := os.Getenv("KIND_E2E_CLUSTER")
	if name == "" {
		name = defaultClusterName
	}
	c := newCluster(t, name, fam, kindBin, nodeImage, probeArchive, pluginImage)
	// Load the images, apply deploy/ (image and --cluster-cidrs replaced),
	// wait for the agent, every node Ready, and CoreDNS answering a pod.
	for _, step := range []func() error{c.Load, c.Deploy, c.Wait} {
		if err := step(); err != nil {
			t.Fatal(err)
		}
	}
	probeImage := c.ProbeImage()

	nodes := c.nodes()
	if len(nodes) != 3 {
		t.Fatalf("cluster has %d nodes, want 3: %v", len(nodes), nodes)
	}
	for _, n := range nodes {
		for _, f := range families {
			_, subnet, _ := net.ParseCIDR(f.podSubnet)
			if cidr := n.podCIDRs[f.name]; cidr == nil || !subnet.Contains(cidr.IP) {
				t.Fatalf("node %s has %s pod CIDR %v, want one inside %s", n.name, f.name, cidr, f.podSubnet)
			}
		}
	}
	cp, w1, w2 := nodes[0], nodes[1], nodes[2]

	t.Run("system pods", func(t *testing.T) {
		c.kubectl(3*time.Minute, "-n", "kube-system", "rollout", "status", "daemonset/kube-proxy", "--timeout=170s")
		if c.HasCoreDNS() {
			// CoreDNS is the first pod that gets its address from vethroute.
			c.kubectl(4*time.Minute, "-n", "kube-system", "rollout", "status", "deployment/coredns", "--timeout=230s")
		}
	})

	a := c.runPod("probe-a", w1.name, probeImage)
	a2 := c.runPod("probe-a2", w1.name, probeImage)
	b := c.runPod("probe-b", w2.name, probeImage)
	onCP := c.runPod("probe-cp", cp.name, probeImage)
	byName := map[string]node{w1.name: w1, w2.name: w2, cp.name: cp}
	for _, p := range []pod{a, a2, b, onCP} {
		for _, f := range families {
			cidr := byName[p.node].podCIDRs[f.name]
			if ip := p.ips[f.name]; ip == nil || !cidr.Contains(ip) {
				t.Errorf("pod %s on %s has %s address %v, want one inside the node's pod CIDR %s", p.name, p.node, f.name, ip, cidr)
			}
		}
	}

	// Through one router (the shared node) the ttl drops by one, through
	// two (source node, then destination node) by two: 64 - 2 = 62, the
	// article's ping across its two routers. IPv6's hop limit counts the
	// same way.
	for _, f := range families {
		for _, tc := range []struct {
			name     string
			from, to pod
			ttl      string
		}{
			{"same node", a, a2, "ttl=63"},
			{"worker to worker", a, b, "ttl=62"},
			{"worker to control plane", b, onCP, "ttl=62"},
			{"control plane to worker", onCP, a, "ttl=62"},
		} {
			t.Run(f.name+" ping "+tc.name, func(t *testing.T) {
				dst := tc.to.ips[f.name].String()
				out := c.ping(tc.from, dst)
				if !strings.Contains(out, tc.ttl) {
					t.Fatalf("ping %s (%s) -> %s (%s) at %s: want %s in\n%s", tc.from.name, tc.from.node, tc.to.name, tc.to.node, dst, tc.ttl, out)
				}
				for _, line := range strings.Split(out, "\n") {
					if strings.Contains(line, tc.ttl) {
						t.Logf("%s -> %s (%s): %s", tc.from.name, tc.to.name, dst, strings.TrimSpace(line))
						break
					}
				}
			})
		}
	}

	t.Run("pod to API server", func(t *testing.T) {
		for _, p := range []pod{a, b, onCP} {
			out, err := c.Kubectl(nil, time.Minute, "exec", p.name, "--", "/probe")
			if err != nil || strings.TrimSpace(out) == "" {
				t.Errorf("pod %s on %s: /version through the kubernetes service: %v\n%s", p.name, p.node, err, out)
			}
		}
	})

	t.Run("pod to CoreDNS through the kube-dns service", func(t *testing.T) {
		if !c.HasCoreDNS() {
			// test/kind/build.sh builds CoreDNS into the node image; a
			// cluster without it cannot show service DNS through vethroute.
			t.Fatal("no CoreDNS in this cluster: the node image carries none (see test/kind/build.sh's CoreDNS step in its log)")
		}
		// The kube-dns VIP is DNATed to CoreDNS pods, which vethroute
		// addressed on some node: UDP through the service to pods, from
		// every node. busybox's nslookup uses the pod's resolv.conf server.
		for _, p := range []pod{a, b, onCP} {
			var out string
			for i := 0; i < 5; i++ {
				out, _ = c.Kubectl(nil, time.Minute, "exec", p.name, "--", "/bin/busybox", "nslookup", "kubernetes.default.svc.cluster.local")
				if kindcluster.Answers(out, kubernetesVIP) {
					break
				}
				time.Sleep(2 * time.Second)
			}
			if !kindcluster.Answers(out, kubernetesVIP) {
				t.Errorf("pod %s on %s: nslookup kubernetes.default.svc.cluster.local did not answer %s:\n%s", p.name, p.node, kubernetesVIP, out)
			}
		}
	})

	t.Run("MTU of the uplink", func(t *testing.T) {
		conf := c.docker(30*time.Second, "exec", w1.name, "cat", "/etc/cni/net.d/10-vethroute.conflist")
		if !strings.Contains(conf, fmt.Sprintf(`"mtu": %d`, clusterMTU)) {
			t.Errorf("%s's conflist does not carry the uplink's MTU %d:\n%s", w1.name, clusterMTU, conf)
		}
		for _, p := range []pod{a, b} {
			out, err := c.Kubectl(nil, time.Minute, "exec", p.name, "--", "/bin/busybox", "cat", "/sys/class/net/eth0/mtu")
			if err != nil || strings.TrimSpace(out) != strconv.Itoa(clusterMTU) {
				t.Errorf("pod %s on %s: eth0 MTU %q (%v), want %d", p.name, p.node, strings.TrimSpace(out), err, clusterMTU)
			}
		}
		// 10 MiB over TCP from a pod on one worker to a pod on the other,
		// each family: full-size segments cross both nodes' veths and the
		// Docker network.
		for _, f := range families {
			url := "http://" + net.JoinHostPort(b.ips[f.name].String(), "8080") + "/10MiB"
			out, err := c.Kubectl(nil, 2*time.Minute, "exec", a.name, "--", "/probe", "count", url)
			if err != nil || strings.TrimSpace(out) != strconv.Itoa(10<<20) {
				t.Errorf("%s: %s on %s fetching %s from %s on %s: %q, %v; want %d bytes", f.name, a.name, a.node, url, b.name, b.node, strings.TrimSpace(out), err, 10<<20)
			} else {
				t.Logf("%s: 10 MiB from %s to %s across nodes at MTU %d", f.name, b.name, a.name, clusterMTU)
			}
		}
	})

	t.Run("egress masqueraded to the node's address", func(t *testing.T) {
		c.checkEgress(t, a, w1.name, probeImage)
	})

	t.Run("hostPort from another node and from outside", func(t *testing.T) {
		hp := c.runPodPorts("probe-hostport", w1.name, probeImage, "\n      ports: [{containerPort: 8080, hostPort: 18080}]")
		name, _ := c.outside(t, probeImage)
		nodeIP := c.networkAddrs(w1.name)
		for _, f := range families {
			url := "http://" + net.JoinHostPort(nodeIP[f.name], "18080") + "/"
			for _, from := range []struct {
				who string
				cmd []string
			}{
				{"pod " + b.name + " on " + b.node, []string{"kubectl", "exec", b.name, "--", "/probe", "get", url}},
				{"the outside container", []string{"docker", "exec", name, "/probe", "get", url}},
			} {
				var out string
				var err error
				for i := 0; i < 10; i++ {
					if from.cmd[0] == "kubectl" {
						out, err = c.Kubectl(nil, time.Minute, from.cmd[1:]...)
					} else {
						out, err = c.Run(nil, time.Minute, "docker", from.cmd[1:]...)
					}
					if err == nil {
						break
					}
					time.Sleep(time.Second)
				}
				if err != nil || net.ParseIP(strings.TrimSpace(out)) == nil {
					t.Errorf("%s: %s cannot reach pod %s through hostPort %s: %v\n%s", f.name, from.who, hp.name, url, err, out)
				} else {
					t.Logf("%s: %s reached %s through %s (seen from %s)", f.name, from.who, hp.name, url, strings.TrimSpace(out))
				}
			}
		}
	})

	t.Run("runtime: cniVersion, and STATUS through the CRI to the Node", func(t *testing.T) {
		c.checkRuntime(t, w2)
	})

	t.Run("upgrade keeps pods connected", func(t *testing.T) {
		// A new image tag makes the DaemonSet roll every agent, one node
		// at a time, while a pod polls a pod on the other worker every
		// 100 ms over new TCP connections.
		newImage := c.PluginImage + "-upgrade"
		c.docker(time.Minute, "tag", c.PluginImage, newImage)
		t.Cleanup(func() { c.Run(nil, time.Minute, "docker", "image", "rm", newImage) })
		if err := c.LoadImage(newImage); err != nil {
			t.Fatal(err)
		}
		before := map[string]string{}
		for _, n := range []node{cp, w1, w2} {
			before[n.name] = c.nodeState(n.name)
		}
		if st := before[w1.name]; !strings.Contains(st, "/ips/") || !strings.Contains(st, " via ") || !strings.Contains(st, "vrt") {
			t.Fatalf("%s's state lacks reservations, agent routes or veths, so nothing would be compared:\n%s", w1.name, st)
		}
		t.Logf("%s before the upgrade:\n%s", w1.name, before[w1.name])
		url := "http://" + net.JoinHostPort(b.ips[families[0].name].String(), "8080") + "/"
		type result struct {
			out string
			err error
		}
		polled := make(chan result, 1)
		go func() {
			out, err := c.Kubectl(nil, 3*time.Minute, "exec", a.name, "--", "/probe", "poll", url, "100ms", "900")
			polled <- result{out, err}
		}()
		time.Sleep(5 * time.Second)
		c.kubectl(time.Minute, "-n", "kube-system", "set", "image", "daemonset/vethroute-agent", "install-cni-plugin="+newImage, "agent="+newImage)
		c.kubectl(4*time.Minute, "-n", "kube-system", "rollout", "status", "daemonset/vethroute-agent", "--timeout=230s")
		r := <-polled
		if r.err != nil {
			t.Fatalf("poll from %s to %s: %v\n%s", a.name, url, r.err, r.out)
		}
		var probes, failed int
		if _, err := fmt.Sscanf(lastLine(r.out), "%d probes, %d failed", &probes, &failed); err != nil || probes != 900 {
			t.Fatalf("poll output %q: %v", r.out, err)
		}
		t.Logf("%d probes at 100 ms across the rolling update, %d failed", probes, failed)
		if failed > 1 {
			t.Errorf("%d of %d probes from %s to %s failed during the upgrade, want at most 1:\n%s", failed, probes, a.name, b.name, r.out)
		}
		for _, n := range []node{cp, w1, w2} {
			if after := c.nodeState(n.name); after != before[n.name] {
				t.Errorf("%s changed across the upgrade:\nbefore:\n%s\nafter:\n%s", n.name, before[n.name], after)
			}
		}
	})

	t.Run("egress with --masquerade=false keeps the pod's address", func(t *testing.T) {
		c.kubectl(time.Minute, "-n", "kube-system", "patch", "daemonset/vethroute-agent", "--type=json",
			"-p", `[{"op":"add","path":"/spec/template/spec/containers/0/args/-","value":"--masquerade=false"}]`)
		c.kubectl(4*time.Minute, "-n", "kube-system", "rollout", "status", "daemonset/vethroute-agent", "--timeout=230s")
		if out, err := c.Run(nil, 30*time.Second, "docker", "exec", w1.name, "nft", "list", "table", "inet", "vethroute-agent"); err == nil {
			t.Fatalf("%s keeps the masquerade table with --masquerade=false:\n%s", w1.name, out)
		}
		name, dst := c.outside(t, probeImage)
		// Without masquerading the outside host must route the pod CIDRs
		// back through their nodes, as a network that sees pod addresses
		// would.
		for _, n := range []node{cp, w1, w2} {
			gw := c.networkAddrs(n.name)
			for _, f := range families {
				c.docker(30*time.Second, "exec", name, "/bin/busybox", "ip", "route", "add", n.podCIDRs[f.name].String(), "via", gw[f.name])
			}
		}
		for _, f := range families {
			url := "http://" + net.JoinHostPort(dst[f.name], "8080") + "/"
			var out string
			var err error
			for i := 0; i < 10; i++ {
				if out, err = c.Kubectl(nil, time.Minute, "exec", a.name, "--", "/probe", "get", url); err == nil {
					break
				}
				time.Sleep(time.Second)
			}
			if got := strings.TrimSpace(out); err != nil || got != a.ips[f.name].String() {
				t.Errorf("%s: %s saw pod %s's request from %q (%v), want the pod's own address %s", f.name, url, a.name, got, err, a.ips[f.name])
			} else {
				t.Logf("%s: with --masquerade=false, %s saw pod %s as %s", f.name, url, a.name, got)
			}
		}
	})

	t.Run("pod deleted and recreated", func(t *testing.T) {
		before := c.vethCount(w1.name)
		c.kubectl(2*time.Minute, "delete", "pod", a.name, "--wait=true", "--timeout=100s")
		if got := c.waitVeths(w1.name, before-1); got != before-1 {
			t.Errorf("node %s: %d vethroute host veths after deleting a pod, want %d (leak or early removal)", w1.name, got, before-1)
		}
		// The DEL went through the agent's reaper, not the in-process
		// fallback: the test above passes either way.
		if n := c.reaperDeleted(w1.name); n < 1 {
			t.Errorf("agent on %s reports %d reaper deletions after a pod was deleted, want at least 1", w1.name, n)
		}
		again := c.runPod(a.name, w1.name, probeImage)
		for _, f := range families {
			if out := c.ping(again, b.ips[f.name].String()); !strings.Contains(out, "ttl=62") {
				t.Errorf("recreated pod %s (%v) -> %s: want ttl=62 in\n%s", again.name, again.ips[f.name], b.ips[f.name], out)
			}
		}
		if got := c.waitVeths(w1.name, before); got != before {
			t.Errorf("node %s: %d vethroute host veths after recreating the pod, want %d", w1.name, got, before)
		}
	})

	t.Run("worker removed", func(t *testing.T) {
		var gone []string
		for _, f := range families {
			gone = append(gone, w2.podCIDRs[f.name].String())
		}
		routesTo := func(routes string) []string {
			var found []string
			for _, g := range gone {
				if strings.Contains(routes, g) {
					found = append(found, g)
				}
			}
			return found
		}
		for _, n := range []node{cp, w1} {
			if routes := c.agentRoutes(n.name); len(routesTo(routes)) != len(gone) {
				t.Fatalf("node %s lacks a proto %s route to %s's pod CIDRs %v before the removal:\n%s", n.name, agentRouteProto, w2.name, gone, routes)
			}
		}
		c.kubectl(2*time.Minute, "delete", "pod", b.name, "--wait=true", "--timeout=100s")
		c.kubectl(time.Minute, "delete", "node", w2.name)
		c.docker(time.Minute, "rm", "-f", w2.name)
		for _, n := range []node{cp, w1} {
			var routes string
			for i := 0; i < 60; i++ {
				if routes = c.agentRoutes(n.name); len(routesTo(routes)) == 0 {
					break
				}
				time.Sleep(time.Second)
			}
			if left := routesTo(routes); len(left) > 0 {
				t.Errorf("node %s still routes %s's pod CIDRs %v a minute after the node was deleted:\n%s", n.name, w2.name, left, routes)
			}
		}
		for _, f := range families {
			if out := c.ping(a2, onCP.ips[f.name].String()); !strings.Contains(out, "ttl=62") {
				t.Errorf("after the removal, %s -> %s (%s): want ttl=62 in\n%s", a2.name, onCP.name, f.name, out)
			}
		}
	})

	t.Run("uninstall on a drained node", func(t *testing.T) {
		// The documented procedure: the agent DaemonSet goes, the node is
		// drained of vethroute pods, deploy/uninstall runs.
		c.kubectl(time.Minute, "-n", "kube-system", "delete", "daemonset/vethroute-agent", "--wait=true", "--timeout=50s")
		c.kubectl(2*time.Minute, "-n", "kube-system", "wait", "--for=delete", "pod", "-l", "app.kubernetes.io/name=vethroute-agent", "--timeout=110s")
		c.kubectl(3*time.Minute, "drain", w1.name, "--ignore-daemonsets", "--delete-emptydir-data", "--force", "--timeout=170s")
		if n := c.waitVeths(w1.name, 0); n != 0 {
			t.Fatalf("%s still has %d vethroute veths after the drain", w1.name, n)
		}
		list := "ls /etc/cni/net.d /opt/cni/bin; ip -4 route show proto 86; ip -6 route show proto 86; ip -4 route show proto 87; ip -6 route show proto 87; nft list tables"
		before := c.docker(30*time.Second, "exec", w1.name, "sh", "-c", list)
		for _, want := range []string{"10-vethroute.conflist", "vethroute", "portmap", " via "} {
			if !strings.Contains(before, want) {
				t.Fatalf("%s lacks %q before the uninstall, so nothing would be checked:\n%s", w1.name, want, before)
			}
		}
		raw, err := os.ReadFile(filepath.Join(testutil.RepoRoot(t), "deploy", "uninstall", "daemonset.yaml"))
		if err != nil {
			t.Fatal(err)
		}
		c.kubectlIn([]byte(strings.ReplaceAll(string(raw), "image: vethroute:dev", "image: "+c.PluginImage)), time.Minute, "apply", "-f", "-")
		var logs string
		for i := 0; i < 90 && !strings.Contains(logs, "uninstall: done"); i++ {
			time.Sleep(2 * time.Second)
			podName, _ := c.Kubectl(nil, 30*time.Second, "-n", "kube-system", "get", "pods", "-l", "app.kubernetes.io/name=vethroute-uninstall",
				"--field-selector", "spec.nodeName="+w1.name, "-o", "jsonpath={.items[0].metadata.name}")
			if podName = strings.TrimSpace(podName); podName != "" {
				logs, _ = c.Kubectl(nil, 30*time.Second, "-n", "kube-system", "logs", podName)
			}
		}
		if !strings.Contains(logs, "uninstall: done") {
			t.Fatalf("the uninstall pod on %s did not finish:\n%s", w1.name, logs)
		}
		after := c.docker(30*time.Second, "exec", w1.name, "sh", "-c", list)
		t.Logf("%s before the uninstall:\n%s\nafter:\n%s\nuninstall log:\n%s", w1.name, before, after, logs)
		for _, gone := range []string{"10-vethroute.conflist", "vethroute\n", "portmap", " via ", "vethroute-agent"} {
			if strings.Contains(after, gone) {
				t.Errorf("%q is still on %s after the uninstall", strings.TrimSpace(gone), w1.name)
			}
		}
	})
}

// kubernetesVIP is the kubernetes service's address: the first of the
// primary service subnet (IPv4 in a dual-stack cluster).
var kubernetesVIP string

// family is one IP family of the cluster.
type family struct {
	name      string // "IPv4" or "IPv6"
	podSubnet string
}

// clusterMTU is the MTU of the cluster's Docker network.
const clusterMTU = 1400

// families are the cluster's IP families, IPv4 first; every per-family
// check runs once for each.
var families []family

func familiesOf(f kindcluster.Family) []family {
	var fs []family
	for _, s := range f.PodSubnets() {
		_, ipn, _ := net.ParseCIDR(s)
		fs = append(fs, family{familyOf(ipn.IP), s})
	}
	return fs
}

func familyOf(ip net.IP) string {
	if ip.To4() != nil {
		return "IPv4"
	}
	return "IPv6"
}

// newCluster creates the cluster of one control plane and two workers,
// and registers its deletion (after a log export when the test failed)
// with its Docker network.
func newCluster(t *testing.T, name string, fam kindcluster.Family, kindBin, nodeImage, probeArchive, pluginImage string) *cluster {
	kc, err := kindcluster.New(kindcluster.Options{
		Name: name, Workers: 2, Family: fam,
		// Below the 1500 the pods would get without detection, so the
		// test sees the agent take the uplink's MTU.
		MTU:  clusterMTU,
		Kind: kindBin, NodeImage: nodeImage, ProbeArchive: probeArchive, PluginImage: pluginImage,
		RepoRoot: testutil.RepoRoot(t),
		// Not the machine's ~/.kube/config: the test drives kubectl inside
		// the control-plane node and needs no kubeconfig of its own.
		Kubeconfig: filepath.Join(t.TempDir(), "kubeconfig"),
		Logf:       t.Logf,
	})
	if err != nil {
		t.Fatal(err)
	}
	c := &cluster{t: t, Cluster: kc}
	// A cluster left by a killed earlier run would make create fail.
	if err := c.Delete(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			logs := filepath.Join(os.TempDir(), fmt.Sprintf("vethroute-kind-logs-%d", time.Now().Unix()))
			t.Logf("kind export logs (%v): node logs are in %s", c.ExportLogs(logs), logs)
		}
		if err := c.Delete(); err != nil {
			t.Error(err)
		}
	})
	if err := c.Create(); err != nil {
		t.Fatal(err)
	}
	return c
}

func (c *cluster) docker(timeout time.Duration, args ...string) string {
	c.t.Helper()
	out, err := c.Run(nil, timeout, "docker", args...)
	if err != nil {
		c.t.Fatalf("docker %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

func (c *cluster) kubectl(timeout time.Duration, args ...string) string {
	c.t.Helper()
	return c.kubectlIn(nil, timeout, args...)
}

func (c *cluster) kubectlIn(stdin []byte, timeout time.Duration, args ...string) string {
	c.t.Helper()
	out, err := c.Kubectl(stdin, timeout, args...)
	if err != nil {
		c.t.Fatalf("kubectl %s: %v\n%s\n%s", strings.Join(args, " "), err, out, c.Describe())
	}
	return out
}

// node is a cluster node; nodes() returns them sorted by name: control
// plane, worker, worker2.
type node struct {
	name string
	// podCIDRs holds the node's spec.podCIDRs by family.
	podCIDRs map[string]*net.IPNet
}

func (c *cluster) nodes() []node {
	c.t.Helper()
	out := c.kubectl(30*time.Second, "get", "nodes", "--sort-by=.metadata.name", "-o",
		`jsonpath={range .items[*]}{.metadata.name} {.spec.podCIDRs[*]}{"\n"}{end}`)
	var nodes []node
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		fields := strings.Fields(line)
		if len(fields) == 0 {
			continue
		}
		n := node{name: fields[0], podCIDRs: map[string]*net.IPNet{}}
		for _, cidr := range fields[1:] {
			if _, ipn, err := net.ParseCIDR(cidr); err == nil {
				n.podCIDRs[familyOf(ipn.IP)] = ipn
			}
		}
		nodes = append(nodes, n)
	}
	return nodes
}

// pod is a running probe pod.
type pod struct {
	name, node string
	// ips holds the pod's status.podIPs by family.
	ips map[string]net.IP
}

// runPod starts a probe pod pinned to a node (tolerating the control
// plane's taint) and waits until it is Ready with an address.
func (c *cluster) runPod(name, nodeName, image string) pod {
	c.t.Helper()
	return c.runPodPorts(name, nodeName, image, "")
}

// runPodPorts is runPod with extra YAML for the container (its ports).
func (c *cluster) runPodPorts(name, nodeName, image, ports string) pod {
	c.t.Helper()
	manifest := fmt.Sprintf(`apiVersion: v1
kind: Pod
metadata:
  name: %s
  labels: {app: vethroute-probe}
spec:
  nodeName: %s
  tolerations: [{operator: Exists}]
  terminationGracePeriodSeconds: 1
  containers:
    - name: probe
      image: %s
      imagePullPolicy: Never
      # Every probe pod also serves its caller's address and 10 MiB on
      # port 8080 (probe source-addr), for the egress and MTU checks.
      command: [/bin/busybox, sh, -c, "/probe source-addr :8080 & exec /bin/busybox sleep 3600"]%s
`, name, nodeName, image, ports)
	c.kubectlIn([]byte(manifest), time.Minute, "apply", "-f", "-")
	c.kubectl(3*time.Minute, "wait", "--for=condition=Ready", "pod/"+name, "--timeout=170s")
	out := c.kubectl(30*time.Second, "get", "pod", name, "-o", "jsonpath={.status.podIPs[*].ip}")
	p := pod{name: name, node: nodeName, ips: map[string]net.IP{}}
	for _, s := range strings.Fields(out) {
		if ip := net.ParseIP(s); ip != nil {
			p.ips[familyOf(ip)] = ip
		}
	}
	if len(p.ips) != len(families) {
		c.t.Fatalf("pod %s on %s: pod IPs %q, want one per family", name, nodeName, out)
	}
	return p
}

// outside starts a plain container on the cluster's Docker network, not a
// node, that answers HTTP on port 8080 with the caller's address (probe
// source-addr), and returns its name and its address per family. Its
// default routes are removed before it serves, so a reply to a pod address
// has no route and can never reach this machine's routing.
func (c *cluster) outside(t *testing.T, image string) (string, map[string]string) {
	t.Helper()
	name := c.Name + "-outside"
	c.docker(time.Minute, "rm", "-f", name)
	t.Cleanup(func() { c.Run(nil, time.Minute, "docker", "rm", "-f", name) })
	if out, err := c.Run(nil, 3*time.Minute, "docker", "load", "-i", c.ProbeArchive); err != nil {
		t.Fatalf("docker load %s: %v\n%s", c.ProbeArchive, err, out)
	}
	c.docker(time.Minute, "run", "-d", "--name", name, "--network", c.Network, "--cap-add", "NET_ADMIN",
		"--entrypoint", "/bin/busybox", image, "sh", "-c",
		"ip -4 route del default; ip -6 route del default; ip -4 route | grep -q default && exit 1; ip -6 route | grep -q default && exit 1; exec /probe source-addr :8080")
	if routes := c.docker(30*time.Second, "exec", name, "/bin/busybox", "ip", "route"); strings.Contains(routes, "default") {
		t.Fatalf("the outside container still has a default route:\n%s", routes)
	}
	return name, c.networkAddrs(name)
}

// networkAddrs returns a container's addresses on the cluster's Docker
// network, per family.
func (c *cluster) networkAddrs(container string) map[string]string {
	c.t.Helper()
	inspect := func(field string) string {
		return strings.TrimSpace(c.docker(30*time.Second, "inspect", "-f", "{{(index .NetworkSettings.Networks \""+c.Network+"\")."+field+"}}", container))
	}
	return map[string]string{"IPv4": inspect("IPAddress"), "IPv6": inspect("GlobalIPv6Address")}
}

// checkEgress has a pod on nodeName ask the outside container over each
// family: the answer must be the node's address on that network, as the
// agent's default masquerading rewrites it.
func (c *cluster) checkEgress(t *testing.T, from pod, nodeName, image string) {
	t.Helper()
	_, dst := c.outside(t, image)
	// The node's addresses on the same network are what masquerading
	// must show.
	nodeIP := c.networkAddrs(nodeName)
	for _, f := range families {
		if dst[f.name] == "" || nodeIP[f.name] == "" {
			t.Fatalf("%s: egress container address %q, node %s address %q on network %s", f.name, dst[f.name], nodeName, nodeIP[f.name], c.Network)
		}
		url := "http://" + net.JoinHostPort(dst[f.name], "8080") + "/"
		var out string
		var err error
		for i := 0; i < 10; i++ {
			if out, err = c.Kubectl(nil, time.Minute, "exec", from.name, "--", "/probe", "get", url); err == nil {
				break
			}
			time.Sleep(time.Second)
		}
		if err != nil {
			t.Fatalf("%s: pod %s on %s cannot reach %s outside the cluster: %v\n%s", f.name, from.name, nodeName, url, err, out)
		}
		if got := strings.TrimSpace(out); got != nodeIP[f.name] {
			t.Errorf("%s: %s saw the request from %s, want the node's address %s (pod %s)", f.name, url, got, nodeIP[f.name], from.ips[f.name])
		} else {
			t.Logf("%s: pod %s (%s) reached %s as %s", f.name, from.name, from.ips[f.name], url, got)
		}
	}
}

// nodeState lists what a pod's connectivity rests on, on one node: the
// agent's routes, vethroute's host veths and the IPAM reservations (each a
// symlink naming its owner or addresses, pkg/ipam's store).
func (c *cluster) nodeState(nodeName string) string {
	c.t.Helper()
	return c.docker(30*time.Second, "exec", nodeName, "sh", "-c",
		"ip -4 route show proto 87; ip -6 route show proto 87; ip -o link show group "+vethGroup+" | cut -d: -f2 | cut -d@ -f1; "+
			"find /var/lib/cni/vethroute -path '*/ips/*' -o -path '*/owners/*' | sort | while read -r f; do echo \"$f -> $(readlink \"$f\")\"; done")
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}

// ping pings dst from inside a pod and returns the output; ping's own
// failure is left to the caller's check of the ttl.
func (c *cluster) ping(from pod, dst string) string {
	out, err := c.Kubectl(nil, time.Minute, "exec", from.name, "--", "/bin/busybox", "ping", "-c", "3", "-W", "3", dst)
	if err != nil {
		out += fmt.Sprintf("\n(ping: %v)", err)
	}
	return out
}

// vethCount counts vethroute's host-side veths on a node.
func (c *cluster) vethCount(nodeName string) int {
	c.t.Helper()
	out := c.docker(30*time.Second, "exec", nodeName, "ip", "-o", "link", "show", "group", vethGroup)
	n := 0
	for _, l := range strings.Split(out, "\n") {
		if strings.TrimSpace(l) != "" {
			n++
		}
	}
	return n
}

// waitVeths waits up to 30 s for a node's vethroute veth count to reach
// want (the kubelet tears a sandbox down just after the API says the pod
// is gone) and returns the last count.
func (c *cluster) waitVeths(nodeName string, want int) int {
	c.t.Helper()
	got := c.vethCount(nodeName)
	for i := 0; i < 30 && got != want; i++ {
		time.Sleep(time.Second)
		got = c.vethCount(nodeName)
	}
	return got
}

// reaperDeleted reads vethroute_agent_reaper_requests_total{result="deleted"}
// from the agent on nodeName, through the API server's proxy to its pod.
func (c *cluster) reaperDeleted(nodeName string) int {
	c.t.Helper()
	pod := strings.TrimSpace(c.kubectl(time.Minute, "get", "pods", "-n", "kube-system", "-l", "app.kubernetes.io/name=vethroute-agent",
		"--field-selector", "spec.nodeName="+nodeName, "-o", "jsonpath={.items[0].metadata.name}"))
	metrics := c.kubectl(time.Minute, "get", "--raw", "/api/v1/namespaces/kube-system/pods/"+pod+":9387/proxy/metrics")
	for _, line := range strings.Split(metrics, "\n") {
		if v, ok := strings.CutPrefix(line, `vethroute_agent_reaper_requests_total{result="deleted"} `); ok {
			n, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			if err != nil {
				c.t.Fatalf("metric line %q: %v", line, err)
			}
			return int(n)
		}
	}
	c.t.Fatalf("agent %s exports no reaper metric:\n%s", pod, kindcluster.LastLines(metrics, 20))
	return 0
}

// agentRoutes lists the agent's routes of both families in a node's main
// table.
func (c *cluster) agentRoutes(nodeName string) string {
	c.t.Helper()
	return c.docker(30*time.Second, "exec", nodeName, "sh", "-c",
		"ip -4 route show proto "+agentRouteProto+"; ip -6 route show proto "+agentRouteProto)
}

func TestMain(m *testing.M) { testutil.Main(m) }
