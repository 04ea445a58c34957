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
	apierrors "k8s.io/apimachinery/pkg/api/errors"
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

// The work items. Both are level-triggered. syncKey (start, periodic
// resync, retries) decides every node's routes afresh from the informer's
// cache, reads the routing table and repairs any drift. changeKey (Nodes
// changed) re-decides only the changed Nodes and the few whose routes
// depend on them (routeIndex.update) and writes only the routes that
// differ from what the controller last programmed: one node's change costs
// the same few netlink requests and little memory work in any cluster.
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
// rules in sync with the cluster's Nodes, from the informer's cache: a
// Node's change re-decides the nodes it can affect and writes the routes
// that differ; a periodic resync decides everything afresh and repairs
// drift. The cache keeps serving while the API server is away, so routes
// are kept (and repaired) through an API outage.
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
	// confOK is set while the conflist matches this Node as last read:
	// until then every reconcile tries again.
	confOK bool
	ready  atomic.Bool

	// changed holds the names of the Nodes changed since the worker last
	// took them; the event handlers add to it.
	changedMu sync.Mutex
	changed   map[string]struct{}

	// What the last reconciles decided and left in the kernel, as
	// changeKey's reconciles build on it: index holds the Nodes as last
	// decided, desired every route decided and the node it reaches,
	// decided each other node's route destinations and problems, refused
	// the count of those problems by reason (the metric), applied the
	// routes programmed, conflicts the desired routes a foreign route
	// blocks.
	// needFull is set until a full sync has succeeded since the last
	// failure: after one, the kernel's state is unknown. Only the worker
	// touches them.
	index     *routeIndex
	desired   map[netip.Prefix]nodeRoute
	decided   map[string]decision
	refused   map[string]int
	applied   map[netip.Prefix]noderoutes.Route
	conflicts map[netip.Prefix]noderoutes.Conflict
	needFull  bool
}

// decision is what the controller last decided for one other node: the
// destinations of its routes and its problems.
type decision struct {
	dsts     []netip.Prefix
	problems []problem
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
		changed:   map[string]struct{}{},
		desired:   map[netip.Prefix]nodeRoute{},
		decided:   map[string]decision{},
		refused:   map[string]int{},
		applied:   map[netip.Prefix]noderoutes.Route{},
		conflicts: map[netip.Prefix]noderoutes.Conflict{},
		needFull:  true,
	}
	// Set before the informer starts (the caller starts it after this).
	if err := informer.Informer().SetTransform(StripNode); err != nil {
		return nil, fmt.Errorf("set node informer transform: %w", err)
	}
	_, err := informer.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: c.nodeChanged,
		UpdateFunc: func(oldObj, newObj any) {
			o, ok1 := oldObj.(*corev1.Node)
			n, ok2 := newObj.(*corev1.Node)
			// Kubelets rewrite their Node's status every few seconds;
			// only what routes or the CNI configuration depend on
			// matters.
			if !ok1 || !ok2 || relevantChange(o, n) {
				c.nodeChanged(newObj)
			}
		},
		DeleteFunc: c.nodeChanged,
	})
	if err != nil {
		return nil, fmt.Errorf("add node event handler: %w", err)
	}
	return c, nil
}

// nodeChanged queues the change of a Node (or of a tombstone's) for the
// worker. A Node's key is its name: Nodes are not namespaced.
func (c *Controller) nodeChanged(obj any) {
	name, err := cache.DeletionHandlingMetaNamespaceKeyFunc(obj)
	if err != nil {
		// Not a Node: re-decide everything rather than miss it.
		c.queue.Add(syncKey)
		return
	}
	c.changedMu.Lock()
	c.changed[name] = struct{}{}
	c.changedMu.Unlock()
	c.queue.Add(changeKey)
}

// takeChanged returns the Nodes changed since the last call, sorted.
func (c *Controller) takeChanged() []string {
	c.changedMu.Lock()
	defer c.changedMu.Unlock()
	out := make([]string, 0, len(c.changed))
	for name := range c.changed {
		out = append(out, name)
	}
	clear(c.changed)
	slices.Sort(out)
	return out
}

