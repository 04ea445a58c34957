package nodesync

import (
	"context"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/vethroute/vethroute/pkg/agent/cniconf"
	"github.com/vethroute/vethroute/pkg/agent/masquerade"
	"github.com/vethroute/vethroute/pkg/agent/monitor"
	"github.com/vethroute/vethroute/pkg/noderoutes"
)

// fakeTable is a RouteTable that records the desired routes it is given.
type fakeTable struct {
	mu        sync.Mutex
	connected []netip.Prefix
	routes    []noderoutes.Route
	syncs     int
	failNext  int // number of Syncs that fail before one succeeds
	conflicts map[netip.Prefix]string
	// applies records the arguments of every Apply.
	applies []applyCall
}

type applyCall struct {
	set    []string
	remove []string
}

func (f *fakeTable) Connected() ([]netip.Prefix, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.connected), nil
}

func (f *fakeTable) Sync(desired []noderoutes.Route) (noderoutes.Result, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.syncs++
	if f.failNext > 0 {
		f.failNext--
		return noderoutes.Result{}, io.ErrUnexpectedEOF
	}
	var res noderoutes.Result
	f.routes = nil
	for _, d := range desired {
		if e, ok := f.conflicts[d.Dst]; ok {
			res.Conflicts = append(res.Conflicts, noderoutes.Conflict{Want: d, Existing: e})
			continue
		}
		f.routes = append(f.routes, d)
	}
	res.Programmed = len(f.routes)
	return res, nil
}

func (f *fakeTable) Apply(set []noderoutes.Route, remove []netip.Prefix) (noderoutes.Result, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var call applyCall
	var res noderoutes.Result
	for _, p := range remove {
		call.remove = append(call.remove, p.String())
		n := len(f.routes)
		f.routes = slices.DeleteFunc(f.routes, func(r noderoutes.Route) bool { return r.Dst == p })
		res.Removed += n - len(f.routes)
	}
	for _, d := range set {
		call.set = append(call.set, d.String())
		if e, ok := f.conflicts[d.Dst]; ok {
			res.Conflicts = append(res.Conflicts, noderoutes.Conflict{Want: d, Existing: e})
			continue
		}
		if i := slices.IndexFunc(f.routes, func(r noderoutes.Route) bool { return r.Dst == d.Dst }); i >= 0 {
			f.routes[i] = d
			res.Replaced++
			continue
		}
		f.routes = append(f.routes, d)
		res.Added++
	}
	f.applies = append(f.applies, call)
	return res, nil
}

// appliesSince returns the Apply calls from index i on.
func (f *fakeTable) appliesSince(i int) []applyCall {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.applies[min(i, len(f.applies)):])
}

// drop removes a route behind the controller's back (drift).
func (f *fakeTable) drop(dst string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.routes = slices.DeleteFunc(f.routes, func(r noderoutes.Route) bool { return r.Dst.String() == dst })
}

func (f *fakeTable) state() ([]string, int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []string
	for _, r := range noderoutes.Sorted(f.routes) {
		out = append(out, r.String())
	}
	return out, f.syncs
}

// fakeMasq records the pod CIDRs of the last Sync.
type fakeMasq struct {
	mu    sync.Mutex
	cidrs []string
}

func (m *fakeMasq) Sync(_ context.Context, ps []netip.Prefix) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.cidrs = nil
	for _, p := range masquerade.Collapse(ps) {
		m.cidrs = append(m.cidrs, p.String())
	}
	return nil
}

func (m *fakeMasq) get() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return slices.Clone(m.cidrs)
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// eventSource is the component the harness's Events come from.
const eventSource = "vethroute-agent"

type harness struct {
	client  *fake.Clientset
	table   *fakeTable
	masq    *fakeMasq
	ctrl    *Controller
	metrics *monitor.Metrics
	conf    string
	logs    *logBuffer
}

// logBuffer holds the controller's log, which its worker writes while the
// test reads.
type logBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

// lines returns the log lines that contain s.
func (l *logBuffer) lines(s string) []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []string
	for _, line := range strings.Split(l.b.String(), "\n") {
		if strings.Contains(line, s) {
			out = append(out, line)
		}
	}
	return out
}

// startController runs a controller for node router01 against a fake
// clientset holding nodes, until the test ends.
func startController(t *testing.T, table *fakeTable, nodes ...*corev1.Node) *harness {
	t.Helper()
	return startControllerWith(t, table, nil, nodes...)
}

