package kindchaos_test

import (
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// fault is one failure; do injects it on target (a worker, for the faults
// that hit one) and returns when the fault has ended, with a note for the
// log.
type fault struct {
	name string
	do   func(e *env, target string) (string, error)
}

var faults = []fault{
	{"agent killed", killAgent},
	{"worker rebooted", rebootWorker},
	{"containerd restarted", restartContainerd},
	{"API server down 60 s", stopAPIServer},
	{"DaemonSet deleted and re-applied", recreateDaemonSet},
}

// killAgent SIGKILLs the agent's process on the worker, as a crash or the
// OOM killer would; the kubelet starts the container again.
func killAgent(e *env, node string) (string, error) {
	out, err := e.Run(nil, 30*time.Second, "docker", "exec", node, "crictl", "ps", "--name", "^agent$", "--state", "running", "-q")
	ids := strings.Fields(out)
	if err != nil || len(ids) != 1 {
		return "", fmt.Errorf("agent container on %s: %v %q", node, err, out)
	}
	out, err = e.Run(nil, 30*time.Second, "docker", "exec", node, "crictl", "inspect", ids[0])
	if err != nil {
		return "", fmt.Errorf("crictl inspect %s on %s: %w\n%s", ids[0], node, err, out)
	}
	var info struct {
		Info struct {
			Pid int `json:"pid"`
		} `json:"info"`
	}
	if err := json.Unmarshal([]byte(out), &info); err != nil || info.Info.Pid <= 1 {
		return "", fmt.Errorf("agent pid on %s: %v (pid %d)", node, err, info.Info.Pid)
	}
	pid := strconv.Itoa(info.Info.Pid)
	if out, err := e.Run(nil, 30*time.Second, "docker", "exec", node, "kill", "-KILL", pid); err != nil {
		return "", fmt.Errorf("kill %s on %s: %w\n%s", pid, node, err, out)
	}
	return "SIGKILL to agent pid " + pid, nil
}

// rebootWorker restarts the worker's container: a new network namespace
// (no veth, no route survives), /run emptied, /var kept, as a reboot
// leaves a node. The fault ends when the container runs again; when the
// kubelet reports the node Ready is noted.
func rebootWorker(e *env, node string) (string, error) {
	if out, err := e.Run(nil, 3*time.Minute, "docker", "restart", node); err != nil {
		return "", fmt.Errorf("docker restart %s: %w\n%s", node, err, out)
	}
	restarted := time.Now()
	go func() {
		// Best effort: a note, not a measurement the checks depend on.
		for time.Since(restarted) < recoveryLimit {
			if e.nodeReadySince(node, restarted) {
				e.note(fmt.Sprintf("%s Ready %s after the restart", node, time.Since(restarted).Round(time.Second)))
				return
			}
			time.Sleep(time.Second)
		}
	}()
	return "docker restart", nil
}

// nodeReadySince reports whether node's Ready condition is true and was
// last posted after t.
func (e *env) nodeReadySince(node string, t time.Time) bool {
	c, cancel := ctx(5 * time.Second)
	defer cancel()
	n, err := e.cs.CoreV1().Nodes().Get(c, node, metav1.GetOptions{})
	if err != nil {
		return false
	}
	for _, cond := range n.Status.Conditions {
		if cond.Type == corev1.NodeReady {
			return cond.Status == corev1.ConditionTrue && cond.LastHeartbeatTime.After(t.Add(-time.Second))
		}
	}
	return false
}

// restartContainerd restarts containerd on the worker through its systemd
// unit, whatever containerd version the node runs.
func restartContainerd(e *env, node string) (string, error) {
	if out, err := e.Run(nil, 2*time.Minute, "docker", "exec", node, "systemctl", "restart", "containerd"); err != nil {
		return "", fmt.Errorf("restart containerd on %s: %w\n%s", node, err, out)
	}
	if out, err := e.Run(nil, 30*time.Second, "docker", "exec", node, "systemctl", "is-active", "containerd"); err != nil {
		return "", fmt.Errorf("containerd on %s not active after the restart: %w\n%s", node, err, out)
	}
	return "systemctl restart containerd", nil
}

const (
	apiManifest = "/etc/kubernetes/manifests/kube-apiserver.yaml"
	// apiParked is outside the kubelet's static pod directory.
	apiParked  = "/etc/kubernetes/kube-apiserver.yaml.chaos"
	apiOutage  = 60 * time.Second
	apiTimeout = 3 * time.Minute
)

// stopAPIServer moves the API server's static pod manifest out of the
// kubelet's directory, makes sure the server is down (/readyz fails and
// no kube-apiserver container runs), keeps it down 60 s, and moves the
// manifest back. The fault ends when /readyz answers ok again.
func stopAPIServer(e *env, _ string) (string, error) {
	cp := e.ControlPlane()
	if out, err := e.Run(nil, 30*time.Second, "docker", "exec", cp, "mv", apiManifest, apiParked); err != nil {
		return "", fmt.Errorf("park the API server manifest: %w\n%s", err, out)
	}
	parked := time.Now()
	var down time.Time
	for time.Since(parked) < apiTimeout {
		out, _ := e.Run(nil, 30*time.Second, "docker", "exec", cp, "crictl", "ps", "--name", "^kube-apiserver$", "--state", "running", "-q")
		if strings.TrimSpace(out) == "" && !e.apiReady() {
			down = time.Now()
			break
		}
		time.Sleep(time.Second)
	}
	if down.IsZero() {
		return "", fmt.Errorf("the API server still answers %s after its manifest was moved", apiTimeout)
	}
	time.Sleep(apiOutage)
	// Still down at the end, or the outage was not one.
	if e.apiReady() {
		return "", fmt.Errorf("the API server answered /readyz during its outage")
	}
	if out, err := e.Run(nil, 30*time.Second, "docker", "exec", cp, "mv", apiParked, apiManifest); err != nil {
		return "", fmt.Errorf("restore the API server manifest: %w\n%s", err, out)
	}
	restored := time.Now()
	for time.Since(restored) < apiTimeout {
		if e.apiReady() {
			return fmt.Sprintf("down %s after the manifest moved, /readyz failing for %s, ready %s after it came back",
				down.Sub(parked).Round(time.Second), time.Since(down).Round(time.Second), time.Since(restored).Round(time.Second)), nil
		}
		time.Sleep(time.Second)
	}
	return "", fmt.Errorf("the API server is not ready %s after its manifest came back", apiTimeout)
}

// apiReady asks the API server's /readyz through the loopback port.
func (e *env) apiReady() bool {
	c, cancel := ctx(3 * time.Second)
	defer cancel()
	body, err := e.cs.Discovery().RESTClient().Get().AbsPath("/readyz").DoRaw(c)
	return err == nil && strings.TrimSpace(string(body)) == "ok"
}

// recreateDaemonSet deletes the agent DaemonSet, waits until no agent pod
// is left, and applies deploy/ again.
func recreateDaemonSet(e *env, _ string) (string, error) {
	c, cancel := ctx(30 * time.Second)
	err := e.cs.AppsV1().DaemonSets("kube-system").Delete(c, "vethroute-agent", metav1.DeleteOptions{})
	cancel()
	if err != nil {
		return "", fmt.Errorf("delete the agent DaemonSet: %w", err)
	}
	deleted := time.Now()
	for {
		c, cancel := ctx(10 * time.Second)
		list, err := e.cs.CoreV1().Pods("kube-system").List(c, metav1.ListOptions{LabelSelector: "app.kubernetes.io/name=vethroute-agent"})
		cancel()
		if err == nil && len(list.Items) == 0 {
			break
		}
		if time.Since(deleted) > 2*time.Minute {
			return "", fmt.Errorf("agent pods still there 2 minutes after the DaemonSet's deletion")
		}
		time.Sleep(time.Second)
	}
	gone := time.Since(deleted)
	if err := e.Deploy(); err != nil {
		return "", err
	}
	return fmt.Sprintf("agent pods gone %s after the delete", gone.Round(time.Second)), nil
}

// result is one fault's injection and the cluster's recovery from it.
type result struct {
	fault, target string
	round         int
	// probes: from the fault's end until the anchor ring answered in
	// both families. routes: the slowest node, from its agent running
	// again (or the fault's end, when the agent kept running) until its
	// routes equalled the other nodes' pod CIDRs.
	probes, routes time.Duration
	took           time.Duration // the injection, start to end
	gc             gcCount
	ops, refused   int
	notes          []string
}

// inject runs one fault under churn: churn for pre, the fault, the
// recovery measurement, churn for post, then the settled checks.
func (e *env) inject(ch *churn, f fault, target string, round int, pre, post time.Duration) {
	e.t.Helper()
	if f.name == "API server down 60 s" || f.name == "DaemonSet deleted and re-applied" {
		target = "cluster"
	}
	label := fmt.Sprintf("round %d, %s (%s)", round, f.name, target)
	e.t.Logf("%s: churn for %s, then the fault", label, pre)
	c0, d0, r0 := ch.counts()
	ch.start()
	// A failed check ends the test; the churn must not outlive it.
	defer ch.halt()
	time.Sleep(pre)
	e.takeNotes()
	start := time.Now()
	note, err := f.do(e, target)
	end := time.Now()
	if err != nil {
		e.t.Fatalf("%s: %v\n%s", label, err, e.Describe())
	}
	r := result{fault: f.name, target: target, round: round, took: end.Sub(start), notes: []string{note}}
	e.t.Logf("%s: fault over after %s (%s); measuring the recovery", label, fmtDur(r.took), note)
	r.probes, r.routes = e.recover(label, start, end)
	e.t.Logf("%s: probes answered %s after the fault ended, routes right %s after the agent ran; churning %s more, then the checks", label, fmtDur(r.probes), fmtDur(r.routes), post)
	time.Sleep(post)
	ch.halt()
	c1, d1, r1 := ch.counts()
	r.ops, r.refused = c1+d1-c0-d0, r1-r0
	r.gc = e.settleAndCheck(label)
	r.notes = append(r.notes, e.takeNotes()...)
	e.t.Logf("%s: %s; probes answered %s after the fault ended, routes %s after the agent ran; %d creates and deletes, %d refused by the API server; %s",
		label, fmtDur(r.took), fmtDur(r.probes), fmtDur(r.routes), r.ops, r.refused, strings.Join(r.notes, "; "))
	e.results = append(e.results, r)
}

// recover measures, after a fault that started at start and ended at end,
// how long until the anchor ring answers and until every node's agent
// routes are right; the bounds (routeBound, probeBound) are checked here.
func (e *env) recover(label string, start, end time.Time) (time.Duration, time.Duration) {
	e.t.Helper()
	type probeResult struct {
		after time.Duration
		why   string
	}
	probed := make(chan probeResult, 1)
	go func() {
		why := ""
		for time.Since(end) < recoveryLimit {
			ok, w := e.probeRing()
			if ok {
				probed <- probeResult{after: time.Since(end)}
				return
			}
			why = w
			time.Sleep(time.Second)
		}
		probed <- probeResult{after: -1, why: why}
	}()

	conv := map[string]time.Duration{}
	looked := map[string]bool{}
	var nodes []apiNode
	last := map[string]string{}
	var mu sync.Mutex
	for len(conv) < len(e.nodes) && time.Since(end) < recoveryLimit {
		if n, err := e.apiNodes(); err == nil {
			nodes = n
		}
		var wg sync.WaitGroup
		for _, node := range e.nodes {
			mu.Lock()
			_, done := conv[node]
			lookedBefore := looked[node]
			mu.Unlock()
			if done || nodes == nil {
				continue
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				d, why := routesRight(e, nodes, node, start, end, lookedBefore)
				mu.Lock()
				defer mu.Unlock()
				looked[node] = true
				if why != "" {
					last[node] = why
					return
				}
				conv[node] = d
			}()
		}
		wg.Wait()
		if len(conv) < len(e.nodes) {
			time.Sleep(time.Second)
		}
	}
	var worst time.Duration
	for _, node := range e.nodes {
		d, ok := conv[node]
		if !ok {
			e.t.Fatalf("%s: %s's agent routes not right %s after the fault: %s\n%s", label, node, recoveryLimit, last[node], e.Describe())
		}
		if d > routeBound {
			e.t.Errorf("%s: %s's routes took %s after its agent ran, want at most %s", label, node, d.Round(100*time.Millisecond), routeBound)
		}
		worst = max(worst, d)
	}
	p := <-probed
	if p.after < 0 {
		e.t.Fatalf("%s: pods on different nodes still do not reach each other %s after the fault: %s\n%s", label, recoveryLimit, p.why, e.Describe())
	}
	if p.after > probeBound {
		e.t.Errorf("%s: pods on different nodes reached each other %s after the fault ended, want at most %s", label, p.after.Round(100*time.Millisecond), probeBound)
	}
	return p.after, worst
}

// routesRight looks once at node: "" and how long its routes took when
// they are right, else what is wrong. The time runs from the agent's new
// container's creation when the agent restarted during the fault, else
// from the fault's end; an agent that kept running and whose routes are
// right at the first look after the fault counts 0 (its routes never
// needed mending as far as anyone saw). Times are the node's clock.
func routesRight(e *env, nodes []apiNode, node string, start, end time.Time, lookedBefore bool) (time.Duration, string) {
	st, err := e.readState(node)
	if err != nil {
		return 0, err.Error()
	}
	if st.agent == nil {
		return 0, "no agent running"
	}
	want, err := wantRoutes(nodes, node)
	if err != nil {
		return 0, err.Error()
	}
	if !slices.Equal(st.routes, want) {
		return 0, fmt.Sprintf("routes %v, want %v", st.routes, want)
	}
	if st.agent.created.After(start) {
		return max(st.seen.Sub(st.agent.created), 0), ""
	}
	if !lookedBefore {
		return 0, ""
	}
	return max(st.seen.Sub(end), 0), ""
}

func fmtDur(d time.Duration) string {
	return d.Round(100 * time.Millisecond).String()
}