// relevantChange reports whether a Node update changes what the
// controller reads of it: its pod CIDRs, its IP addresses and InternalIPs,
// or its container runtime's version (the conflist's cniVersion may
// follow it).
func relevantChange(o, n *corev1.Node) bool {
	o4, o6 := internalIPs(o)
	n4, n6 := internalIPs(n)
	return o4 != n4 || o6 != n6 ||
		!slices.Equal(cniconf.PodCIDRs(o), cniconf.PodCIDRs(n)) ||
		!slices.Equal(nodeAddrs(o), nodeAddrs(n)) ||
		o.Status.NodeInfo.ContainerRuntimeVersion != n.Status.NodeInfo.ContainerRuntimeVersion
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

// reconcile brings the CNI configuration, the routes, the problems
// reported and, when full, the masquerade rules (which depend on the
// configuration alone) in line with the informer's cache. full decides
// every node afresh and re-reads the routing table; otherwise only the
// Nodes changed since the last reconcile are re-decided (with the few that
// depend on them) and only the routes that changed are written. Run calls
// it from its single worker; it is not safe for concurrent use.
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

	// A full reconcile reads every Node, including the changed ones.
	changed := c.takeChanged()
	if c.index == nil {
		full = true
	}
	var errs []error
	// The CNI configuration and the routes are independent: a node whose
	// own podCIDRs are not assigned yet still routes toward the others.
	if full || !c.confOK || slices.Contains(changed, c.cfg.NodeName) {
		err := c.syncConf()
		c.confOK = err == nil
		if err != nil {
			errs = append(errs, err)
		}
	}
	if err := c.syncRoutes(changed, full); err != nil {
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
func (c *Controller) syncConf() error {
	self, err := c.nodes.Get(c.cfg.NodeName)
	if apierrors.IsNotFound(err) {
		return fmt.Errorf("node %s not found: %w", c.cfg.NodeName, errWaiting)
	}
	if err != nil {
		return fmt.Errorf("get node %s from cache: %w", c.cfg.NodeName, err)
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
// had to be skipped. With full, every Node is decided afresh against the
// connected subnets read again, and the whole table Synced; otherwise the
// changed Nodes and those depending on them are re-decided and the routes
// that differ from what the last reconciles programmed are applied.
func (c *Controller) syncRoutes(changed []string, full bool) error {
	var touched []string
	if full {
		connected, err := c.routes.Connected()
		if err != nil {
			return err
		}
		nodes, err := c.nodes.List(labels.Everything())
		if err != nil {
			return fmt.Errorf("list nodes from cache: %w", err)
		}
		c.index = newRouteIndex(c.cfg.NodeName, podCIDRScope{ClusterCIDRs: c.cfg.ClusterCIDRs, Connected: connected}, nodes)
		clear(c.desired)
		touched = c.index.names()
		for name := range c.decided {
			if _, ok := c.index.nodes[name]; !ok {
				touched = append(touched, name)
			}
		}
	} else {
		affected := map[string]struct{}{}
		for _, name := range changed {
			n, err := c.nodes.Get(name)
			switch {
			case apierrors.IsNotFound(err):
				n = nil
			case err != nil:
				return fmt.Errorf("get node %s from cache: %w", name, err)
			}
			c.index.update(name, n, affected)
		}
		for name := range affected {
			touched = append(touched, name)
		}
		slices.Sort(touched)
	}

	// Take the touched nodes' old routes out of desired before adding the
	// new ones: a prefix may pass from one touched node to another.
	var dsts []netip.Prefix
	type next struct {
		routes   []nodeRoute
		problems []problem
	}
	decided := make(map[string]next, len(touched))
	for _, name := range touched {
		for _, dst := range c.decided[name].dsts {
			if c.desired[dst].Node == name {
				delete(c.desired, dst)
			}
			dsts = append(dsts, dst)
		}
		routes, problems := c.index.decide(name)
		decided[name] = next{routes: routes, problems: problems}
	}
	for _, name := range touched {
		for _, r := range decided[name].routes {
			c.desired[r.Dst] = r
			dsts = append(dsts, r.Dst)
		}
	}

	var res noderoutes.Result
	var syncErr error
	if full {
		res, syncErr = c.syncAll()
	} else {
		res, syncErr = c.applyChanges(dsts)
	}

	for _, name := range touched {
		n := decided[name]
		d := decision{problems: n.problems}
		for _, r := range n.routes {
			d.dsts = append(d.dsts, r.Dst)
			if cf, ok := c.conflicts[r.Dst]; ok {
				d.problems = append(d.problems, problem{
					Node: name, Reason: reasonRouteConflict,
					Message: fmt.Sprintf("node %s already has a route it did not create where route %s to node %s's pod CIDR would go (%s); leaving it and skipping", c.cfg.NodeName, cf.Want, name, cf.Existing),
				})
			}
		}
		c.report(name, d.problems)
		if len(d.dsts) == 0 && len(d.problems) == 0 {
			delete(c.decided, name)
		} else {
			c.decided[name] = d
		}
	}
	c.metrics.RoutesProgrammed.Set(float64(len(c.applied)))
	c.metrics.PodCIDRsRefused.Reset()
	total := 0
	for reason, n := range c.refused {
		c.metrics.PodCIDRsRefused.WithLabelValues(reason).Set(float64(n))
		total += n
	}
	c.metrics.RouteProblems.Set(float64(total))
	if res.Added+res.Replaced+res.Removed > 0 {
		c.log.Info("programmed routes", "added", res.Added, "replaced", res.Replaced, "removed", res.Removed, "programmed", len(c.applied), "full", full)
	}
	if syncErr != nil {
		return fmt.Errorf("program routes: %w", syncErr)
	}
	return nil
}

// syncAll makes the routing table hold exactly the desired routes and
// records the outcome.
func (c *Controller) syncAll() (noderoutes.Result, error) {
	want := make([]noderoutes.Route, 0, len(c.desired))
	for _, d := range c.desired {
		want = append(want, d.Route)
	}
	slices.SortFunc(want, func(a, b noderoutes.Route) int { return claimCompare(claimRef{prefix: a.Dst}, claimRef{prefix: b.Dst}) })
	res, err := c.routes.Sync(want)
	if err == nil {
		c.needFull = false
	}
	clear(c.applied)
	clear(c.conflicts)
	for _, cf := range res.Conflicts {
		c.conflicts[cf.Want.Dst] = cf
	}
	for _, r := range want {
		if _, ok := c.conflicts[r.Dst]; !ok {
			c.applied[r.Dst] = r
		}
	}
	return res, err
}

// applyChanges brings the routes to dsts in line with desired: it writes
// those that differ from what is applied (or known blocked by a foreign
// route) and deletes the applied ones no longer desired, and records the
// outcome. A failure leaves the record as it was; the full sync that
// follows a failure repairs the rest.
func (c *Controller) applyChanges(dsts []netip.Prefix) (noderoutes.Result, error) {
	var set []noderoutes.Route
	var remove []netip.Prefix
	seen := make(map[netip.Prefix]bool, len(dsts))
	for _, dst := range dsts {
		if seen[dst] {
			continue
		}
		seen[dst] = true
		d, ok := c.desired[dst]
		if !ok {
			delete(c.conflicts, dst)
			if _, ok := c.applied[dst]; ok {
				remove = append(remove, dst)
			}
			continue
		}
		if a, ok := c.applied[dst]; ok && a == d.Route {
			continue
		}
		if cf, ok := c.conflicts[dst]; ok && cf.Want == d.Route {
			continue
		}
		set = append(set, d.Route)
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

// report announces one node's new or changed problems as Warning Events
// on that Node and in the log, logs the ones that went away, and keeps the
// count of refusals by reason.
func (c *Controller) report(name string, problems []problem) {
	for _, p := range c.decided[name].problems {
		c.refused[p.Reason]--
		if c.refused[p.Reason] == 0 {
			delete(c.refused, p.Reason)
		}
	}
	seen := map[problemKey]bool{}
	for _, p := range problems {
		c.refused[p.Reason]++
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
		if n := c.index.nodes[p.Node]; n != nil && c.recorder != nil {
			c.recorder.Event(n, corev1.EventTypeWarning, p.Reason, p.Message)
		}
	}
	for _, p := range c.decided[name].problems {
		k := problemKey{p.Node, p.Reason}
		if _, ok := c.reported[k]; ok && !seen[k] {
			delete(c.reported, k)
			c.log.Info("problem resolved", "node", k.node, "reason", k.reason)
		}
	}
}