// startControllerWith is startController with the Config changed by
// configure first, when it is set.
func startControllerWith(t *testing.T, table *fakeTable, configure func(*Config), nodes ...*corev1.Node) *harness {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	var objs []runtime.Object
	for _, n := range nodes {
		objs = append(objs, n)
	}
	client := fake.NewClientset(objs...)
	factory := informers.NewSharedInformerFactory(client, 0)
	metrics := monitor.NewMetrics()
	recorder, stopEvents := NewEventRecorder(ctx, client, eventSource, "router01")
	masq := &fakeMasq{}
	conf := filepath.Join(t.TempDir(), "net.d", "10-vethroute.conflist")
	cfg := Config{
		NodeName:     "router01",
		ConfPath:     conf,
		ConfBase:     cniconf.ConfData{CNIVersion: "1.1.0", Network: "vethroute", DataDir: "/var/lib/cni/vethroute"},
		ResyncPeriod: time.Hour, // only API events drive these tests
		RetryBase:    time.Millisecond,
		RetryMax:     10 * time.Millisecond,
		ClusterCIDRs: prefixes(t, "10.0.0.0/12", "192.168.0.0/16"),
	}
	if configure != nil {
		configure(&cfg)
	}
	logs := &logBuffer{}
	ctrl, err := NewController(cfg, factory.Core().V1().Nodes(), table, masq, recorder, metrics, slog.New(slog.NewTextHandler(logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	factory.Start(ctx.Done())
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := ctrl.Run(ctx); err != nil {
			t.Errorf("Run: %v", err)
		}
	}()
	t.Cleanup(func() {
		cancel()
		<-done
		factory.Shutdown()
		stopEvents()
	})
	return &harness{client: client, table: table, masq: masq, ctrl: ctrl, metrics: metrics, conf: conf, logs: logs}
}

func (h *harness) waitRoutes(t *testing.T, want ...string) {
	t.Helper()
	var got []string
	waitFor(t, "routes "+strings.Join(want, ", "), func() bool {
		got, _ = h.table.state()
		return slices.Equal(got, want)
	})
}

func TestControllerFollowsNodes(t *testing.T) {
	table := &fakeTable{connected: prefixes(t, "172.16.0.0/24")}
	h := startController(t, table,
		node("router01", []string{"192.168.0.0/24"}, "172.16.0.1"),
		node("router02", []string{"10.0.0.0/24"}, "172.16.0.2"),
	)
	ctx := context.Background()
	nodes := h.client.CoreV1().Nodes()

	h.waitRoutes(t, "10.0.0.0/24 via 172.16.0.2")
	waitFor(t, "readiness", h.ctrl.Ready)
	conf, err := os.ReadFile(h.conf)
	if err != nil {
		t.Fatalf("conflist not written: %v", err)
	}
	if !strings.Contains(string(conf), `"subnet": "192.168.0.0/24"`) || !strings.Contains(string(conf), `"gateway": "192.168.0.254"`) {
		t.Errorf("conflist lacks this node's range:\n%s", conf)
	}

	// A third node appears.
	if _, err := nodes.Create(ctx, node("router03", []string{"10.1.0.0/24"}, "172.16.0.3"), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	h.waitRoutes(t, "10.0.0.0/24 via 172.16.0.2", "10.1.0.0/24 via 172.16.0.3")

	// Its InternalIP changes.
	n3, err := nodes.Get(ctx, "router03", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	n3.Status.Addresses[0].Address = "172.16.0.33"
	if _, err := nodes.UpdateStatus(ctx, n3, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	h.waitRoutes(t, "10.0.0.0/24 via 172.16.0.2", "10.1.0.0/24 via 172.16.0.33")

	// It is deleted.
	if err := nodes.Delete(ctx, "router03", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	h.waitRoutes(t, "10.0.0.0/24 via 172.16.0.2")

	// Masquerading covers the cluster CIDRs, inside which every routed
	// pod CIDR lies.
	waitFor(t, "masquerade CIDRs", func() bool {
		return slices.Equal(h.masq.get(), []string{"10.0.0.0/12", "192.168.0.0/16"})
	})
	if got := testutil.ToFloat64(h.metrics.RoutesProgrammed); got != 1 {
		t.Errorf("routes_programmed = %v, want 1", got)
	}
	if testutil.ToFloat64(h.metrics.LastSuccess) == 0 {
		t.Error("last_successful_sync_timestamp_seconds not set")
	}
}

func TestControllerUpdatesConfList(t *testing.T) {
	h := startController(t, &fakeTable{}, node("router01", nil, "172.16.0.1"))
	ctx := context.Background()

	// Without podCIDRs the agent waits: no file, not ready, no error.
	waitFor(t, "a reconcile", func() bool {
		return testutil.ToFloat64(h.metrics.Reconciles.WithLabelValues("waiting")) > 0
	})
	if _, err := os.Stat(h.conf); !os.IsNotExist(err) {
		t.Errorf("conflist exists before the node has podCIDRs: %v", err)
	}
	if h.ctrl.Ready() {
		t.Error("ready before the CNI configuration was written")
	}
	if got := testutil.ToFloat64(h.metrics.ReconcileErrors); got != 0 {
		t.Errorf("waiting counted as %v errors", got)
	}
	// Another node's change is reconciled on its own, yet the agent
	// stays not ready while its own conflist is missing.
	reconciles := func() float64 {
		return testutil.ToFloat64(h.metrics.Reconciles.WithLabelValues("waiting")) + testutil.ToFloat64(h.metrics.Reconciles.WithLabelValues("success"))
	}
	before := reconciles()
	if _, err := h.client.CoreV1().Nodes().Create(ctx, node("router02", []string{"10.0.0.0/24"}, "172.16.0.2"), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the other node's reconcile", func() bool {
		return reconciles() > before
	})
	if h.ctrl.Ready() {
		t.Error("ready after another node's change, before the CNI configuration was written")
	}

	n, err := h.client.CoreV1().Nodes().Get(ctx, "router01", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	n.Spec.PodCIDRs = []string{"10.244.1.0/24", "fd00:10:244:1::/64"}
	n.Spec.PodCIDR = n.Spec.PodCIDRs[0]
	if _, err := h.client.CoreV1().Nodes().Update(ctx, n, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "dual-stack conflist", func() bool {
		b, err := os.ReadFile(h.conf)
		return err == nil && strings.Contains(string(b), `"gateway": "fd00:10:244:1:ffff:ffff:ffff:ffff"`) && strings.Contains(string(b), `"dst": "::/0"`)
	})
	waitFor(t, "readiness", h.ctrl.Ready)
	if got := testutil.ToFloat64(h.metrics.ConfWrites); got != 1 {
		t.Errorf("cni_config_writes_total = %v, want 1", got)
	}
}

// TestControllerEventOnUnreachableInternalIP checks that a node whose
// InternalIP is not on a connected subnet gets a Warning Event (once, not on
// every reconcile) and no route, while the other nodes are still routed.
func TestControllerEventOnUnreachableInternalIP(t *testing.T) {
	table := &fakeTable{connected: prefixes(t, "172.16.0.0/24")}
	h := startController(t, table,
		node("router01", []string{"192.168.0.0/24"}, "172.16.0.1"),
		node("router02", []string{"10.0.0.0/24"}, "172.16.0.2"),
		node("faraway", []string{"10.9.0.0/24"}, "198.51.100.9"),
	)
	h.waitRoutes(t, "10.0.0.0/24 via 172.16.0.2")

	var ev corev1.Event
	waitFor(t, "an InternalIPNotConnected event", func() bool {
		list, err := h.client.CoreV1().Events(metav1.NamespaceDefault).List(context.Background(), metav1.ListOptions{})
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range list.Items {
			if e.Reason == reasonUnreachable {
				ev = e
				return true
			}
		}
		return false
	})
	if ev.Type != corev1.EventTypeWarning || ev.InvolvedObject.Kind != "Node" || ev.InvolvedObject.Name != "faraway" ||
		ev.Source.Component != eventSource || ev.Source.Host != "router01" || !strings.Contains(ev.Message, "198.51.100.9") {
		t.Errorf("event = %+v", ev)
	}
	if got := testutil.ToFloat64(h.metrics.RouteProblems); got != 1 {
		t.Errorf("route_problems = %v, want 1", got)
	}

	// More reconciles of the same state announce nothing new.
	_, syncs := table.state()
	for range 3 {
		h.ctrl.queue.Add(syncKey)
		waitFor(t, "another reconcile", func() bool { _, s := table.state(); return s > syncs })
		_, syncs = table.state()
	}
	// The event sink writes asynchronously, and client-go's correlator
	// turns a repeated Event into a PATCH of the first: so count every
	// write of an Event to the API, not Event objects, and give a write
	// per reconcile the time it would take to show (the sink delivers
	// within milliseconds; nothing here waits for an expected value).
	eventWrites := func() int {
		n := 0
		for _, a := range h.client.Actions() {
			if a.GetResource().Resource == "events" && (a.GetVerb() == "create" || a.GetVerb() == "patch") {
				n++
			}
		}
		return n
	}
	for range 20 {
		if eventWrites() > 1 {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if n := eventWrites(); n != 1 {
		t.Errorf("%d Event writes (create or patch) for one unchanged problem over 4 reconciles, want 1", n)
	}
}

func TestControllerReportsConflicts(t *testing.T) {
	table := &fakeTable{
		connected: prefixes(t, "172.16.0.0/24"),
		conflicts: map[netip.Prefix]string{netip.MustParsePrefix("10.0.0.0/24"): "10.0.0.0/24 via 172.16.0.9 proto static"},
	}
	h := startController(t, table,
		node("router01", []string{"192.168.0.0/24"}, "172.16.0.1"),
		node("router02", []string{"10.0.0.0/24"}, "172.16.0.2"),
	)
	waitFor(t, "a RouteConflict event on router02", func() bool {
		list, err := h.client.CoreV1().Events(metav1.NamespaceDefault).List(context.Background(), metav1.ListOptions{})
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range list.Items {
			if e.Reason == reasonRouteConflict && e.InvolvedObject.Name == "router02" && strings.Contains(e.Message, "proto static") {
				return true
			}
		}
		return false
	})
}

func TestControllerRetriesWithBackoff(t *testing.T) {
	table := &fakeTable{connected: prefixes(t, "172.16.0.0/24"), failNext: 3}
	h := startController(t, table,
		node("router01", []string{"192.168.0.0/24"}, "172.16.0.1"),
		node("router02", []string{"10.0.0.0/24"}, "172.16.0.2"),
	)
	// No API event follows the failures: only the rate-limited requeue
	// can bring the route.
	h.waitRoutes(t, "10.0.0.0/24 via 172.16.0.2")
	if got := testutil.ToFloat64(h.metrics.ReconcileErrors); got != 3 {
		t.Errorf("reconcile_errors_total = %v, want 3", got)
	}
}

// TestControllerAppliesOnlyChanges checks the incremental path: each Node
// change writes only the routes that differ, without re-reading the table
// (no Sync), and the full resync still repairs drift.
func TestControllerAppliesOnlyChanges(t *testing.T) {
	table := &fakeTable{connected: prefixes(t, "172.16.0.0/24"), conflicts: map[netip.Prefix]string{}}
	h := startController(t, table,
		node("router01", []string{"192.168.0.0/24"}, "172.16.0.1"),
		node("router02", []string{"10.0.0.0/24"}, "172.16.0.2"),
		node("router03", []string{"10.0.1.0/24"}, "172.16.0.3"),
	)
	h.waitRoutes(t, "10.0.0.0/24 via 172.16.0.2", "10.0.1.0/24 via 172.16.0.3")
	waitFor(t, "readiness", h.ctrl.Ready)
	// The start queues both keys (the informer's adds and Run's first
	// sync), in either order: one or two full Syncs. Wait until the queue
	// is empty and nothing has run for a while.
	fullSyncs, quiet := -1, 0
	waitFor(t, "the start's reconciles", func() bool {
		_, n := table.state()
		if n == fullSyncs && h.ctrl.queue.Len() == 0 {
			quiet++
		} else {
			fullSyncs, quiet = n, 0
		}
		time.Sleep(100 * time.Millisecond)
		return quiet >= 3
	})
	nodes := h.client.CoreV1().Nodes()
	ctx := context.Background()

	steps := []struct {
		name   string
		change func() error
		routes []string
		want   []applyCall
	}{
		{
			name: "a node joins",
			change: func() error {
				_, err := nodes.Create(ctx, node("router04", []string{"10.0.2.0/24"}, "172.16.0.4"), metav1.CreateOptions{})
				return err
			},
			routes: []string{"10.0.0.0/24 via 172.16.0.2", "10.0.1.0/24 via 172.16.0.3", "10.0.2.0/24 via 172.16.0.4"},
			want:   []applyCall{{set: []string{"10.0.2.0/24 via 172.16.0.4"}}},
		},
		{
			name: "a node's InternalIP moves",
			change: func() error {
				_, err := nodes.Update(ctx, node("router02", []string{"10.0.0.0/24"}, "172.16.0.12"), metav1.UpdateOptions{})
				return err
			},
			routes: []string{"10.0.0.0/24 via 172.16.0.12", "10.0.1.0/24 via 172.16.0.3", "10.0.2.0/24 via 172.16.0.4"},
			want:   []applyCall{{set: []string{"10.0.0.0/24 via 172.16.0.12"}}},
		},
		{
			name:   "a node leaves",
			change: func() error { return nodes.Delete(ctx, "router03", metav1.DeleteOptions{}) },
			routes: []string{"10.0.0.0/24 via 172.16.0.12", "10.0.2.0/24 via 172.16.0.4"},
			want:   []applyCall{{remove: []string{"10.0.1.0/24"}}},
		},
		{
			name: "a node claims part of another's pod CIDR: neither is routed",
			change: func() error {
				_, err := nodes.Create(ctx, node("router05", []string{"10.0.2.0/25"}, "172.16.0.5"), metav1.CreateOptions{})
				return err
			},
			routes: []string{"10.0.0.0/24 via 172.16.0.12"},
			want:   []applyCall{{remove: []string{"10.0.2.0/24"}}},
		},
		{
			name: "a route blocked by a foreign one is tried once",
			change: func() error {
				table.mu.Lock()
				table.conflicts[netip.MustParsePrefix("10.0.3.0/24")] = "10.0.3.0/24 via 172.16.0.99 proto static"
				table.mu.Unlock()
				_, err := nodes.Create(ctx, node("router06", []string{"10.0.3.0/24"}, "172.16.0.6"), metav1.CreateOptions{})
				return err
			},
			routes: []string{"10.0.0.0/24 via 172.16.0.12"},
			want:   []applyCall{{set: []string{"10.0.3.0/24 via 172.16.0.6"}}},
		},
		{
			name: "and not again on the next change",
			change: func() error {
				_, err := nodes.Create(ctx, node("router07", []string{"10.0.4.0/24"}, "172.16.0.7"), metav1.CreateOptions{})
				return err
			},
			routes: []string{"10.0.0.0/24 via 172.16.0.12", "10.0.4.0/24 via 172.16.0.7"},
			want:   []applyCall{{set: []string{"10.0.4.0/24 via 172.16.0.7"}}},
		},
		{
			// Only router07's route depends on router02's new address
			// (an ExternalIP inside router07's pod CIDR).
			name: "another node's address inside a pod CIDR withdraws its route",
			change: func() error {
				n := node("router02", []string{"10.0.0.0/24"}, "172.16.0.12")
				n.Status.Addresses = append(n.Status.Addresses, corev1.NodeAddress{Type: corev1.NodeExternalIP, Address: "10.0.4.9"})
				_, err := nodes.Update(ctx, n, metav1.UpdateOptions{})
				return err
			},
			routes: []string{"10.0.0.0/24 via 172.16.0.12"},
			want:   []applyCall{{remove: []string{"10.0.4.0/24"}}},
		},
	}
	for _, s := range steps {
		before := len(table.appliesSince(0))
		if err := s.change(); err != nil {
			t.Fatalf("%s: %v", s.name, err)
		}
		h.waitRoutes(t, s.routes...)
		waitFor(t, s.name+": its Apply", func() bool { return len(table.appliesSince(before)) >= len(s.want) })
		// Give a stray second Apply the time to show.
		time.Sleep(50 * time.Millisecond)
		got := table.appliesSince(before)
		if !reflect.DeepEqual(got, s.want) {
			t.Errorf("%s: Apply calls %+v, want %+v", s.name, got, s.want)
		}
	}
	if _, syncs := table.state(); syncs != fullSyncs {
		t.Errorf("%d full Syncs during the Node changes, want none", syncs-fullSyncs)
	}
	if got := testutil.ToFloat64(h.metrics.RoutesProgrammed); got != 1 {
		t.Errorf("routes_programmed = %v, want 1", got)
	}

	// A route deleted behind the agent's back comes back with the full
	// resync, which re-reads the table.
	table.drop("10.0.0.0/24")
	h.ctrl.queue.Add(syncKey)
	h.waitRoutes(t, "10.0.0.0/24 via 172.16.0.12")
	if _, syncs := table.state(); syncs != fullSyncs+1 {
		t.Errorf("%d full Syncs after the resync, want 1", syncs-fullSyncs)
	}
}
