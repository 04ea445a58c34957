// Package containerd runs vethroute under a real container runtime:
// Debian's containerd 1.6 with its CRI plugin and runc, driven by crictl as
// the kubelet would drive it, with vethroute chained with portmap in the
// node's conflist. Every pod sandbox gets its network from vethroute; the
// test checks addresses, connectivity, the node's state and its cleanup,
// across a containerd restart.
//
// It needs root and runs everything inside namespaces it creates: see
// cluster for how containerd is kept away from the machine's own.
package containerd

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/vethroute/vethroute/internal/testutil"
	"github.com/vethroute/vethroute/pkg/routing"
)

const (
	// batch is how many pods each phase creates.
	batch = 20
	// laterPods are created after the restart, reusing freed addresses.
	laterPods = 5
	// firstHostPort is the first node port mapped to a pod.
	firstHostPort = 30000
)

func TestContainerd(t *testing.T) {
	testutil.RequireRoot(t)
	ctx := testContext(t)
	c := newCluster(ctx, t)

	var live []*pod
	port := firstHostPort
	nextPort := func() int { port++; return port }
	step := func(name string, f func(t *testing.T)) {
		start := time.Now()
		ok := t.Run(name, f)
		t.Logf("%s: %s", name, time.Since(start).Round(time.Millisecond))
		if !ok {
			t.FailNow()
		}
	}

	var sequential, concurrent []*pod
	step("RunSequential", func(t *testing.T) {
		for i := range batch {
			p, err := c.runPod(ctx, fmt.Sprintf("seq-%02d", i), nextPort())
			if err != nil {
				t.Fatal(err)
			}
			sequential = append(sequential, p)
		}
		live = append(live, sequential...)
	})
	step("RunConcurrent", func(t *testing.T) {
		ports := make([]int, batch)
		for i := range ports {
			ports[i] = nextPort()
		}
		concurrent = make([]*pod, batch)
		errs := parallel(batch, batch, func(i int) error {
			p, err := c.runPod(ctx, fmt.Sprintf("par-%02d", i), ports[i])
			concurrent[i] = p
			return err
		})
		for _, err := range errs {
			t.Error(err)
		}
		if t.Failed() {
			t.FailNow()
		}
		live = append(live, concurrent...)
	})
	step("Attached", func(t *testing.T) { c.requireAttached(ctx, t, live) })
	step("Connectivity", func(t *testing.T) { c.requireConnectivity(ctx, t, live) })

	step("RestartContainerd", func(t *testing.T) {
		if err := c.restart(ctx); err != nil {
			t.Fatalf("restart containerd: %v", err)
		}
		for _, before := range live {
			after, err := c.inspect(ctx, before.ID)
			if err != nil {
				t.Errorf("after restart: %v", err)
				continue
			}
			if !after.IP.Equal(before.IP) || after.NetNS != before.NetNS {
				t.Errorf("pod %s was %s in %s before the restart, is %s in %s after", before.Name, before.IP, before.NetNS, after.IP, after.NetNS)
			}
		}
	})
	step("AttachedAfterRestart", func(t *testing.T) { c.requireAttached(ctx, t, live) })
	step("ConnectivityAfterRestart", func(t *testing.T) { c.requireConnectivity(ctx, t, live) })

	step("RemoveAfterRestart", func(t *testing.T) {
		// Concurrent deletes race on the node and the store, as a
		// kubelet draining a node does.
		errs := parallel(len(sequential), batch, func(i int) error { return c.removePod(ctx, sequential[i].ID) })
		for _, err := range errs {
			t.Error(err)
		}
		live = concurrent
		c.requireAttached(ctx, t, live)
	})
	step("RunAfterRestart", func(t *testing.T) {
		var added []*pod
		for i := range laterPods {
			p, err := c.runPod(ctx, fmt.Sprintf("late-%02d", i), nextPort())
			if err != nil {
				t.Fatal(err)
			}
			added = append(added, p)
		}
		live = append(live, added...)
		c.requireAttached(ctx, t, live)
		c.requireConnectivity(ctx, t, live)
	})

	step("RemoveAll", func(t *testing.T) {
		for _, p := range live {
			if err := c.removePod(ctx, p.ID); err != nil {
				t.Error(err)
			}
		}
		live = nil
		c.requireAttached(ctx, t, nil)
		c.node.RequireClean(t, networkName)
		pins, err := os.ReadDir(filepath.Join(c.dir, "state", "io.containerd.grpc.v1.cri", "netns"))
		if err != nil && !os.IsNotExist(err) {
			t.Fatal(err)
		}
		for _, e := range pins {
			t.Errorf("pod network namespace pin %s left behind", e.Name())
		}
	})
}

