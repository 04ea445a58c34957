// Command benchscale measures vethroute-agent against a simulated cluster
// of 100, 1000 and 5000 nodes (make bench-scale): a real kube-apiserver and
// etcd (test/k8s/kubeapi), Node objects of a real node's size registered by
// server-side apply, and one real agent in a node namespace whose routes
// the kernel really holds, toward gateways on an uplink subnet sized for
// the cluster. At each size it measures the time from the agent's start to
// all routes in the kernel, the agent's memory and CPU, the bytes it
// receives from the API server, then the delay from API write to kernel
// under churn; it writes its section of docs/benchmarks.md and
// docs/benchmarks-scale.png.
//
//	go run ./test/benchscale                          # 100,1000,5000 nodes
//	go run ./test/benchscale -nodes 100 -churn 10s -out /tmp/b.md
//
// It needs root. It never touches the machine's own network namespace: the
// node is a namespace named vrscale<pid>-node, and the agent reaches the API
// server through a relay on that namespace's loopback.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/vishvananda/netlink"
	"k8s.io/client-go/kubernetes"

	"github.com/vethroute/vethroute/internal/testutil"
	"github.com/vethroute/vethroute/pkg/netconf"
	"github.com/vethroute/vethroute/test/k8s/kubeapi"
)

type options struct {
	sizes         []int
	churn         time.Duration
	perSecond     int
	agent         string
	label         string
	out, plot     string
	jsonOut       string
	before        string
	render        string
	note          string
	convergeLimit time.Duration
	timeout       time.Duration
	// agentEnv is added to the agent's environment: the DaemonSet's
	// literal settings, then -agent-env.
	agentEnv []string
}

func main() {
	o, err := parseFlags(os.Args[1:])
	if err != nil {
		fmt.Fprintln(os.Stderr, "benchscale:", err)
		os.Exit(2)
	}
	if err := run(o); err != nil {
		fmt.Fprintln(os.Stderr, "benchscale:", err)
		os.Exit(1)
	}
}

func parseFlags(args []string) (*options, error) {
	fs := flag.NewFlagSet("benchscale", flag.ContinueOnError)
	o := &options{}
	sizes := fs.String("nodes", "100,1000,5000", "cluster sizes (Node objects, the agent's own included)")
	fs.DurationVar(&o.churn, "churn", time.Minute, "length of the churn phase at each size")
	fs.IntVar(&o.perSecond, "rate", 10, "churn writes per second of each kind (add, delete, pod CIDR assignment)")
	fs.StringVar(&o.agent, "agent", "", "vethroute-agent binary to measure (default: built from this tree)")
	fs.StringVar(&o.label, "label", "", "name of this run in the report (default: the tree's git describe)")
	fs.StringVar(&o.out, "out", "docs/benchmarks.md", "markdown file whose bench-scale section is written (empty: none)")
	fs.StringVar(&o.plot, "plot", "", "PNG chart (default: benchmarks-scale.png beside -out)")
	fs.StringVar(&o.jsonOut, "json", "", "also write the figures as JSON here (for -before of a later run)")
	fs.StringVar(&o.before, "before", "", "JSON of an earlier run (-json) shown beside this one as \"before\"")
	fs.StringVar(&o.note, "note", "", "a paragraph of markdown added to the section, before the targets")
	fs.StringVar(&o.render, "render", "", "measure nothing: write the report of this JSON (-json of an earlier run)")
	fs.DurationVar(&o.convergeLimit, "converge-timeout", 5*time.Minute, "give up on start-up convergence after this long")
	fs.DurationVar(&o.timeout, "timeout", 30*time.Minute, "abort (and clean up) after this long")
	extraEnv := fs.String("agent-env", "", "comma-separated NAME=VALUE added to the agent's environment after the DaemonSet's (GOGC=50,...)")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	env, err := deployedAgentEnv()
	if err != nil {
		return nil, err
	}
	o.agentEnv = env
	for _, kv := range strings.Split(*extraEnv, ",") {
		if kv = strings.TrimSpace(kv); kv == "" {
			continue
		}
		if name, _, ok := strings.Cut(kv, "="); !ok || name == "" {
			return nil, fmt.Errorf("-agent-env: %q is not NAME=VALUE", kv)
		}
		o.agentEnv = append(o.agentEnv, kv)
	}
	for _, f := range strings.Split(*sizes, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 2 || n > 40000 {
			return nil, fmt.Errorf("-nodes: %q is not a size from 2 to 40000", f)
		}
		o.sizes = append(o.sizes, n)
	}
	if o.perSecond < 1 || o.perSecond > 100 {
		return nil, errors.New("-rate: from 1 to 100")
	}
	if o.plot == "" && o.out != "" {
		o.plot = filepath.Join(filepath.Dir(o.out), "benchmarks-scale.png")
	}
	return o, nil
}

