package nodesync

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"
	coreinformers "k8s.io/client-go/informers/core/v1"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"
	"k8s.io/client-go/util/workqueue"

	"github.com/vethroute/vethroute/pkg/agent/cniconf"
	"github.com/vethroute/vethroute/pkg/agent/monitor"
	"github.com/vethroute/vethroute/pkg/netconf"
	"github.com/vethroute/vethroute/pkg/noderoutes"
	"github.com/vethroute/vethroute/pkg/uplink"
)

// The work items. Both are level-triggered: the desired state is computed
// from the whole cache either way, since the routes of one node depend on
// all nodes (overlaps), which costs memory work only. What differs is the
// kernel: syncKey (start, periodic resync, retries) reads the routing table
// and repairs any drift; changeKey (a Node changed) applies only the
// routes that differ from what the controller last programmed, so one
// node's change costs a few netlink requests in any cluster.
const (
	syncKey   = "node-routes"
	changeKey = "node-change"
)

// errWaiting reports a reconcile that cannot finish until the API delivers
// something (this node, or its podCIDRs); the informer's next event retries
// it, so it is neither counted as an error nor retried with backoff.
var errWaiting = errors.New("waiting for the API")

// RouteTable is the node's routing table as the controller uses it
// (*noderoutes.Table in production, a fake in unit tests).
type RouteTable interface {
	Connected() ([]netip.Prefix, error)
	Sync(desired []noderoutes.Route) (noderoutes.Result, error)
	Apply(set []noderoutes.Route, remove []netip.Prefix) (noderoutes.Result, error)
}

// MasqSyncer programs masquerading for a set of pod CIDRs.
type MasqSyncer interface {
	Sync(ctx context.Context, podCIDRs []netip.Prefix) error
}

// Config is what the controller needs besides its collaborators.
type Config struct {
	// NodeName is the Node this agent runs on.
	NodeName string
	// ConfPath is the CNI configuration file the agent owns.
	ConfPath string
	// ConfBase carries the conflist's fixed fields.
	ConfBase cniconf.ConfData
	// ResyncPeriod is how often the desired state is re-applied against
	// drift (a route deleted by hand) without any API change.
	ResyncPeriod time.Duration
	// RetryBase and RetryMax bound the exponential backoff of failed
	// reconciles.
	RetryBase, RetryMax time.Duration
	// ClusterCIDRs are the cluster's pod CIDRs: a Node's pod CIDR outside
	// them gets no route, and masquerading treats them as inside the
	// cluster.
	ClusterCIDRs []netip.Prefix
	// EnableForwarding, when set, turns on IP forwarding for the families
	// of this node's pod CIDRs (routing.EnableForwarding).
	EnableForwarding func(v4, v6 bool) error
	// FindUplinks, when set and ConfBase.MTU is 0, finds the interfaces
	// carrying this node's InternalIPs, whose MTU the conflist gets; nil
	// leaves the plugin's default.
	FindUplinks FindUplinks
}

// Controller keeps one node's CNI configuration, routes and masquerade
// rules in sync with the cluster's Nodes. It reconciles one level-triggered
// key: every change, and a periodic resync against drift, computes the
// whole desired state from the informer's cache and applies it. The cache
// keeps serving while the API server is away, so routes are kept (and
// repaired) through an API outage.
type Controller struct {
	cfg      Config
	nodes    corelisters.NodeLister
	synced   cache.InformerSynced
	queue    workqueue.TypedRateLimitingInterface[string]
	routes   RouteTable
	masq     MasqSyncer
	recorder record.EventRecorder
	metrics  *monitor.Metrics
	log      *slog.Logger

	// reported holds the problems already announced (node, reason ->
	// message), so an Event is sent when a problem appears or changes,
	// not on every resync. Only the worker goroutine touches it.
	reported map[problemKey]string
	// uplink is the interface whose MTU the conflist got last, nil when
	// none; mtuProblem the problem of that choice already logged. Only the
	// worker goroutine touches them.
	uplink     *uplink.Uplink
	mtuProblem string
	ready      atomic.Bool

	// What the last reconciles left in the kernel, as changeKey's
	// reconciles build on it: applied are the routes programmed,
	// conflicts the desired routes a foreign route blocks, connected the
	// node's connected subnets as the last full sync read them. needFull
	// is set until a full sync has succeeded since the last failure: after
	// one, the kernel's state is unknown. Only the worker touches them.
	applied   map[netip.Prefix]noderoutes.Route
	conflicts map[netip.Prefix]noderoutes.Conflict
	connected []netip.Prefix
	needFull  bool
}

type problemKey struct{ node, reason string }