// testContext is cancelled on SIGINT/SIGTERM and well before `go test`'s
// own deadline, so that a hung step fails and t.Cleanup still has time to
// stop containerd: a test killed by the timeout panic runs no cleanup.
func testContext(t *testing.T) context.Context {
	const cleanupReserve, needs = 3 * time.Minute, 5 * time.Minute
	deadline := time.Now().Add(20 * time.Minute)
	if d, ok := t.Deadline(); ok {
		if left := time.Until(d); left < cleanupReserve+needs {
			t.Fatalf("go test -timeout leaves %s; this test needs up to %s plus %s for cleanup: use -timeout 15m or more", left.Round(time.Second), needs, cleanupReserve)
		}
		if d.Add(-cleanupReserve).Before(deadline) {
			deadline = d.Add(-cleanupReserve)
		}
	}
	ctx, cancel := context.WithDeadline(context.Background(), deadline)
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	t.Cleanup(func() { stop(); cancel() })
	return ctx
}

// parallel runs f(0..n-1) with at most workers at a time and returns the
// errors.
func parallel(n, workers int, f func(i int) error) []error {
	var (
		mu   sync.Mutex
		errs []error
		wg   sync.WaitGroup
	)
	sem := make(chan struct{}, workers)
	for i := range n {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			if err := f(i); err != nil {
				mu.Lock()
				errs = append(errs, err)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return errs
}

// requireAttached checks that the node holds exactly what the given pods
// need and nothing else: distinct addresses from the conflist's range; one
// host veth (device group routing.LinkGroup) per pod, named after its
// sandbox ID; one proto-86 route per pod address through that veth; one
// reservation per pod; portmap's DNAT per pod; and each address on the
// pod's eth0.
func (c *cluster) requireAttached(ctx context.Context, t *testing.T, pods []*pod) {
	t.Helper()
	_, subnet, _ := net.ParseCIDR(podSubnet)
	lo, hi := net.ParseIP(rangeStart).To4(), net.ParseIP(rangeEnd).To4()
	byIP := map[string]string{}
	wantLinks, wantRoutes, wantOwners := map[string]bool{}, map[string]string{}, map[string]bool{}
	for _, p := range pods {
		ip := p.IP.To4()
		if ip == nil || !subnet.Contains(ip) || bytes.Compare(ip, lo) < 0 || bytes.Compare(ip, hi) > 0 {
			t.Errorf("pod %s has %s, outside %s-%s", p.Name, p.IP, rangeStart, rangeEnd)
		}
		if other, dup := byIP[ip.String()]; dup {
			t.Errorf("pods %s and %s share %s", other, p.Name, ip)
		}
		byIP[ip.String()] = p.Name
		veth := routing.HostVethName(p.ID, "eth0")
		wantLinks[veth] = true
		wantRoutes[ip.String()] = veth
		wantOwners[p.ID+":eth0"] = true
	}

	links, err := c.inNode(ctx, 30*time.Second, "ip", "-o", "link", "show", "group", fmt.Sprint(routing.LinkGroup))
	if err != nil {
		t.Fatal(err)
	}
	gotLinks := map[string]bool{}
	for _, line := range nonEmptyLines(links) {
		if f := strings.Fields(line); len(f) > 1 {
			name, _, _ := strings.Cut(strings.TrimSuffix(f[1], ":"), "@")
			gotLinks[name] = true
		}
	}
	compareSets(t, "host veths", keys(gotLinks), keys(wantLinks))

	routes, err := c.inNode(ctx, 30*time.Second, "ip", "-4", "route", "show", "proto", fmt.Sprint(int(routing.RouteProtocol)))
	if err != nil {
		t.Fatal(err)
	}
	gotRoutes := map[string]string{}
	for _, line := range nonEmptyLines(routes) {
		f := strings.Fields(line)
		dev := ""
		for i := 0; i+1 < len(f); i++ {
			if f[i] == "dev" {
				dev = f[i+1]
			}
		}
		gotRoutes[f[0]] = dev
	}
	compareSets(t, "node routes", pairs(gotRoutes), pairs(wantRoutes))

	owners := map[string]bool{}
	for _, o := range c.node.Reservations(t, networkName) {
		owners[o] = true
	}
	compareSets(t, "reservations", keys(owners), keys(wantOwners))

	// portmap: one DNAT per pod to its containerPort, none for pods gone.
	nat, err := c.inNode(ctx, 30*time.Second, "iptables-save", "-t", "nat")
	if err != nil {
		t.Fatal(err)
	}
	gotDNAT := map[string]bool{}
	for _, line := range nonEmptyLines(nat) {
		if _, dst, ok := strings.Cut(line, "--to-destination "); ok {
			gotDNAT[strings.Fields(dst)[0]] = true
		}
	}
	wantDNAT := map[string]bool{}
	for ip := range byIP {
		wantDNAT[fmt.Sprintf("%s:%d", ip, containerPort)] = true
	}
	compareSets(t, "portmap DNAT targets", keys(gotDNAT), keys(wantDNAT))

	errs := parallel(len(pods), 4, func(i int) error {
		p := pods[i]
		out, err := c.inPod(ctx, p, 30*time.Second, "ip", "-o", "-4", "addr", "show", "dev", "eth0")
		if err != nil {
			return err
		}
		if !strings.Contains(out, " "+p.IP.String()+"/") {
			return fmt.Errorf("pod %s: eth0 lacks %s:\n%s", p.Name, p.IP, out)
		}
		return nil
	})
	for _, err := range errs {
		t.Error(err)
	}
}

// requireConnectivity pings, for every pod, the node (the gateway, which
// is the node's address on the pod's veth) and the next pod from inside the
// pod, and the pod from the node.
func (c *cluster) requireConnectivity(ctx context.Context, t *testing.T, pods []*pod) {
	t.Helper()
	ping := []string{"ping", "-c", "2", "-i", "0.2", "-W", "2", "-q"}
	errs := parallel(len(pods), 4, func(i int) error {
		p := pods[i]
		targets := []string{gateway}
		if len(pods) > 1 {
			targets = append(targets, pods[(i+1)%len(pods)].IP.String())
		}
		for _, dst := range targets {
			if out, err := c.inPod(ctx, p, 20*time.Second, append(ping, dst)...); err != nil {
				return fmt.Errorf("pod %s (%s) cannot reach %s: %v\n%s", p.Name, p.IP, dst, err, out)
			}
		}
		if out, err := c.inNode(ctx, 20*time.Second, append(ping, p.IP.String())...); err != nil {
			return fmt.Errorf("node cannot reach pod %s (%s): %v\n%s", p.Name, p.IP, err, out)
		}
		return nil
	})
	for _, err := range errs {
		t.Error(err)
	}
}

func nonEmptyLines(s string) []string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.TrimSpace(l) != "" {
			out = append(out, l)
		}
	}
	return out
}

func keys(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	return out
}

func pairs(m map[string]string) []string {
	out := make([]string, 0, len(m))
	for k, v := range m {
		out = append(out, k+" dev "+v)
	}
	return out
}

// compareSets reports what is missing from got and what got has in excess.
func compareSets(t *testing.T, what string, got, want []string) {
	t.Helper()
	in := func(s []string) map[string]bool {
		m := map[string]bool{}
		for _, x := range s {
			m[x] = true
		}
		return m
	}
	g, w := in(got), in(want)
	var missing, extra []string
	for x := range w {
		if !g[x] {
			missing = append(missing, x)
		}
	}
	for x := range g {
		if !w[x] {
			extra = append(extra, x)
		}
	}
	sort.Strings(missing)
	sort.Strings(extra)
	if len(missing) > 0 {
		t.Errorf("%s: missing %v", what, missing)
	}
	if len(extra) > 0 {
		t.Errorf("%s: unexpected %v", what, extra)
	}
}
