//go:build linux

package agent

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"

	"github.com/vethroute/vethroute/internal/testutil"
	"github.com/vethroute/vethroute/test/k8s/kubeapi"
)

// policyPod is a container behind a vethroute veth and the Pod object
// that names it in the API.
type policyPod struct {
	name string
	ns   ns.NetNS
	ip   string
}

// TestAgentNetworkPolicy is issue 18's integration test: the agents of two
// routers enforce NetworkPolicies applied through a real API server on
// real TCP and UDP traffic between containers behind vethroute veths,
// within a node and across nodes; the node itself (kubelet probes) always
// reaches its pods; and deleting a policy restores traffic within 1 s.
func TestAgentNetworkPolicy(t *testing.T) {
	testutil.RequireRoot(t)
	ctx := context.Background()
	agentBin := testutil.AgentBinary(t)
	portmap := testutil.ReferencePlugins(t, "portmap")
	r1 := &router{name: "router01", node: testutil.NewNode(t, portmap), confDir: t.TempDir()}
	r2 := &router{name: "router02", node: testutil.NewNode(t, portmap), confDir: t.TempDir()}
	server := &policyPod{name: "server", ns: testutil.NewNS(t), ip: "192.168.0.1"}
	client := &policyPod{name: "client", ns: testutil.NewNS(t), ip: "192.168.0.2"}
	other := &policyPod{name: "other", ns: testutil.NewNS(t), ip: "192.168.0.3"}
	remote := &policyPod{name: "remote", ns: testutil.NewNS(t), ip: "10.0.0.1"}

	srv := kubeapi.Start(t)
	cs, err := kubernetes.NewForConfig(srv.Config)
	if err != nil {
		t.Fatal(err)
	}
	kubeconfig := agentKubeconfig(t, srv, cs)
	testutil.MustRunIn(t, r1.node.NS, "ip", "link", "add", "gw01-veth1", "type", "veth", "peer", "name", "gw02-veth0", "netns", testutil.NSName(r2.node.NS))
	testutil.MustRunIn(t, r1.node.NS, "ip", "addr", "add", "172.16.0.1/24", "dev", "gw01-veth1")
	testutil.MustRunIn(t, r1.node.NS, "ip", "link", "set", "gw01-veth1", "up")
	testutil.MustRunIn(t, r2.node.NS, "ip", "addr", "add", "172.16.0.2/24", "dev", "gw02-veth0")
	testutil.MustRunIn(t, r2.node.NS, "ip", "link", "set", "gw02-veth0", "up")
	apiURL, err := url.Parse(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	apiHost := apiURL.Host
	for _, r := range []*router{r1, r2} {
		testutil.ForwardTCP(t, r.node.NS, apiHost, apiHost)
	}
	createNode(t, cs, "router01", "192.168.0.0/24", "172.16.0.1")
	createNode(t, cs, "router02", "10.0.0.0/24", "172.16.0.2")
	for _, r := range []*router{r1, r2} {
		r.agent = testutil.StartDaemon(t, r.node.NS, agentBin,
			"--kubeconfig="+kubeconfig, "--node-name="+r.name, "--cni-conf-dir="+r.confDir,
			"--ipam-data-dir="+r.node.DataDir, "--resync-period=1s", "--health-addr="+healthAddr,
			"--log-level=debug", "--cluster-cidrs=10.0.0.0/12,192.168.0.0/16", "--masquerade=false")
	}
	conf1, conf2 := waitConfList(t, r1), waitConfList(t, r2)
	waitRoutes(t, r1, "10.0.0.0/24 via 172.16.0.2 dev gw01-veth1")
	waitRoutes(t, r2, "192.168.0.0/24 via 172.16.0.1 dev gw02-veth0")
	for _, p := range []*policyPod{server, client, other} {
		addContainer(t, r1, conf1, p.ns, p.name, p.ip+"/24")
	}
	addContainer(t, r2, conf2, remote.ns, remote.name, remote.ip+"/24")

	// The Pods as a kubelet would report them, in namespace np.
	const namespace = "np"
	if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: namespace}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	// No controller manager runs: the ServiceAccount admission needs the
	// namespace's default ServiceAccount made by hand.
	if _, err := cs.CoreV1().ServiceAccounts(namespace).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "default"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	createPod(t, cs, namespace, server, "router01", map[string]string{"app": "server"})
	createPod(t, cs, namespace, client, "router01", map[string]string{"role": "client"})
	createPod(t, cs, namespace, other, "router01", map[string]string{"role": "other"})
	createPod(t, cs, namespace, remote, "router02", map[string]string{"role": "client"})

	serveTCP(t, server.ns, server.ip+":8080")
	serveUDP(t, server.ns, server.ip+":5353")
	serveTCP(t, remote.ns, remote.ip+":8080")

	type flow struct {
		from  *policyPod
		proto string
		to    string
	}
	tcpServer := func(from *policyPod) flow { return flow{from, "tcp", server.ip + ":8080"} }
	udpServer := func(from *policyPod) flow { return flow{from, "udp", server.ip + ":5353"} }
	tcpRemote := func(from *policyPod) flow { return flow{from, "tcp", remote.ip + ":8080"} }
	// expect waits until every flow gets the expected verdict: policies
	// reach the kernel asynchronously.
	expect := func(what string, flows map[flow]bool) {
		t.Helper()
		waitUntil(t, what, func() (bool, string) {
			var wrong []string
			for f, allowed := range flows {
				err := try(f.from.ns, f.proto, f.to)
				if (err == nil) != allowed {
					wrong = append(wrong, fmt.Sprintf("%s -> %s/%s: allowed=%v want %v (%v)", f.from.name, f.to, f.proto, err == nil, allowed, err))
				}
			}
			return len(wrong) == 0, strings.Join(wrong, "\n") + "\n" + testutil.MustRunIn(t, r1.node.NS, "nft", "list", "table", "inet", "vethroute-netpol") + tail(r1.agent.Log(), 20)
		})
	}

	// 1. No policy: everything flows.
	expect("traffic without policies", map[flow]bool{
		tcpServer(client): true, tcpServer(other): true, tcpServer(remote): true,
		udpServer(client): true, udpServer(other): true, tcpRemote(other): true,
	})

	// 2. Ingress to the server only from role=client pods (this node's
	// and the other node's), TCP 8080 by its port name, UDP by number.
	udp := corev1.ProtocolUDP
	ingress := &networkingv1.NetworkPolicy{
		ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: "server-ingress"},
		Spec: networkingv1.NetworkPolicySpec{
			PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"app": "server"}},
			Ingress: []networkingv1.NetworkPolicyIngressRule{{
				From: []networkingv1.NetworkPolicyPeer{{PodSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"role": "client"}}}},
				Ports: []networkingv1.NetworkPolicyPort{
					{Port: ptr(intstr.FromString("http"))},
					{Protocol: &udp, Port: ptr(intstr.FromInt32(5353))},
				},
			}},
		},
	}
	if _, err := cs.NetworkingV1().NetworkPolicies(namespace).Create(ctx, ingress, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	expect("server ingress from role=client only", map[flow]bool{
		tcpServer(client): true, tcpServer(remote): true, udpServer(client): true,
		tcpServer(other): false, udpServer(other): false,
		tcpRemote(other): true, // other is not isolated for egress
	})
	// The node itself (a kubelet's probe) still reaches the isolated pod.
	if err := try(r1.node.NS, "tcp", server.ip+":8080"); err != nil {
		t.Errorf("router01 cannot reach its isolated pod: %v", err)
	}

	// 3. Egress of other: only DNS-like UDP anywhere; TCP to the remote
	// pod is cut, while the server's ingress still refuses it.
	egress := &networkingv1.NetworkPolicy{
		ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: "other-egress"},
		Spec: networkingv1.NetworkPolicySpec{
			PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"role": "other"}},
			PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeEgress},
			Egress: []networkingv1.NetworkPolicyEgressRule{{
				Ports: []networkingv1.NetworkPolicyPort{{Protocol: &udp, Port: ptr(intstr.FromInt32(53))}},
			}},
		},
	}
	if _, err := cs.NetworkingV1().NetworkPolicies(namespace).Create(ctx, egress, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	expect("other's egress cut", map[flow]bool{tcpRemote(other): false, tcpRemote(client): true, tcpServer(client): true})

	// 4. Relabeling other as a client lets it in again at the server's
	// ingress, but its own egress policy (selected by role=other) no
	// longer applies either.
	p, err := cs.CoreV1().Pods(namespace).Get(ctx, other.name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	p.Labels = map[string]string{"role": "client"}
	if p, err = cs.CoreV1().Pods(namespace).Update(ctx, p, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	expect("relabeled other", map[flow]bool{tcpServer(other): true, udpServer(other): true, tcpRemote(other): true})
	p.Labels = map[string]string{"role": "other"}
	if _, err := cs.CoreV1().Pods(namespace).Update(ctx, p, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	expect("other labeled back", map[flow]bool{tcpServer(other): false, tcpRemote(other): false})

	// 5. Deleting the policies restores traffic within 1 s.
	for _, name := range []string{"server-ingress", "other-egress"} {
		if err := cs.NetworkingV1().NetworkPolicies(namespace).Delete(ctx, name, metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	deleted := time.Now()
	for {
		errServer, errRemote := try(other.ns, "tcp", server.ip+":8080"), try(other.ns, "tcp", remote.ip+":8080")
		if errServer == nil && errRemote == nil {
			t.Logf("traffic restored %v after the policies' deletion", time.Since(deleted).Round(time.Millisecond))
			break
		}
		if time.Since(deleted) > time.Second {
			t.Fatalf("traffic not restored 1 s after deleting the policies: to server %v, to remote %v\n%s", errServer, errRemote,
				testutil.MustRunIn(t, r1.node.NS, "nft", "list", "table", "inet", "vethroute-netpol"))
		}
		time.Sleep(20 * time.Millisecond)
	}
	if out := testutil.MustRunIn(t, r1.node.NS, "nft", "list", "table", "inet", "vethroute-netpol"); strings.Contains(out, "chain ingress-") || strings.Contains(out, "chain egress-") {
		t.Errorf("per-pod chains left without policies:\n%s", out)
	}
	metrics := get(t, r1, "/metrics")
	for _, want := range []string{"vethroute_agent_network_policy_rules 3", "vethroute_agent_network_policy_syncs_total{result=\"incremental\"}", "vethroute_agent_network_policy_sync_duration_seconds_count"} {
		if !strings.Contains(metrics, want) {
			t.Errorf("router01 /metrics lacks %q", want)
		}
	}
	for _, r := range []*router{r1, r2} {
		if code, err := r.agent.Stop(15 * time.Second); err != nil || code != 0 {
			t.Errorf("%s's agent exit code %d (%v)\n%s", r.name, code, err, r.agent.Log())
		}
		if strings.Contains(r.agent.Log(), "WARNING: DATA RACE") {
			t.Errorf("%s's agent reported a data race:\n%s", r.name, r.agent.Log())
		}
	}
}

func ptr[T any](v T) *T { return &v }

// createPod creates the Pod of a container with the address the plugin
// gave it, Running, with container port "http" 8080, as a kubelet reports.
func createPod(t *testing.T, cs *kubernetes.Clientset, namespace string, p *policyPod, node string, lbl map[string]string) {
	t.Helper()
	ctx := context.Background()
	pod, err := cs.CoreV1().Pods(namespace).Create(ctx, &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: p.name, Labels: lbl},
		Spec: corev1.PodSpec{NodeName: node, Containers: []corev1.Container{{
			Name: "c", Image: "none", Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 8080}},
		}}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("create pod %s: %v", p.name, err)
	}
	pod.Status = corev1.PodStatus{Phase: corev1.PodRunning, PodIP: p.ip, PodIPs: []corev1.PodIP{{IP: p.ip}}}
	if _, err := cs.CoreV1().Pods(namespace).UpdateStatus(ctx, pod, metav1.UpdateOptions{}); err != nil {
		t.Fatalf("set status of pod %s: %v", p.name, err)
	}
}

// serveTCP accepts connections in netns and closes them: a connect is the
// verdict.
func serveTCP(t *testing.T, netns ns.NetNS, addr string) {
	t.Helper()
	ln := testutil.ListenIn(t, netns, addr)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
}

// serveUDP echoes datagrams in netns until the test ends.
func serveUDP(t *testing.T, netns ns.NetNS, addr string) {
	t.Helper()
	var pc net.PacketConn
	if err := netns.Do(func(ns.NetNS) (err error) {
		pc, err = net.ListenPacket("udp", addr)
		return err
	}); err != nil {
		t.Fatalf("listen udp %s: %v", addr, err)
	}
	t.Cleanup(func() { pc.Close() })
	go func() {
		buf := make([]byte, 64)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			_, _ = pc.WriteTo(buf[:n], from)
		}
	}()
}

// try makes one TCP connection or one UDP echo from netns, bounded at
// 300 ms: a dropped packet is a timeout.
func try(netns ns.NetNS, proto, addr string) error {
	return netns.Do(func(ns.NetNS) error {
		c, err := net.DialTimeout(proto, addr, 300*time.Millisecond)
		if err != nil {
			return err
		}
		defer c.Close()
		if proto != "udp" {
			return nil
		}
		if err := c.SetDeadline(time.Now().Add(300 * time.Millisecond)); err != nil {
			return err
		}
		if _, err := c.Write([]byte("ping")); err != nil {
			return err
		}
		buf := make([]byte, 8)
		n, err := c.Read(buf)
		if err != nil {
			return err
		}
		if string(buf[:n]) != "ping" {
			return errors.New("wrong echo")
		}
		return nil
	})
}