// NewController wires a controller to a Node informer. The informer's
// factory must be started by the caller.
func NewController(cfg Config, informer coreinformers.NodeInformer, routes RouteTable, masq MasqSyncer, recorder record.EventRecorder, metrics *monitor.Metrics, log *slog.Logger) (*Controller, error) {
	if cfg.NodeName == "" {
		return nil, errors.New("node name is empty")
	}
	if cfg.ResyncPeriod <= 0 {
		cfg.ResyncPeriod = 30 * time.Second
	}
	if cfg.RetryBase <= 0 {
		cfg.RetryBase = 200 * time.Millisecond
	}
	if cfg.RetryMax <= 0 {
		cfg.RetryMax = time.Minute
	}
	c := &Controller{
		cfg:    cfg,
		nodes:  informer.Lister(),
		synced: informer.Informer().HasSynced,
		queue: workqueue.NewTypedRateLimitingQueueWithConfig(
			workqueue.NewTypedItemExponentialFailureRateLimiter[string](cfg.RetryBase, cfg.RetryMax),
			workqueue.TypedRateLimitingQueueConfig[string]{Name: "vethroute-agent"},
		),
		routes:    routes,
		masq:      masq,
		recorder:  recorder,
		metrics:   metrics,
		log:       log,
		reported:  map[problemKey]string{},
		applied:   map[netip.Prefix]noderoutes.Route{},
		conflicts: map[netip.Prefix]noderoutes.Conflict{},
		needFull:  true,
	}
	// Set before the informer starts (the caller starts it after this).
	if err := informer.Informer().SetTransform(StripNode); err != nil {
		return nil, fmt.Errorf("set node informer transform: %w", err)
	}
	_, err := informer.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: func(any) { c.queue.Add(changeKey) },
		UpdateFunc: func(oldObj, newObj any) {
			o, ok1 := oldObj.(*corev1.Node)
			n, ok2 := newObj.(*corev1.Node)
			// Kubelets rewrite their Node's status every few seconds;
			// only what routes or the CNI configuration depend on
			// matters.
			if !ok1 || !ok2 || relevantChange(o, n) {
				c.queue.Add(changeKey)
			}
		},
		DeleteFunc: func(any) { c.queue.Add(changeKey) },
	})
	if err != nil {
		return nil, fmt.Errorf("add node event handler: %w", err)
	}
	return c, nil
}

// relevantChange reports whether a Node update changes its pod CIDRs or
// InternalIPs.
func relevantChange(o, n *corev1.Node) bool {
	if !slices.Equal(cniconf.PodCIDRs(o), cniconf.PodCIDRs(n)) {
		return true
	}
	o4, o6 := internalIPs(o)
	n4, n6 := internalIPs(n)
	return o4 != n4 || o6 != n6
}

// Ready reports whether the cache has synced and a reconcile has completed:
// the CNI configuration is written and routes are programmed.
func (c *Controller) Ready() bool { return c.ready.Load() }

// Run waits for the informer's cache, then reconciles until ctx ends. It
// returns once the worker has stopped.
func (c *Controller) Run(ctx context.Context) error {
	defer c.queue.ShutDown()
	c.log.Info("waiting for the node informer's cache")
	if !cache.WaitForCacheSync(ctx.Done(), c.synced) {
		return fmt.Errorf("node informer cache did not sync: %w", ctx.Err())
	}
	c.queue.Add(syncKey)

	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		for c.processNext(ctx) {
		}
	}()
	go func() {
		defer wg.Done()
		c.resyncLoop(ctx)
	}()
	<-ctx.Done()
	c.queue.ShutDown()
	wg.Wait()
	return nil
}

// resyncLoop re-applies the desired state every ResyncPeriod: the netlink
// state can drift without any API event (a route deleted by hand). While a
// reconcile is failing, its backoff decides the pace instead.
func (c *Controller) resyncLoop(ctx context.Context) {
	t := time.NewTicker(c.cfg.ResyncPeriod)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if c.queue.NumRequeues(syncKey) == 0 {
				c.queue.Add(syncKey)
			}
		}
	}
}

func (c *Controller) processNext(ctx context.Context) bool {
	key, quit := c.queue.Get()
	if quit {
		return false
	}
	defer c.queue.Done(key)
	err := c.reconcile(ctx, key == syncKey || c.needFull)
	switch {
	case err == nil:
		c.queue.Forget(key)
	case errors.Is(err, errWaiting):
		c.queue.Forget(key)
		c.log.Info("reconcile waiting", "reason", err)
	default:
		c.log.Error("reconcile failed; retrying with backoff", "err", err, "retries", c.queue.NumRequeues(key))
		c.needFull = true
		c.queue.AddRateLimited(key)
	}
	return true
}