// sizeResult is what one cluster size measured.
type sizeResult struct {
	Nodes  int
	Routes int // the routes the agent must program: both families of every other node
	// Create is how long registering the Node objects took (not the agent's).
	Create time.Duration
	// Converge is from the agent's start to all Routes in the kernel.
	Converge time.Duration
	// CPU is the agent's utime+stime at convergence and during churn.
	CPUConverge, CPUChurn time.Duration
	// RSS in KiB: at convergence, 10 s later (steady), and the peak
	// (VmHWM) by the end of churn.
	RSSConverge, RSSSteady, RSSPeak int64
	// RSSSteady's anonymous and file-backed parts (RssAnon, RssFile).
	RSSSteadyAnon, RSSSteadyFile int64
	// Bytes received from the API server by convergence and during churn.
	BytesConverge, BytesChurn int64
	Churn                     churnResult
	// Reconciles during churn and their mean duration, from the agent's
	// own histogram (vethroute_agent_reconcile_duration_seconds).
	ChurnReconciles    int
	ChurnReconcileMean time.Duration
	// HeapSteady is the Go heap in use (go_memstats_heap_inuse_bytes) when
	// RSSSteady was read: the part of RSS the agent's live data and its
	// garbage collector's headroom take.
	HeapSteady int64
	Err        string `json:",omitempty"`
}

// results is one run, as -json writes it.
type results struct {
	Label    string
	Started  time.Time
	Elapsed  time.Duration
	Load     [2]string // load averages before and after
	Machine  string
	Command  string
	Sizes    []sizeResult
	ChurnFor time.Duration
	// AgentEnv is what the agent's environment had added.
	AgentEnv []string `json:",omitempty"`
}

func readResults(path string) (*results, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	r := &results{}
	if err := json.Unmarshal(b, r); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return r, nil
}

func run(o *options) error {
	var before *results
	if o.before != "" {
		var err error
		if before, err = readResults(o.before); err != nil {
			return fmt.Errorf("-before: %w", err)
		}
	}
	if o.render != "" {
		r, err := readResults(o.render)
		if err != nil {
			return fmt.Errorf("-render: %w", err)
		}
		return writeReport(o, r, before)
	}
	if os.Geteuid() != 0 {
		return errors.New("needs root: it creates a network namespace")
	}
	root, err := testutil.FindRepoRoot()
	if err != nil {
		return err
	}
	started := time.Now()
	progress := func(msg string) { fmt.Fprintf(os.Stderr, "[%6.1fs] %s\n", time.Since(started).Seconds(), msg) }

	var all cleanups
	defer all.run()
	tmp, err := os.MkdirTemp("", "vethroute-benchscale-")
	if err != nil {
		return err
	}
	all.add(func() { _ = os.RemoveAll(tmp) })
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGINT, syscall.SIGTERM)
	finished := make(chan struct{})
	defer close(finished)
	go func() {
		defer signal.Stop(stop)
		select {
		case s := <-stop:
			fmt.Fprintf(os.Stderr, "benchscale: %v: cleaning up\n", s)
		case <-time.After(o.timeout):
			fmt.Fprintf(os.Stderr, "benchscale: still running after %s: cleaning up\n", o.timeout)
		case <-finished:
			return
		}
		all.run()
		os.Exit(1)
	}()

	agent := o.agent
	if agent == "" {
		progress("building vethroute-agent")
		if err := testutil.Build(root, tmp, "./cmd/vethroute-agent"); err != nil {
			return err
		}
		agent = filepath.Join(tmp, "vethroute-agent")
	}
	res := &results{Label: o.label, Started: started.UTC(), Machine: machineInfo(), Command: strings.TrimSpace("go run ./test/benchscale " + strings.Join(os.Args[1:], " ")), ChurnFor: o.churn, AgentEnv: o.agentEnv}
	if res.Label == "" {
		res.Label = describe(root)
	}
	res.Load[0] = testutil.LoadAvg()
	for _, n := range o.sizes {
		progress(fmt.Sprintf("%d nodes", n))
		r, err := measureSize(o, &all, tmp, agent, n, progress)
		if err != nil {
			r.Err = err.Error()
			progress(fmt.Sprintf("%d nodes: %v", n, err))
		}
		res.Sizes = append(res.Sizes, r)
	}
	res.Load[1] = testutil.LoadAvg()
	res.Elapsed = time.Since(started)
	if o.jsonOut != "" {
		b, _ := json.MarshalIndent(res, "", "  ")
		if err := os.WriteFile(o.jsonOut, b, 0o644); err != nil {
			return err
		}
	}
	if o.out != "" {
		if err := writeReport(o, res, before); err != nil {
			return err
		}
		progress("wrote " + o.out + " and " + o.plot)
	}
	fmt.Println(summaryText(res))
	for _, s := range res.Sizes {
		if s.Err != "" {
			return fmt.Errorf("%d nodes: %s", s.Nodes, s.Err)
		}
	}
	return nil
}

