//go:build linux

// Package agent tests vethroute-agent end to end: the real binary, one per
// node namespace, against a real kube-apiserver, with the vethroute plugin
// attaching containers through the configuration the agent wrote, in the
// article's two-router topology.
package agent

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/plugins/pkg/ns"
	appsv1 "k8s.io/api/apps/v1"
	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"

	"github.com/vethroute/vethroute/deploy"
	"github.com/vethroute/vethroute/internal/testutil"
	"github.com/vethroute/vethroute/test/k8s/kubeapi"
)

const (
	// healthAddr is where each agent serves; every node namespace has its
	// own loopback, so they can share it.
	healthAddr = "127.0.0.1:9387"
	// waitTimeout bounds every wait for the agents to converge. Generous:
	// after the API server restart, client-go's relist backoff alone can
	// take tens of seconds on a loaded machine.
	waitTimeout = 90 * time.Second
)

// router is a node namespace running vethroute-agent.
type router struct {
	name    string
	node    *testutil.Node
	confDir string
	agent   *testutil.Daemon
}

func TestAgentTwoRouters(t *testing.T) {
	testutil.RequireRoot(t)
	ctx := context.Background()
	agentBin := testutil.AgentBinary(t)

	// Every namespace is made before the API server starts: making one
	// ends an OS thread (testutils.NewNS), and kubeapi's processes carry
	// Pdeathsig, which the kernel sends when the thread that forked them
	// ends, not the test process.
	// The conflist chains portmap (--chain's default) after vethroute.
	portmap := testutil.ReferencePlugins(t, "portmap")
	r1 := &router{name: "router01", node: testutil.NewNode(t, portmap), confDir: t.TempDir()}
	r2 := &router{name: "router02", node: testutil.NewNode(t, portmap), confDir: t.TempDir()}
	outside := testutil.NewNS(t)
	ns01, ns02 := testutil.NewNS(t), testutil.NewNS(t)

	start := time.Now()
	step := func(what string) { t.Logf("%6.1fs %s", time.Since(start).Seconds(), what) }
	srv := kubeapi.Start(t)
	step("API server up")
	cs, err := kubernetes.NewForConfig(srv.Config)
	if err != nil {
		t.Fatal(err)
	}
	// The agents run with the ServiceAccount and ClusterRole of deploy/,
	// so missing permissions fail this test.
	kubeconfig := agentKubeconfig(t, srv, cs)

	// The article's routers: router01 -- veth -- router02.
	testutil.MustRunIn(t, r1.node.NS, "ip", "link", "add", "gw01-veth1", "type", "veth", "peer", "name", "gw02-veth0", "netns", testutil.NSName(r2.node.NS))
	testutil.MustRunIn(t, r1.node.NS, "ip", "addr", "add", "172.16.0.1/24", "dev", "gw01-veth1")
	testutil.MustRunIn(t, r1.node.NS, "ip", "link", "set", "gw01-veth1", "up")
	testutil.MustRunIn(t, r2.node.NS, "ip", "addr", "add", "172.16.0.2/24", "dev", "gw02-veth0")
	testutil.MustRunIn(t, r2.node.NS, "ip", "link", "set", "gw02-veth0", "up")
	// An "outside" host behind router01 that knows no pod CIDR: only a
	// masqueraded packet can get an answer from it.
	testutil.MustRunIn(t, r1.node.NS, "ip", "link", "add", "gw01-ext", "type", "veth", "peer", "name", "ext0", "netns", testutil.NSName(outside))
	testutil.MustRunIn(t, r1.node.NS, "ip", "addr", "add", "172.31.0.1/24", "dev", "gw01-ext")
	testutil.MustRunIn(t, r1.node.NS, "ip", "link", "set", "gw01-ext", "up")
	testutil.MustRunIn(t, outside, "ip", "addr", "add", "172.31.0.2/24", "dev", "ext0")
	// A second address of the outside host, in router01's
	// --no-masquerade-cidrs: pods reach it with their own address.
	testutil.MustRunIn(t, outside, "ip", "addr", "add", "172.31.0.130/24", "dev", "ext0")
	testutil.MustRunIn(t, outside, "ip", "link", "set", "ext0", "up")

	// The API server listens on the machine's loopback; each node
	// namespace reaches it through a relay on its own loopback.
	apiURL, err := url.Parse(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range []*router{r1, r2} {
		testutil.ForwardTCP(t, r.node.NS, apiURL.Host, apiURL.Host)
	}

	createNode(t, cs, "router01", "192.168.0.0/24", "172.16.0.1")
	createNode(t, cs, "router02", "10.0.0.0/24", "172.16.0.2")

	for _, r := range []*router{r1, r2} {
		args := []string{
			"--kubeconfig=" + kubeconfig,
			"--node-name=" + r.name,
			"--cni-conf-dir=" + r.confDir,
			"--ipam-data-dir=" + r.node.DataDir,
			"--resync-period=1s",
			"--health-addr=" + healthAddr,
			"--log-level=debug",
			"--cluster-cidrs=10.0.0.0/12,192.168.0.0/16",
		}
		if r == r1 {
			args = append(args, "--no-masquerade-cidrs=172.31.0.128/25")
		} else {
			args = append(args, "--masquerade=false")
		}
		r.agent = testutil.StartDaemon(t, r.node.NS, agentBin, args...)
	}

	step("agents started")
	// 1. Each agent writes its node's conflist and the route to the other.
	conf1 := waitConfList(t, r1)
	conf2 := waitConfList(t, r2)
	checkConfList(t, conf1, r1, "192.168.0.0/24", "192.168.0.254")
	checkConfList(t, conf2, r2, "10.0.0.0/24", "10.0.0.254")
	waitRoutes(t, r1, "10.0.0.0/24 via 172.16.0.2 dev gw01-veth1")
	waitRoutes(t, r2, "192.168.0.0/24 via 172.16.0.1 dev gw02-veth0")
	for _, r := range []*router{r1, r2} {
		waitHTTP(t, r, "/readyz", "ok")
		waitHTTP(t, r, "/healthz", "ok")
	}

	step("conflists, routes and readiness")
	// 2. A container on each node through the plugin and the agent's
	// conflist; they talk across both routers: ttl=62, as in the article.
	addContainer(t, r1, conf1, ns01, "ns01", "192.168.0.1/24")
	addContainer(t, r2, conf2, ns02, "ns02", "10.0.0.1/24")
	requireTTL62(t, ns01, "10.0.0.1")
	requireTTL62(t, ns02, "192.168.0.1")

	// Masquerading on router01: the outside host answers a pod although
	// it has no route back to the pod CIDR.
	if out, err := testutil.Ping(t, ns01, "172.31.0.2", 2); err != nil {
		t.Fatalf("ns01 cannot reach the outside host through router01's masquerade: %v\n%s\n%s", err, out,
			testutil.MustRunIn(t, r1.node.NS, "nft", "list", "ruleset"))
	}
	// The exempt destination sees the pod's address, which it has no
	// route back to: no answer.
	if out, err := testutil.Ping(t, ns01, "172.31.0.130", 1); err == nil {
		t.Fatalf("ns01 got an answer from 172.31.0.130, which is in --no-masquerade-cidrs and has no route to the pod:\n%s", out)
	}
	if out, err := testutil.RunIn(t, r2.node.NS, 10*time.Second, "nft", "list", "table", "inet", "vethroute-agent"); err == nil {
		t.Errorf("router02 runs with --masquerade=false but has the masquerade table:\n%s", out)
	}
	nft := testutil.MustRunIn(t, r1.node.NS, "nft", "list", "table", "inet", "vethroute-agent")
	for _, want := range []string{"10.0.0.0/12", "192.168.0.0/16", "172.31.0.128/25", "masquerade"} {
		if !strings.Contains(nft, want) {
			t.Errorf("router01's masquerade table lacks %s:\n%s", want, nft)
		}
	}

	step("pods talk with ttl=62; masquerade works")
	// 3. The API server restarts; the agents keep running and pick up
	// what changes afterwards.
	pids := []int{r1.agent.Pid(), r2.agent.Pid()}
	srv.Restart(t)
	step("API server restarted")
	createNode(t, cs, "router03", "10.1.0.0/24", "172.16.0.3")
	createNode(t, cs, "router04", "10.2.0.0/24", "198.51.100.4")
	waitRoutes(t, r1, "10.0.0.0/24 via 172.16.0.2 dev gw01-veth1", "10.1.0.0/24 via 172.16.0.3 dev gw01-veth1")
	waitRoutes(t, r2, "10.1.0.0/24 via 172.16.0.3 dev gw02-veth0", "192.168.0.0/24 via 172.16.0.1 dev gw02-veth0")
	for i, r := range []*router{r1, r2} {
		if r.agent.Exited() || r.agent.Pid() != pids[i] {
			t.Fatalf("%s's agent did not survive the API server restart", r.name)
		}
	}

	step("router03's routes after the restart")
	// router04's InternalIP is on no subnet the routers are connected to:
	// each agent reports it with an Event and skips it.
	for _, r := range []*router{r1, r2} {
		waitEvent(t, cs, "router04", "InternalIPNotConnected", r.name)
		if !strings.Contains(r.agent.Log(), "InternalIPNotConnected") {
			t.Errorf("%s's agent did not log the unreachable InternalIP", r.name)
		}
	}

	step("unreachable router04 reported")
	// 4. A deleted node's routes disappear.
	if err := cs.CoreV1().Nodes().Delete(ctx, "router03", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	waitRoutes(t, r1, "10.0.0.0/24 via 172.16.0.2 dev gw01-veth1")
	waitRoutes(t, r2, "192.168.0.0/24 via 172.16.0.1 dev gw02-veth0")

	step("deleted router03's routes gone")
	// 5. A route deleted by hand comes back; routes the agent did not
	// create are never touched.
	testutil.MustRunIn(t, r1.node.NS, "ip", "route", "add", "10.5.0.0/24", "via", "172.16.0.2", "proto", "static")
	testutil.MustRunIn(t, r1.node.NS, "ip", "route", "del", "10.0.0.0/24", "proto", "87")
	waitRoutes(t, r1, "10.0.0.0/24 via 172.16.0.2 dev gw01-veth1")
	before := successfulReconciles(t, r1)
	waitUntil(t, "two more reconciles on router01", func() (bool, string) {
		n := successfulReconciles(t, r1)
		return n >= before+2, fmt.Sprintf("%d successful reconciles, started at %d", n, before)
	})
	if all := testutil.MustRunIn(t, r1.node.NS, "ip", "route", "show"); !strings.Contains(all, "10.5.0.0/24 via 172.16.0.2 dev gw01-veth1 proto static") {
		t.Errorf("the agent removed a route it did not create:\n%s", all)
	}
	requireTTL62(t, ns01, "10.0.0.1")

	step("hand-deleted route back, foreign route kept")
	metrics := get(t, r1, "/metrics")
	for _, want := range []string{
		"vethroute_agent_routes_programmed 1",
		"vethroute_agent_route_problems 1",
		"vethroute_agent_reconcile_duration_seconds_count",
		"vethroute_agent_last_successful_sync_timestamp_seconds",
		"vethroute_agent_reconcile_errors_total",
	} {
		if !strings.Contains(metrics, want) {
			t.Errorf("router01 /metrics lacks %q", want)
		}
	}

	// 6. SIGTERM: a clean exit that leaves the node's configuration and
	// routes in place for the pods.
	for _, r := range []*router{r1, r2} {
		code, err := r.agent.Stop(15 * time.Second)
		if err != nil || code != 0 {
			t.Errorf("%s's agent exit code %d (%v) on SIGTERM\n%s", r.name, code, err, r.agent.Log())
		}
		// make race runs this test with an agent built with -race.
		if strings.Contains(r.agent.Log(), "WARNING: DATA RACE") {
			t.Errorf("%s's agent reported a data race:\n%s", r.name, r.agent.Log())
		}
	}
	if _, err := os.Stat(filepath.Join(r1.confDir, "10-vethroute.conflist")); err != nil {
		t.Errorf("conflist removed on shutdown: %v", err)
	}
	requireTTL62(t, ns01, "10.0.0.1")
	step("agents stopped cleanly")
}

func TestMain(m *testing.M) { testutil.Main(m) }

// agentKubeconfig creates the ServiceAccount and RBAC of deploy/ for real
// and returns a kubeconfig holding a token of that ServiceAccount.
func agentKubeconfig(t *testing.T, srv *kubeapi.Server, cs *kubernetes.Clientset) string {
	t.Helper()
	ctx := context.Background()
	ms, err := deploy.Load()
	if err != nil {
		t.Fatal(err)
	}
	var sa *corev1.ServiceAccount
	for _, m := range ms {
		var err error
		switch o := m.Object.(type) {
		case *corev1.ServiceAccount:
			sa = o
			_, err = cs.CoreV1().ServiceAccounts(o.Namespace).Create(ctx, o, metav1.CreateOptions{})
		case *rbacv1.ClusterRole:
			_, err = cs.RbacV1().ClusterRoles().Create(ctx, o, metav1.CreateOptions{})
		case *rbacv1.ClusterRoleBinding:
			_, err = cs.RbacV1().ClusterRoleBindings().Create(ctx, o, metav1.CreateOptions{})
		case *rbacv1.Role:
			_, err = cs.RbacV1().Roles(o.Namespace).Create(ctx, o, metav1.CreateOptions{})
		case *rbacv1.RoleBinding:
			_, err = cs.RbacV1().RoleBindings(o.Namespace).Create(ctx, o, metav1.CreateOptions{})
		case *appsv1.DaemonSet:
			// The agents run as processes here, not as Pods.
		default:
			// A kind deploy/ gains must be granted here too, or this
			// test runs the agent with fewer rights than a cluster.
			t.Fatalf("%s: %s is not applied by this test; add it", m.File, m.GVK.Kind)
		}
		if err != nil {
			t.Fatalf("create %s from %s: %v", m.GVK.Kind, m.File, err)
		}
	}
	if sa == nil {
		t.Fatal("deploy/ has no ServiceAccount")
	}
	expiry := int64(3600)
	tok, err := cs.CoreV1().ServiceAccounts(sa.Namespace).CreateToken(ctx, sa.Name, &authenticationv1.TokenRequest{
		Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: &expiry},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("token for %s/%s: %v", sa.Namespace, sa.Name, err)
	}
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["test"] = &clientcmdapi.Cluster{Server: srv.URL, CertificateAuthorityData: srv.Config.CAData}
	cfg.AuthInfos["agent"] = &clientcmdapi.AuthInfo{Token: tok.Status.Token}
	cfg.Contexts["test"] = &clientcmdapi.Context{Cluster: "test", AuthInfo: "agent"}
	cfg.CurrentContext = "test"
	path := filepath.Join(t.TempDir(), "agent.kubeconfig")
	if err := clientcmd.WriteToFile(*cfg, path); err != nil {
		t.Fatal(err)
	}
	return path
}

func createNode(t *testing.T, cs *kubernetes.Clientset, name, podCIDR, internalIP string) {
	t.Helper()
	ctx := context.Background()
	n, err := cs.CoreV1().Nodes().Create(ctx, &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec:       corev1.NodeSpec{PodCIDR: podCIDR, PodCIDRs: []string{podCIDR}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("create node %s: %v", name, err)
	}
	// Status is a subresource: addresses are set as a kubelet would.
	n.Status.Addresses = []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: internalIP}, {Type: corev1.NodeHostName, Address: name}}
	if _, err := cs.CoreV1().Nodes().UpdateStatus(ctx, n, metav1.UpdateOptions{}); err != nil {
		t.Fatalf("set addresses of node %s: %v", name, err)
	}
}

// waitUntil polls cond until it holds or waitTimeout passes; cond returns
// what it saw, for the failure message.
func waitUntil(t *testing.T, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(waitTimeout)
	for {
		ok, saw := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %s, still waiting for %s; last saw:\n%s", waitTimeout, what, saw)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func waitConfList(t *testing.T, r *router) []byte {
	t.Helper()
	path := filepath.Join(r.confDir, "10-vethroute.conflist")
	var data []byte
	waitUntil(t, r.name+"'s conflist", func() (bool, string) {
		var err error
		data, err = os.ReadFile(path)
		return err == nil, fmt.Sprint(err) + "\n" + r.agent.Log()
	})
	return data
}

func checkConfList(t *testing.T, data []byte, r *router, subnet, gateway string) {
	t.Helper()
	var c struct {
		Plugins []struct {
			Type string `json:"type"`
			IPAM struct {
				Type   string `json:"type"`
				Ranges [][]struct {
					Subnet  string `json:"subnet"`
					Gateway string `json:"gateway"`
				} `json:"ranges"`
				DataDir string `json:"dataDir"`
			} `json:"ipam"`
		} `json:"plugins"`
	}
	if err := json.Unmarshal(data, &c); err != nil {
		t.Fatalf("%s's conflist: %v\n%s", r.name, err, data)
	}
	if len(c.Plugins) != 2 || c.Plugins[1].Type != "portmap" || c.Plugins[0].Type != "vethroute" || c.Plugins[0].IPAM.Type != "vethroute" ||
		len(c.Plugins[0].IPAM.Ranges) != 1 || c.Plugins[0].IPAM.Ranges[0][0].Subnet != subnet ||
		c.Plugins[0].IPAM.Ranges[0][0].Gateway != gateway || c.Plugins[0].IPAM.DataDir != r.node.DataDir {
		t.Errorf("%s's conflist does not carry %s gateway %s:\n%s", r.name, subnet, gateway, data)
	}
}

// agentRoutes returns the node's routes with the agent's protocol, both
// families, one per line without the protocol.
func agentRoutes(t *testing.T, r *router) []string {
	t.Helper()
	var out []string
	for _, fam := range []string{"-4", "-6"} {
		for _, l := range strings.Split(testutil.MustRunIn(t, r.node.NS, "ip", fam, "route", "show", "proto", "87"), "\n") {
			if l = strings.TrimSpace(l); l != "" {
				out = append(out, l)
			}
		}
	}
	slices.Sort(out)
	return out
}

func waitRoutes(t *testing.T, r *router, want ...string) {
	t.Helper()
	slices.Sort(want)
	waitUntil(t, fmt.Sprintf("%s's routes %q", r.name, want), func() (bool, string) {
		got := agentRoutes(t, r)
		return slices.Equal(got, want), strings.Join(got, "\n") + "\n" + tail(r.agent.Log(), 20)
	})
}

func addContainer(t *testing.T, r *router, conflist []byte, c ns.NetNS, id, wantAddr string) {
	t.Helper()
	l := r.node.ConfList(t, string(conflist))
	rt := testutil.RuntimeConf(id, c.Path(), "eth0")
	res, err := r.node.Add(l, rt)
	if err != nil {
		t.Fatalf("ADD %s on %s: %v", id, r.name, err)
	}
	t.Cleanup(func() {
		if err := r.node.Del(l, rt); err != nil {
			t.Errorf("DEL %s on %s: %v", id, r.name, err)
		}
	})
	cur, err := current.NewResultFromResult(res)
	if err != nil {
		t.Fatal(err)
	}
	if len(cur.IPs) != 1 || cur.IPs[0].Address.String() != wantAddr {
		t.Fatalf("%s got %v, want %s", id, cur.IPs, wantAddr)
	}
}

var ttlRE = regexp.MustCompile(`ttl=(\d+)`)

func requireTTL62(t *testing.T, from ns.NetNS, dst string) {
	t.Helper()
	out, err := testutil.Ping(t, from, dst, 2)
	if err != nil {
		t.Fatalf("ping %s: %v\n%s", dst, err, out)
	}
	for _, m := range ttlRE.FindAllStringSubmatch(out, -1) {
		if m[1] != "62" {
			t.Fatalf("ping %s crossed the wrong number of routers (want ttl=62):\n%s", dst, out)
		}
	}
	if !strings.Contains(out, "ttl=62") {
		t.Fatalf("ping %s shows no ttl:\n%s", dst, out)
	}
}

func waitEvent(t *testing.T, cs *kubernetes.Clientset, node, reason, host string) {
	t.Helper()
	sel := fields.Set{"involvedObject.kind": "Node", "involvedObject.name": node, "reason": reason}.String()
	waitUntil(t, fmt.Sprintf("event %s on node %s from %s", reason, node, host), func() (bool, string) {
		list, err := cs.CoreV1().Events(metav1.NamespaceDefault).List(context.Background(), metav1.ListOptions{FieldSelector: sel})
		if err != nil {
			return false, err.Error()
		}
		var saw []string
		for _, e := range list.Items {
			if e.Source.Component == "vethroute-agent" && e.Source.Host == host && e.Type == corev1.EventTypeWarning {
				return true, ""
			}
			saw = append(saw, e.Source.Host+": "+e.Message)
		}
		return false, strings.Join(saw, "\n")
	})
}

func get(t *testing.T, r *router, path string) string {
	t.Helper()
	body, code, err := tryGet(r, path)
	if err != nil || code != 200 {
		t.Fatalf("GET %s on %s: %d %v", path, r.name, code, err)
	}
	return body
}

func tryGet(r *router, path string) (string, int, error) {
	resp, err := testutil.HTTPClientIn(r.node.NS).Get("http://" + healthAddr + path)
	if err != nil {
		return "", 0, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return string(b), resp.StatusCode, err
}

func waitHTTP(t *testing.T, r *router, path, want string) {
	t.Helper()
	waitUntil(t, r.name+" "+path, func() (bool, string) {
		body, code, err := tryGet(r, path)
		return err == nil && code == 200 && strings.Contains(body, want), fmt.Sprintf("%d %q %v", code, body, err)
	})
}

var successRE = regexp.MustCompile(`(?m)^vethroute_agent_reconciles_total\{result="success"\} (\d+)$`)

func successfulReconciles(t *testing.T, r *router) int {
	t.Helper()
	m := successRE.FindStringSubmatch(get(t, r, "/metrics"))
	if m == nil {
		t.Fatalf("%s /metrics has no successful reconcile count", r.name)
	}
	n, _ := strconv.Atoi(m[1])
	return n
}

func tail(s string, n int) string {
	var lines []string
	sc := bufio.NewScanner(strings.NewReader(s))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		lines = append(lines, sc.Text())
		if len(lines) > n {
			lines = lines[1:]
		}
	}
	return strings.Join(lines, "\n")
}
