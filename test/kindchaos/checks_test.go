package kindchaos_test

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// conflistPath is where the agent writes the node's CNI configuration.
const conflistPath = "/etc/cni/net.d/10-vethroute.conflist"

// gcCount is what a GC had to remove on the nodes: reservations (owner
// records) and veths that the runtime's own DELs had left.
type gcCount struct{ owners, veths int }

// apiPods lists every pod, or fails the test.
func (e *env) apiPods() []apiPod {
	e.t.Helper()
	c, cancel := ctx(20 * time.Second)
	defer cancel()
	list, err := e.cs.CoreV1().Pods("").List(c, metav1.ListOptions{})
	if err != nil {
		e.t.Fatalf("list pods: %v", err)
	}
	var out []apiPod
	for i := range list.Items {
		out = append(out, fromAPI(&list.Items[i]))
	}
	return out
}

// apiNodes lists the nodes' addresses and pod CIDRs.
func (e *env) apiNodes() ([]apiNode, error) {
	c, cancel := ctx(10 * time.Second)
	defer cancel()
	list, err := e.cs.CoreV1().Nodes().List(c, metav1.ListOptions{})
	if err != nil {
		return nil, fmt.Errorf("list nodes: %w", err)
	}
	return nodesFromAPI(list.Items), nil
}

// readState reads one node's vethroute state.
func (e *env) readState(node string) (nodeState, error) {
	dataDir, network := e.store()
	out, err := e.Run(nil, 30*time.Second, "docker", "exec", node, "sh", "-c", stateScript(dataDir, network))
	if err != nil {
		return nodeState{}, fmt.Errorf("read state of %s: %w\n%s", node, err, out)
	}
	return parseState(out)
}

var storeOnce struct {
	sync.Once
	dataDir, network string
	conf             map[string]any
	err              error
}

// store reads the network name, the IPAM dataDir and the vethroute
// plugin's entry from a worker's conflist (the same on every node but for
// the ranges, which GC does not use).
func (e *env) store() (string, string) {
	storeOnce.Do(func() {
		out, err := e.Run(nil, 30*time.Second, "docker", "exec", e.workers[0], "cat", conflistPath)
		if err != nil {
			storeOnce.err = fmt.Errorf("read %s: %w\n%s", conflistPath, err, out)
			return
		}
		var l struct {
			Name    string           `json:"name"`
			Plugins []map[string]any `json:"plugins"`
		}
		if err := json.Unmarshal([]byte(out), &l); err != nil {
			storeOnce.err = fmt.Errorf("parse %s: %w\n%s", conflistPath, err, out)
			return
		}
		for _, p := range l.Plugins {
			if p["type"] == "vethroute" {
				storeOnce.conf = p
			}
		}
		ipam, _ := storeOnce.conf["ipam"].(map[string]any)
		dir, _ := ipam["dataDir"].(string)
		if l.Name == "" || dir == "" {
			storeOnce.err = fmt.Errorf("%s names no network or no ipam.dataDir:\n%s", conflistPath, out)
			return
		}
		storeOnce.network, storeOnce.dataDir = l.Name, dir
	})
	if storeOnce.err != nil {
		e.t.Fatal(storeOnce.err)
	}
	return storeOnce.dataDir, storeOnce.network
}

// gc runs the plugin's CNI GC on a node, as containerd 2 does when it
// starts (containerd 1.6 never does): cniVersion 1.1.0, the valid
// attachments being every ready sandbox's eth0. It reads the node's own
// conflist for the plugin's configuration.
func (e *env) gc(node string, st nodeState) error {
	e.store()
	out, err := e.Run(nil, 30*time.Second, "docker", "exec", node, "cat", conflistPath)
	if err != nil {
		return fmt.Errorf("read %s on %s: %w\n%s", conflistPath, node, err, out)
	}
	var l struct {
		Name    string           `json:"name"`
		Plugins []map[string]any `json:"plugins"`
	}
	if err := json.Unmarshal([]byte(out), &l); err != nil {
		return fmt.Errorf("parse %s on %s: %w", conflistPath, node, err)
	}
	var conf map[string]any
	for _, p := range l.Plugins {
		if p["type"] == "vethroute" {
			conf = p
		}
	}
	if conf == nil {
		return fmt.Errorf("%s on %s has no vethroute plugin:\n%s", conflistPath, node, out)
	}
	var valid []map[string]string
	for _, s := range st.sandboxes {
		if s.ready {
			valid = append(valid, map[string]string{"containerID": s.id, "ifname": "eth0"})
		}
	}
	conf["cniVersion"] = "1.1.0"
	conf["name"] = l.Name
	conf["cni.dev/valid-attachments"] = valid
	stdin, err := json.Marshal(conf)
	if err != nil {
		return err
	}
	out, err = e.Run(stdin, time.Minute, "docker", "exec", "-i", node, "env", "CNI_COMMAND=GC", "CNI_PATH=/opt/cni/bin", "/opt/cni/bin/vethroute")
	if err != nil {
		return fmt.Errorf("CNI GC on %s: %w\n%s", node, err, out)
	}
	return nil
}