// measureSize runs one cluster size on a fresh API server and removes all
// of it before returning.
func measureSize(o *options, all *cleanups, tmp, agentBin string, n int, progress func(string)) (r sizeResult, err error) {
	r = sizeResult{Nodes: n, Routes: 2 * (n - 1)}
	s := newScope(all)
	defer s.run()
	dir, err := os.MkdirTemp(tmp, fmt.Sprintf("n%d-", n))
	if err != nil {
		return r, err
	}
	s.add(func() { _ = os.RemoveAll(dir) })
	// The namespace comes first: making one ends an OS thread.
	node, err := newNodeNS(s, fmt.Sprintf("vrscale%d-node", os.Getpid()))
	if err != nil {
		return r, err
	}
	apiDir := filepath.Join(dir, "api")
	if err := os.Mkdir(apiDir, 0o755); err != nil {
		return r, err
	}
	srv, err := kubeapi.Launch(apiDir)
	if err != nil {
		return r, err
	}
	s.add(srv.Close)
	cfg := *srv.Config
	cfg.QPS, cfg.Burst = 2000, 4000
	cs, err := kubernetes.NewForConfig(&cfg)
	if err != nil {
		return r, err
	}
	ctx := context.Background()
	t0 := time.Now()
	if err := createNodes(ctx, cs, 0, n, true, progress); err != nil {
		return r, err
	}
	r.Create = time.Since(t0)
	progress(fmt.Sprintf("registered %d nodes in %.1fs", n, r.Create.Seconds()))

	host := strings.TrimPrefix(srv.URL, "https://")
	proxy, err := startProxy(s, node, host, host)
	if err != nil {
		return r, err
	}
	w, err := startWatcher(s, node, netlink.RouteProtocol(netconf.AgentRouteProtocol))
	if err != nil {
		return r, err
	}
	agentDir := filepath.Join(dir, "agent")
	if err := os.Mkdir(agentDir, 0o755); err != nil {
		return r, err
	}
	start := time.Now()
	a, err := startAgent(s, node, agentBin, agentDir, o.agentEnv,
		"--kubeconfig="+srv.Kubeconfig,
		"--node-name="+nodeName(0),
		"--cni-conf-dir="+agentDir,
		"--ipam-data-dir="+filepath.Join(agentDir, "ipam"),
		"--cni-version=1.1.0",
		"--chain=",
		"--cluster-cidrs="+clusterCIDRs,
		"--log-level=info",
	)
	if err != nil {
		return r, err
	}
	pid := a.cmd.Process.Pid
	alive := func() error {
		if a.exited() {
			return fmt.Errorf("the agent exited:\n%s", a.logTail())
		}
		return nil
	}
	reached, err := w.waitCount(r.Routes, o.convergeLimit, alive)
	if err != nil {
		return r, err
	}
	r.Converge = reached.Sub(start)
	r.BytesConverge = proxy.received.Load()
	ps, err := sampleProc(pid)
	if err != nil {
		return r, err
	}
	r.CPUConverge, r.RSSConverge = ps.cpu, ps.rssKiB
	progress(fmt.Sprintf("%d routes in %.2fs; RSS %.1f MiB, CPU %.2fs, %.1f MiB from the API", r.Routes, r.Converge.Seconds(), mibOf(ps.rssKiB), ps.cpu.Seconds(), float64(r.BytesConverge)/(1<<20)))

	time.Sleep(10 * time.Second)
	if ps, err = sampleProc(pid); err != nil {
		return r, err
	}
	r.RSSSteady, r.RSSSteadyAnon, r.RSSSteadyFile = ps.rssKiB, ps.anonKiB, ps.fileKiB
	metrics := testutil.HTTPClientIn(node)
	if m, err := agentMetrics(metrics); err == nil {
		r.HeapSteady = int64(m["go_memstats_heap_inuse_bytes"])
	}

	// Nodes registered without pod CIDRs, for the assignments.
	poolSize := o.perSecond * int(o.churn/time.Second)
	poolFrom := n
	if err := createNodes(ctx, cs, poolFrom, poolFrom+poolSize, false, progress); err != nil {
		return r, err
	}
	time.Sleep(2 * time.Second)
	var deletable, pool []int
	for i := 1; i < n; i++ {
		deletable = append(deletable, i)
	}
	for i := poolFrom; i < poolFrom+poolSize; i++ {
		pool = append(pool, i)
	}
	if err := alive(); err != nil {
		return r, err
	}
	before, err := sampleProc(pid)
	if err != nil {
		return r, err
	}
	bytesBefore := proxy.received.Load()
	recBefore, recErr := reconcileStats(metrics)
	progress(fmt.Sprintf("churn: %d writes/s of each of add, delete, pod CIDR assignment for %s", o.perSecond, o.churn))
	r.Churn = churn(ctx, cs, w, o.churn, o.perSecond, poolFrom+poolSize, deletable, pool)
	after, err := sampleProc(pid)
	if err != nil {
		return r, err
	}
	r.CPUChurn = after.cpu - before.cpu
	r.RSSPeak = after.hwmKiB
	r.BytesChurn = proxy.received.Load() - bytesBefore
	if recAfter, err := reconcileStats(metrics); err == nil && recErr == nil && recAfter.count > recBefore.count {
		r.ChurnReconciles = int(recAfter.count - recBefore.count)
		r.ChurnReconcileMean = time.Duration((recAfter.sum - recBefore.sum) / (recAfter.count - recBefore.count) * float64(time.Second))
	}
	if err := w.failure(); err != nil {
		return r, fmt.Errorf("route subscription: %w", err)
	}
	if err := alive(); err != nil {
		return r, err
	}
	progress("churn: " + r.Churn.String())
	return r, nil
}

