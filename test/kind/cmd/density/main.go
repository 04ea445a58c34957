// Command density measures pod start at the Kubernetes default density on
// one kind worker: a Deployment of 110 pods created at once, time until all
// are Ready, and the CNI plugin's share of each pod's start, for vethroute
// and for the reference ptp + host-local under the same containerd on the
// same node (the agent's DaemonSet deleted and a ptp conflist written in
// its place). It writes its section of docs/benchmarks.md between
// <!-- bench-density:begin --> and <!-- bench-density:end -->, and removes
// the cluster at the end, also on failure or a signal.
//
//	density -kind BIN -node-image IMG -probe-archive TAR -image IMG [-name vr-density] [-pods 110] [-rounds 2] [-out docs/benchmarks.md]
//
// make bench-density builds the images and runs it (root, Docker).
package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/vethroute/vethroute/internal/kindcluster"
	"github.com/vethroute/vethroute/internal/testutil"
)

const (
	// metricsAddr is where each node's containerd serves its metrics
	// (containerdPatch); only the node itself reaches it.
	metricsAddr = "127.0.0.1:1338"
	// cniSetup and cniTeardown are the operations of containerd's CRI
	// histogram of network plugin calls (the whole conflist, per pod),
	// matched by value: the label's name (operation_type in containerd
	// 1.6) is not the same in every release.
	cniMetric   = "network_plugin_operations_duration_seconds"
	cniSetup    = `="set_up_pod"`
	cniTeardown = `="tear_down_pod"`
	// podStart is the kubelet's histogram from first seeing a pod to its
	// start; runtimeOps its calls into the runtime, of which RunPodSandbox
	// (network included) is one operation.
	podStart   = "kubelet_pod_start_duration_seconds"
	runtimeOps = "kubelet_runtime_operations_duration_seconds"
	runSandbox = `operation_type="run_podsandbox"`

	deployName = "density"
	refConf    = "10-ptp.conflist"
	agentConf  = "10-vethroute.conflist"
)

// containerdPatch turns on containerd's metrics endpoint; the key is the
// same in containerd 1.x and 2.x configurations.
var containerdPatch = "[metrics]\n  address = \"" + metricsAddr + "\"\n"

type options struct {
	name, kind, nodeImage, probeArchive, image, out string
	pods, rounds                                    int
	timeout                                         time.Duration
}

func main() {
	var o options
	fs := flag.NewFlagSet("density", flag.ExitOnError)
	fs.StringVar(&o.name, "name", "vr-density", "kind cluster name (also its Docker network's); removed at the end")
	fs.StringVar(&o.kind, "kind", "", "the kind CLI (test/kind/build.sh's KIND_BIN)")
	fs.StringVar(&o.nodeImage, "node-image", "", "kind node image (KIND_NODE_IMAGE)")
	fs.StringVar(&o.probeArchive, "probe-archive", "", "probe image archive (KIND_PROBE_ARCHIVE)")
	fs.StringVar(&o.image, "image", "", "vethroute image in the local Docker (deploy/build-image.sh)")
	fs.StringVar(&o.out, "out", "docs/benchmarks.md", "markdown file whose bench-density section is (re)written")
	fs.IntVar(&o.pods, "pods", 110, "pods of the Deployment, all on the one worker")
	fs.IntVar(&o.rounds, "rounds", 2, "rounds per plugin, alternating vethroute and ptp+host-local")
	fs.DurationVar(&o.timeout, "timeout", 50*time.Minute, "remove the cluster and fail after this long")
	_ = fs.Parse(os.Args[1:])
	if err := run(o); err != nil {
		fmt.Fprintln(os.Stderr, "density:", err)
		os.Exit(1)
	}
}

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "[%s] density: "+format+"\n", append([]any{time.Now().UTC().Format("15:04:05")}, args...)...)
}