// reconcile computes the desired state from the informer's cache and
// applies it: CNI configuration, routes, problems, and when full the
// masquerade rules, which depend on the configuration alone. full re-reads
// the routing table; otherwise only the routes that changed are written.
// Run calls it from its single worker; it is not safe for concurrent use.
func (c *Controller) reconcile(ctx context.Context, full bool) (err error) {
	start := time.Now()
	defer func() {
		c.metrics.ReconcileDuration.Observe(time.Since(start).Seconds())
		switch {
		case err == nil:
			c.metrics.Reconciles.WithLabelValues("success").Inc()
			c.metrics.LastSuccess.Set(float64(time.Now().UnixNano()) / 1e9)
			c.ready.Store(true)
		case errors.Is(err, errWaiting):
			c.metrics.Reconciles.WithLabelValues("waiting").Inc()
		default:
			c.metrics.Reconciles.WithLabelValues("error").Inc()
			c.metrics.ReconcileErrors.Inc()
		}
	}()

	nodes, err := c.nodes.List(labels.Everything())
	if err != nil {
		return fmt.Errorf("list nodes from cache: %w", err)
	}
	var errs []error
	// The CNI configuration and the routes are independent: a node whose
	// own podCIDRs are not assigned yet still routes toward the others.
	if err := c.syncConf(nodes); err != nil {
		errs = append(errs, err)
	}
	if err := c.syncRoutes(nodes, full); err != nil {
		errs = append(errs, err)
	}
	if full && c.masq != nil {
		// Only the operator's cluster CIDRs: every pod CIDR a route is
		// accepted for lies inside them, and a Node cannot widen the set
		// (a pod CIDR of 0.0.0.0/0 would turn masquerading off).
		if err := c.masq.Sync(ctx, c.cfg.ClusterCIDRs); err != nil {
			errs = append(errs, err)
		}
	}
	return joinReconcileErrors(errs)
}

// joinReconcileErrors joins errs so that the result matches errWaiting only
// when every error is a wait: a real failure among them must be retried
// with backoff and counted.
func joinReconcileErrors(errs []error) error {
	var real, waiting []error
	for _, err := range errs {
		if errors.Is(err, errWaiting) {
			waiting = append(waiting, err)
		} else {
			real = append(real, err)
		}
	}
	if len(real) > 0 {
		for _, w := range waiting {
			real = append(real, errors.New(w.Error()))
		}
		return errors.Join(real...)
	}
	return errors.Join(waiting...)
}

// syncConf writes this node's conflist when it differs from the file.
func (c *Controller) syncConf(nodes []*corev1.Node) error {
	self := findNode(nodes, c.cfg.NodeName)
	if self == nil {
		return fmt.Errorf("node %s not found: %w", c.cfg.NodeName, errWaiting)
	}
	if len(cniconf.PodCIDRs(self)) == 0 {
		return fmt.Errorf("node %s has no spec.podCIDRs yet: %w", self.Name, errWaiting)
	}
	data, err := cniconf.NewConfData(self, c.cfg.ConfBase)
	if err != nil {
		return err
	}
	var v4, v6 bool
	for _, r := range data.Ranges {
		v6 = v6 || r.Subnet.Addr().Is6()
		v4 = v4 || r.Subnet.Addr().Is4()
	}
	if data.MTU, err = c.podMTU(self, v6); err != nil {
		return err
	}
	if c.cfg.EnableForwarding != nil {
		if err := c.cfg.EnableForwarding(v4, v6); err != nil {
			return err
		}
	}
	content, err := cniconf.RenderConfList(data)
	if err != nil {
		return err
	}
	wrote, err := cniconf.WriteFileAtomic(c.cfg.ConfPath, content, 0o644)
	if err != nil {
		return fmt.Errorf("write CNI configuration: %w", err)
	}
	if wrote {
		c.metrics.ConfWrites.Inc()
		c.log.Info("wrote CNI configuration", "path", c.cfg.ConfPath, "podCIDRs", cniconf.PodCIDRs(self), "mtu", cmp.Or(data.MTU, netconf.DefaultMTU), "dir", filepath.Dir(c.cfg.ConfPath))
	}
	return nil
}