// settleAndCheck waits until every pod is running (or gone) and then
// checks the invariants: no address held by two pods; on every node the
// reservations and veths equal the running pods' (GC run when the
// runtime's own DELs have not got there within 30 s, and what it removed
// counted); the agent's routes equal the other nodes' pod CIDRs.
func (e *env) settleAndCheck(label string) gcCount {
	e.t.Helper()
	start := time.Now()
	var pods []apiPod
	var pending []string
	for time.Since(start) < recoveryLimit {
		pods, pending = e.apiPods(), e.podsNotSettled()
		if len(pending) == 0 {
			break
		}
		time.Sleep(2 * time.Second)
	}
	if len(pending) > 0 {
		e.t.Fatalf("%s: pods not settled after %s: %s\n%s", label, recoveryLimit, strings.Join(pending, ", "), e.Describe())
	}
	settled := time.Since(start)
	if d := duplicates(pods); len(d) > 0 {
		e.t.Errorf("%s: addresses held by two pods: %s", label, strings.Join(d, "; "))
	}
	_, network := e.store()
	var collected gcCount
	running := 0
	for _, p := range pods {
		if !p.hostNetwork && p.running {
			running++
		}
	}
	for _, node := range e.nodes {
		var st nodeState
		var problems []string
		var err error
		// The kubelet tears a sandbox down just after the API server
		// lets its pod go; the runtime's own DEL gets 30 s.
		for i := 0; i < 15; i++ {
			if st, err = e.readState(node); err != nil {
				e.t.Fatalf("%s: %v", label, err)
			}
			if problems = mismatches(st, pods, node, network); len(problems) == 0 {
				break
			}
			time.Sleep(2 * time.Second)
		}
		before := st
		// GC now: when the node already matches, it must remove nothing.
		if err := e.gc(node, st); err != nil {
			e.t.Fatalf("%s: %v", label, err)
		}
		if st, err = e.readState(node); err != nil {
			e.t.Fatalf("%s: %v", label, err)
		}
		removedOwners, removedVeths := len(before.owners)-len(st.owners), len(before.veths)-len(st.veths)
		if len(problems) == 0 && (removedOwners != 0 || removedVeths != 0) {
			e.t.Errorf("%s: GC on %s changed a node that matched its pods: %d owner records, %d veths removed", label, node, removedOwners, removedVeths)
		}
		if len(problems) > 0 {
			e.t.Logf("%s: %s before GC (after 30 s): %s", label, node, strings.Join(problems, "; "))
			collected.owners += removedOwners
			collected.veths += removedVeths
		}
		if after := mismatches(st, pods, node, network); len(after) > 0 {
			e.t.Errorf("%s: %s after GC: %s\nreservations %v\nowners %v\nveths %v", label, node, strings.Join(after, "; "), st.ips, st.owners, st.veths)
		}
	}
	nodes, err := e.apiNodes()
	if err != nil {
		e.t.Fatalf("%s: %v", label, err)
	}
	for _, node := range e.nodes {
		want, err := wantRoutes(nodes, node)
		if err != nil {
			e.t.Fatalf("%s: %v", label, err)
		}
		st, err := e.readState(node)
		if err != nil {
			e.t.Fatalf("%s: %v", label, err)
		}
		if !slices.Equal(st.routes, want) {
			e.t.Errorf("%s: %s's proto %s routes\n  %v\nwant\n  %v", label, node, agentRouteProto, st.routes, want)
		}
	}
	e.t.Logf("%s: checked after settling in %s: %d pods with their own network; GC removed %d owner records, %d veths (failed checks, if any, are reported above)",
		label, settled.Round(time.Second), running, collected.owners, collected.veths)
	return collected
}