func run(o options) (err error) {
	if o.kind == "" || o.nodeImage == "" || o.probeArchive == "" || o.image == "" {
		return errors.New("-kind, -node-image, -probe-archive and -image are required (make bench-density sets them)")
	}
	if o.pods < 1 || o.rounds < 1 {
		return errors.New("-pods and -rounds must be positive")
	}
	root, err := testutil.FindRepoRoot()
	if err != nil {
		return err
	}
	c, err := kindcluster.New(kindcluster.Options{
		Name: o.name, Workers: 1, Family: kindcluster.IPv4,
		Kind: o.kind, NodeImage: o.nodeImage, ProbeArchive: o.probeArchive, PluginImage: o.image,
		RepoRoot: root, Logf: logf,
		// The Deployment's pods and the DaemonSets' (kube-proxy, the
		// agent) all count toward the worker's maxPods.
		MaxPods:           o.pods + 10,
		ContainerdPatches: []string{containerdPatch},
	})
	if err != nil {
		return err
	}
	exists, err := c.Exists()
	if err != nil {
		return err
	}
	if exists {
		return fmt.Errorf("kind cluster %s already exists; remove it (make kind-down KIND_CLUSTER_NAME=%s) or pick another -name", o.name, o.name)
	}
	// The cluster goes on every way out: return, signal, timeout.
	// Once: a signal and the failure it causes in the main path both
	// clean up, and two deletions at once trip over each other.
	var cleaned = make(chan struct{})
	var once sync.Once
	cleanup := func() {
		once.Do(func() {
			logf("removing kind cluster %s", o.name)
			if derr := c.Delete(); derr != nil {
				logf("removing the cluster: %v", derr)
			}
		})
	}
	defer func() {
		close(cleaned)
		cleanup()
	}()
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	go func() {
		select {
		case s := <-sigs:
			logf("%v", s)
		case <-time.After(o.timeout):
			logf("still running after %s", o.timeout)
		case <-cleaned:
			return
		}
		cleanup()
		os.Exit(1)
	}()

	started := time.Now()
	refDir, err := os.MkdirTemp("", "vethroute-density-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(refDir)
	refs, err := testutil.ReferencePackages("ptp", "host-local")
	if err != nil {
		return err
	}
	logf("building the reference ptp and host-local")
	if err := testutil.BuildStripped(root, refDir, refs...); err != nil {
		return err
	}
	logf("creating kind cluster %s (1 worker, maxPods %d)", o.name, o.pods+10)
	if err := c.Up(); err != nil {
		return err
	}
	b := &bench{c: c, o: o, worker: o.name + "-worker", refDir: refDir}
	if b.podCIDR, err = b.kubectl("get", "node", b.worker, "-o", "jsonpath={.spec.podCIDR}"); err != nil {
		return err
	}
	capacity, err := b.kubectl("get", "node", b.worker, "-o", "jsonpath={.status.capacity.pods}")
	if err != nil {
		return err
	}
	if n, _ := strconv.Atoi(capacity); n < o.pods+10 {
		return fmt.Errorf("%s takes %s pods, want %d: the kubelet patch for maxPods did not apply", b.worker, capacity, o.pods+10)
	}
	if b.agentConfList, err = b.onWorker(nil, "cat", "/etc/cni/net.d/"+agentConf); err != nil {
		return fmt.Errorf("the agent's conflist on %s: %w", b.worker, err)
	}
	if b.runtime, err = b.kubectl("get", "node", b.worker, "-o", "jsonpath={.status.nodeInfo.containerRuntimeVersion}"); err != nil {
		return err
	}

	rep := &report{pods: o.pods, rounds: o.rounds, runtime: b.runtime, started: started, loadBefore: testutil.LoadAvg()}
	current := nameVeth
	for i := range o.rounds {
		for _, plugin := range []string{nameVeth, namePtp} {
			if plugin != current {
				if err := b.switchTo(plugin); err != nil {
					return err
				}
				current = plugin
			}
			logf("round %d: %d pods with %s", i+1, o.pods, plugin)
			r, err := b.round(plugin)
			if err != nil {
				return fmt.Errorf("round %d of %s: %w", i+1, plugin, err)
			}
			logf("round %d: %s: all Ready in %s, CNI ADD mean %.1f ms, pod start mean %.0f ms",
				i+1, plugin, r.ready.Round(100*time.Millisecond), 1000*r.cniAdd.mean(), 1000*r.start.mean())
			rep.add(plugin, r)
		}
	}
	rep.loadAfter = testutil.LoadAvg()
	rep.elapsed = time.Since(started)
	section := rep.markdown()
	fmt.Print(section)
	if err := writeSection(o.out, section); err != nil {
		return err
	}
	logf("wrote the bench-density section of %s", o.out)
	return nil
}

// bench drives the cluster.
type bench struct {
	c                      *kindcluster.Cluster
	o                      options
	worker, podCIDR        string
	agentConfList, runtime string
	refDir                 string
}

func (b *bench) kubectl(args ...string) (string, error) {
	out, err := b.c.Kubectl(nil, 11*time.Minute, args...)
	if err != nil {
		return "", fmt.Errorf("kubectl %s: %w\n%s", strings.Join(args, " "), err, kindcluster.LastLines(out, 20))
	}
	return strings.TrimSpace(out), nil
}

// onWorker runs a command inside the worker node's container.
func (b *bench) onWorker(stdin []byte, args ...string) (string, error) {
	out, err := b.c.Run(stdin, 2*time.Minute, "docker", append([]string{"exec", "-i", b.worker}, args...)...)
	if err != nil {
		return "", fmt.Errorf("on %s: %s: %w\n%s", b.worker, strings.Join(args, " "), err, kindcluster.LastLines(out, 20))
	}
	return out, nil
}

// scrape reads containerd's metrics on the worker (bash's /dev/tcp: the
// node image needs no HTTP client) and the kubelet's through the API
// server.
func (b *bench) scrape() (containerd, kubelet string, err error) {
	host, port, _ := strings.Cut(metricsAddr, ":")
	get := fmt.Sprintf(`exec 3<>/dev/tcp/%s/%s && printf 'GET /v1/metrics HTTP/1.0\r\nHost: %s\r\n\r\n' >&3 && cat <&3`, host, port, host)
	if containerd, err = b.onWorker(nil, "bash", "-c", get); err != nil {
		return "", "", fmt.Errorf("containerd metrics: %w", err)
	}
	if kubelet, err = b.kubectl("get", "--raw", "/api/v1/nodes/"+b.worker+"/proxy/metrics"); err != nil {
		return "", "", fmt.Errorf("kubelet metrics: %w", err)
	}
	return containerd, kubelet, nil
}

// snapshot is the cumulative histograms at one moment.
type snapshot struct {
	cniAdd, cniDel, start, sandbox histogram
	cniFound                       bool
}

func (b *bench) snapshot() (snapshot, error) {
	var s snapshot
	ctrd, kubelet, err := b.scrape()
	if err != nil {
		return s, err
	}
	name := findMetric(ctrd, cniMetric)
	if name != "" {
		var f1, f2 bool
		if s.cniAdd, f1, err = scrapeHistogram(ctrd, name, cniSetup); err != nil {
			return s, err
		}
		if s.cniDel, f2, err = scrapeHistogram(ctrd, name, cniTeardown); err != nil {
			return s, err
		}
		s.cniFound = f1 || f2
	}
	if s.start, _, err = scrapeHistogram(kubelet, podStart); err != nil {
		return s, err
	}
	if s.sandbox, _, err = scrapeHistogram(kubelet, runtimeOps, runSandbox); err != nil {
		return s, err
	}
	return s, nil
}

// findMetric returns the base name of the first histogram whose name
// contains part (containerd's metric names carry its namespace, which may
// differ between releases).
func findMetric(text, part string) string {
	for _, line := range strings.Split(text, "\n") {
		if strings.HasPrefix(line, "#") {
			continue
		}
		series, _, _ := strings.Cut(line, "{")
		if strings.Contains(series, part) && strings.HasSuffix(series, "_count") {
			return strings.TrimSuffix(series, "_count")
		}
	}
	return ""
}

// roundResult is one Deployment of the round's pods, up and down.
type roundResult struct {
	ready, gone    time.Duration
	cniAdd, cniDel histogram
	start, sandbox histogram
	cniFound       bool
	records        int
}

// round creates the Deployment, waits until every pod is Ready, deletes it
// and waits until every pod is gone, and returns the times and the metric
// differences over the round.
func (b *bench) round(plugin string) (r roundResult, err error) {
	if _, err := b.kubectl("wait", "--for=condition=Ready", "node/"+b.worker, "--timeout=300s"); err != nil {
		return r, err
	}
	before, err := b.snapshot()
	if err != nil {
		return r, err
	}
	t0 := time.Now()
	if out, err := b.c.Kubectl([]byte(deployment(b.o.pods, b.worker, b.c.ProbeImage())), time.Minute, "apply", "-f", "-"); err != nil {
		return r, fmt.Errorf("apply the deployment: %w\n%s", err, out)
	}
	deadline := t0.Add(15 * time.Minute)
	for {
		out, err := b.kubectl("get", "deployment", deployName, "-o", "jsonpath={.status.readyReplicas}")
		if err != nil {
			return r, err
		}
		if n, _ := strconv.Atoi(out); n >= b.o.pods {
			r.ready = time.Since(t0)
			break
		}
		if time.Now().After(deadline) {
			return r, fmt.Errorf("%s of %d pods Ready after 15 minutes\n%s", out, b.o.pods, b.c.Describe())
		}
		time.Sleep(250 * time.Millisecond)
	}
	up, err := b.snapshot()
	if err != nil {
		return r, err
	}
	// Which plugin served the pods is checked in its own store, so a round
	// never reports one plugin's figures under the other's name.
	if r.records, err = b.records(plugin); err != nil {
		return r, err
	}
	if r.records < b.o.pods {
		return r, fmt.Errorf("%d pods Ready but %s's store on %s holds %d reservations: the pods did not come from %s", b.o.pods, plugin, b.worker, r.records, plugin)
	}
	t1 := time.Now()
	if _, err := b.kubectl("delete", "deployment", deployName, "--wait=true", "--timeout=600s"); err != nil {
		return r, err
	}
	if _, err := b.kubectl("wait", "--for=delete", "pod", "-l", "app="+deployName, "--timeout=600s"); err != nil && !strings.Contains(err.Error(), "no matching resources") {
		return r, err
	}
	r.gone = time.Since(t1)
	// The kubelet tears a sandbox down (CNI DEL) after the pod object is
	// gone, so the teardowns are waited for, boundedly, before the count.
	var down snapshot
	for wait := time.Now().Add(3 * time.Minute); ; time.Sleep(2 * time.Second) {
		if down, err = b.snapshot(); err != nil {
			return r, err
		}
		if !down.cniFound || down.cniDel.count-up.cniDel.count >= float64(b.o.pods) || time.Now().After(wait) {
			break
		}
	}
	r.cniAdd, r.cniFound = up.cniAdd.sub(before.cniAdd), up.cniFound
	r.cniDel = down.cniDel.sub(up.cniDel)
	r.start, r.sandbox = up.start.sub(before.start), up.sandbox.sub(before.sandbox)
	return r, nil
}

// records counts the attachments in the plugin's reservation store on the
// worker: vethroute's owner records, host-local's address files.
func (b *bench) records(plugin string) (int, error) {
	network, err := confName(b.agentConfList)
	if err != nil {
		return 0, err
	}
	dir := "/var/lib/cni/networks/" + network
	if plugin == nameVeth {
		dir = "/var/lib/cni/vethroute/" + network + "/owners"
	}
	out, err := b.onWorker(nil, "find", dir, "-mindepth", "1", "-maxdepth", "1", "-name", "[0-9a-f]*")
	if err != nil {
		return 0, err
	}
	return len(strings.Fields(out)), nil
}

// switchTo hands the worker's CNI configuration to plugin: for ptp the
// agent's DaemonSet goes (it would rewrite its conflist) and the reference
// conflist takes its place; for vethroute the reverse.
func (b *bench) switchTo(plugin string) error {
	logf("switching the worker to %s", plugin)
	if plugin == namePtp {
		if _, err := b.kubectl("-n", "kube-system", "delete", "daemonset", "vethroute-agent", "--wait=true", "--timeout=300s"); err != nil {
			return err
		}
		if _, err := b.kubectl("-n", "kube-system", "wait", "--for=delete", "pod", "-l", "app.kubernetes.io/name=vethroute-agent", "--timeout=300s"); err != nil && !strings.Contains(err.Error(), "no matching resources") {
			return err
		}
		for _, bin := range []string{"ptp", "host-local"} {
			if out, err := b.c.Run(nil, time.Minute, "docker", "cp", filepath.Join(b.refDir, bin), b.worker+":/opt/cni/bin/"+bin); err != nil {
				return fmt.Errorf("docker cp %s: %w\n%s", bin, err, out)
			}
		}
		conf, err := referenceConfList(b.agentConfList, b.podCIDR)
		if err != nil {
			return err
		}
		if _, err := b.onWorker(conf, "sh", "-c", "cat > /etc/cni/net.d/.ref.tmp && mv /etc/cni/net.d/.ref.tmp /etc/cni/net.d/"+refConf+" && rm -f /etc/cni/net.d/"+agentConf); err != nil {
			return err
		}
		return nil
	}
	if _, err := b.onWorker(nil, "rm", "-f", "/etc/cni/net.d/"+refConf); err != nil {
		return err
	}
	if err := b.c.Deploy(); err != nil {
		return err
	}
	_, err := b.kubectl("-n", "kube-system", "rollout", "status", "daemonset/vethroute-agent", "--timeout=300s")
	return err
}

// referenceConfList is the agent's conflist with vethroute replaced by ptp
// + host-local over the node's pod CIDR: the same network name, CNI
// version, MTU and chained plugins, so that only the main plugin differs.
func referenceConfList(agent, podCIDR string) ([]byte, error) {
	var list map[string]any
	if err := json.Unmarshal([]byte(agent), &list); err != nil {
		return nil, fmt.Errorf("the agent's conflist: %w", err)
	}
	plugins, ok := list["plugins"].([]any)
	if !ok || len(plugins) == 0 {
		return nil, errors.New("the agent's conflist has no plugins")
	}
	first, ok := plugins[0].(map[string]any)
	if !ok || first["type"] != "vethroute" {
		return nil, errors.New("the agent's conflist does not start with vethroute")
	}
	ptp := map[string]any{"type": "ptp", "ipMasq": false, "ipam": map[string]any{
		"type":   "host-local",
		"ranges": [][]map[string]string{{{"subnet": podCIDR}}},
		"routes": []map[string]string{{"dst": "0.0.0.0/0"}},
	}}
	if mtu, ok := first["mtu"]; ok {
		ptp["mtu"] = mtu
	}
	plugins[0] = ptp
	return json.MarshalIndent(list, "", "  ")
}

func confName(conflist string) (string, error) {
	var l struct {
		Name string `json:"name"`
	}
	if err := json.Unmarshal([]byte(conflist), &l); err != nil || l.Name == "" {
		return "", fmt.Errorf("the agent's conflist has no name: %v", err)
	}
	return l.Name, nil
}

// deployment is the round's workload: pods that do nothing but run, all on
// the worker, with nothing that slows their start besides the network
// (no image pull, no service account token, no service links).
func deployment(pods int, worker, image string) string {
	return fmt.Sprintf(`apiVersion: apps/v1
kind: Deployment
metadata:
  name: %[1]s
  namespace: default
spec:
  replicas: %[2]d
  selector:
    matchLabels: {app: %[1]s}
  template:
    metadata:
      labels: {app: %[1]s}
    spec:
      nodeSelector: {kubernetes.io/hostname: %[3]s}
      automountServiceAccountToken: false
      enableServiceLinks: false
      terminationGracePeriodSeconds: 0
      containers:
        - name: sleep
          image: %[4]s
          imagePullPolicy: Never
          command: [/bin/busybox, sleep, "3600"]
`, deployName, pods, worker, image)
}