// syncRoutes programs the routes toward the other nodes and reports what
// had to be skipped: with full, by a Sync of the whole table; otherwise by
// applying the difference from what the last reconciles programmed.
func (c *Controller) syncRoutes(nodes []*corev1.Node, full bool) error {
	if full {
		connected, err := c.routes.Connected()
		if err != nil {
			return err
		}
		c.connected = connected
	}
	desired, problems := desiredRoutes(c.cfg.NodeName, nodes, podCIDRScope{ClusterCIDRs: c.cfg.ClusterCIDRs, Connected: c.connected})
	want := make([]noderoutes.Route, len(desired))
	owner := map[netip.Prefix]string{}
	for i, d := range desired {
		want[i] = d.Route
		owner[d.Dst] = d.Node
	}
	var res noderoutes.Result
	var syncErr error
	if full {
		res, syncErr = c.routes.Sync(want)
		if syncErr == nil {
			c.needFull = false
		}
		c.applied = map[netip.Prefix]noderoutes.Route{}
		c.conflicts = map[netip.Prefix]noderoutes.Conflict{}
		for _, cf := range res.Conflicts {
			c.conflicts[cf.Want.Dst] = cf
		}
		for _, r := range want {
			if _, ok := c.conflicts[r.Dst]; !ok {
				c.applied[r.Dst] = r
			}
		}
	} else {
		res, syncErr = c.applyChanges(want)
	}
	for _, d := range want {
		cf, ok := c.conflicts[d.Dst]
		if !ok {
			continue
		}
		problems = append(problems, problem{
			Node: owner[d.Dst], Reason: reasonRouteConflict,
			Message: fmt.Sprintf("node %s already has a route it did not create where route %s to node %s's pod CIDR would go (%s); leaving it and skipping", c.cfg.NodeName, cf.Want, owner[d.Dst], cf.Existing),
		})
	}
	c.report(nodes, problems)
	c.metrics.RoutesProgrammed.Set(float64(len(c.applied)))
	c.metrics.RouteProblems.Set(float64(len(problems)))
	c.metrics.PodCIDRsRefused.Reset()
	for _, p := range problems {
		c.metrics.PodCIDRsRefused.WithLabelValues(p.Reason).Inc()
	}
	if res.Added+res.Replaced+res.Removed > 0 {
		c.log.Info("programmed routes", "added", res.Added, "replaced", res.Replaced, "removed", res.Removed, "programmed", len(c.applied), "full", full)
	}
	if syncErr != nil {
		return fmt.Errorf("program routes: %w", syncErr)
	}
	return nil
}

// applyChanges writes the routes of want that differ from what is applied
// (or known blocked by a foreign route) and deletes the applied routes no
// longer wanted, and records the outcome. A failure leaves the record as it
// was for the failed route; the full sync that follows a failure repairs
// the rest.
func (c *Controller) applyChanges(want []noderoutes.Route) (noderoutes.Result, error) {
	wanted := make(map[netip.Prefix]bool, len(want))
	var set []noderoutes.Route
	for _, d := range want {
		wanted[d.Dst] = true
		if a, ok := c.applied[d.Dst]; ok && a == d {
			continue
		}
		if cf, ok := c.conflicts[d.Dst]; ok && cf.Want == d {
			continue
		}
		set = append(set, d)
	}
	var remove []netip.Prefix
	for dst := range c.applied {
		if !wanted[dst] {
			remove = append(remove, dst)
		}
	}
	for dst := range c.conflicts {
		if !wanted[dst] {
			delete(c.conflicts, dst)
		}
	}
	if len(set) == 0 && len(remove) == 0 {
		return noderoutes.Result{}, nil
	}
	res, err := c.routes.Apply(set, remove)
	if err != nil {
		// Which change failed is not known: the retry re-reads the table.
		return res, err
	}
	for _, dst := range remove {
		delete(c.applied, dst)
	}
	blocked := map[netip.Prefix]noderoutes.Conflict{}
	for _, cf := range res.Conflicts {
		blocked[cf.Want.Dst] = cf
	}
	for _, d := range set {
		if cf, ok := blocked[d.Dst]; ok {
			c.conflicts[d.Dst] = cf
			delete(c.applied, d.Dst)
			continue
		}
		delete(c.conflicts, d.Dst)
		c.applied[d.Dst] = d
	}
	return res, nil
}

// report announces new or changed problems as Warning Events on the Node
// concerned and in the log, and logs the ones that went away.
func (c *Controller) report(nodes []*corev1.Node, problems []problem) {
	seen := map[problemKey]bool{}
	for _, p := range problems {
		k := problemKey{p.Node, p.Reason}
		if seen[k] {
			continue
		}
		seen[k] = true
		if c.reported[k] == p.Message {
			continue
		}
		c.reported[k] = p.Message
		c.log.Warn("skipping pod CIDR", "node", p.Node, "reason", p.Reason, "msg", p.Message)
		if n := findNode(nodes, p.Node); n != nil && c.recorder != nil {
			c.recorder.Event(n, corev1.EventTypeWarning, p.Reason, p.Message)
		}
	}
	for k := range c.reported {
		if !seen[k] {
			delete(c.reported, k)
			c.log.Info("problem resolved", "node", k.node, "reason", k.reason)
		}
	}
}

func findNode(nodes []*corev1.Node, name string) *corev1.Node {
	for _, n := range nodes {
		if n.Name == name {
			return n
		}
	}
	return nil
}