func mibOf(kib int64) float64 { return float64(kib) / 1024 }

func machineInfo() string {
	cpu := "unknown CPU"
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				cpu = strings.TrimSpace(v)
				break
			}
		}
	}
	return fmt.Sprintf("%s, %d cores, %s", cpu, runtime.NumCPU(), runtime.Version())
}

// agentMetricsURL is where the agent serves /metrics in the node namespace
// (its default --health-addr).
const agentMetricsURL = "http://127.0.0.1:9387/metrics"

type histogramTotals struct{ count, sum float64 }

// reconcileStats reads the agent's reconcile duration histogram totals.
func reconcileStats(c *http.Client) (histogramTotals, error) {
	m, err := agentMetrics(c)
	if err != nil {
		return histogramTotals{}, err
	}
	count, ok1 := m["vethroute_agent_reconcile_duration_seconds_count"]
	sum, ok2 := m["vethroute_agent_reconcile_duration_seconds_sum"]
	if !ok1 || !ok2 {
		return histogramTotals{}, fmt.Errorf("%s: no reconcile_duration_seconds histogram", agentMetricsURL)
	}
	return histogramTotals{count: count, sum: sum}, nil
}

// agentMetrics reads the agent's unlabelled metrics.
func agentMetrics(c *http.Client) (map[string]float64, error) {
	resp, err := c.Get(agentMetricsURL)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	if err != nil {
		return nil, err
	}
	m := map[string]float64{}
	for _, line := range strings.Split(string(body), "\n") {
		name, val, ok := strings.Cut(line, " ")
		if !ok || strings.HasPrefix(name, "#") || strings.Contains(name, "{") {
			continue
		}
		if v, err := strconv.ParseFloat(strings.TrimSpace(val), 64); err == nil {
			m[name] = v
		}
	}
	return m, nil
}