// podsNotSettled names the pods that are still starting or stopping.
func (e *env) podsNotSettled() []string {
	c, cancel := ctx(20 * time.Second)
	defer cancel()
	list, err := e.cs.CoreV1().Pods("").List(c, metav1.ListOptions{})
	if err != nil {
		return []string{"(list pods: " + err.Error() + ")"}
	}
	var out []string
	for _, p := range list.Items {
		ready := false
		for _, cond := range p.Status.Conditions {
			if cond.Type == corev1.PodReady && cond.Status == corev1.ConditionTrue {
				ready = true
			}
		}
		switch {
		case p.DeletionTimestamp != nil:
			out = append(out, p.Namespace+"/"+p.Name+" (terminating)")
		case p.Status.Phase != corev1.PodRunning || !ready:
			out = append(out, fmt.Sprintf("%s/%s (%s, ready %v)", p.Namespace, p.Name, p.Status.Phase, ready))
		case !p.Spec.HostNetwork && len(p.Status.PodIPs) != 2:
			out = append(out, fmt.Sprintf("%s/%s (pod IPs %v)", p.Namespace, p.Name, p.Status.PodIPs))
		}
	}
	return out
}

// anchorName is the probe pod that stays on node for the whole run.
func anchorName(node string) string {
	return "anchor-" + node[strings.LastIndex(node, "-")+1:]
}

// startAnchors starts one probe pod per node, serving its caller's
// address on port 8080 (probe source-addr).
func (e *env) startAnchors() {
	e.t.Helper()
	grace := int64(1)
	for _, node := range e.nodes {
		p := &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: anchorName(node), Labels: map[string]string{"app": "vr-chaos-anchor"}},
			Spec: corev1.PodSpec{
				NodeName:                      node,
				TerminationGracePeriodSeconds: &grace,
				Tolerations:                   []corev1.Toleration{{Operator: corev1.TolerationOpExists}},
				Containers: []corev1.Container{{
					Name: "probe", Image: e.ProbeImage(), ImagePullPolicy: corev1.PullNever,
					Command: []string{"/bin/busybox", "sh", "-c", "/probe source-addr :8080 & exec /bin/busybox sleep 36000"},
				}},
			},
		}
		c, cancel := ctx(15 * time.Second)
		_, err := e.cs.CoreV1().Pods("default").Create(c, p, metav1.CreateOptions{})
		cancel()
		if err != nil {
			e.t.Fatalf("create %s: %v", p.Name, err)
		}
	}
}

// probeRing has each node's anchor GET the next node's anchor over both
// families (worker -> worker2 -> control plane -> worker); each answer
// must be the caller's own pod address (no translation between pods).
// It reports whether all six succeeded, and what failed.
func (e *env) probeRing() (bool, string) {
	c, cancel := ctx(10 * time.Second)
	list, err := e.cs.CoreV1().Pods("default").List(c, metav1.ListOptions{LabelSelector: "app=vr-chaos-anchor"})
	cancel()
	if err != nil {
		return false, "list anchors: " + err.Error()
	}
	ips := map[string][]string{}
	for _, p := range list.Items {
		if p.Status.Phase != corev1.PodRunning || p.DeletionTimestamp != nil {
			continue
		}
		for _, ip := range p.Status.PodIPs {
			ips[p.Name] = append(ips[p.Name], ip.IP)
		}
	}
	ring := []string{e.workers[0], e.workers[1], e.nodes[0]}
	var mu sync.Mutex
	var fails []string
	var wg sync.WaitGroup
	for i, from := range ring {
		src, dst := anchorName(from), anchorName(ring[(i+1)%len(ring)])
		if len(ips[src]) != 2 || len(ips[dst]) != 2 {
			fails = append(fails, fmt.Sprintf("%s -> %s: addresses %v -> %v", src, dst, ips[src], ips[dst]))
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			var script []string
			for _, ip := range ips[dst] {
				url := "http://" + hostPort(ip, "8080") + "/"
				script = append(script, "/bin/busybox timeout 3 /probe get "+url+" || echo failed "+url)
			}
			out, err := e.Kubectl(nil, 20*time.Second, "exec", src, "--", "/bin/busybox", "sh", "-c", strings.Join(script, "; "))
			got := strings.Fields(out)
			want := ips[src]
			if err != nil || !slices.Equal(canonAll(got), canonAll(want)) {
				mu.Lock()
				fails = append(fails, fmt.Sprintf("%s -> %s %v: answered %q (%v), want the caller's %v", src, dst, ips[dst], strings.TrimSpace(out), err, want))
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return len(fails) == 0, strings.Join(fails, "; ")
}

func hostPort(ip, port string) string {
	if strings.Contains(ip, ":") {
		return "[" + ip + "]:" + port
	}
	return ip + ":" + port
}

func canonAll(ips []string) []string {
	out := make([]string, len(ips))
	for i, ip := range ips {
		out[i] = canonIP(ip)
	}
	return out
}
