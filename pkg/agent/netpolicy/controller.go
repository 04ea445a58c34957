package netpolicy

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	corelisters "k8s.io/client-go/listers/core/v1"
	networkinglisters "k8s.io/client-go/listers/networking/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"
	"k8s.io/client-go/util/workqueue"

	"github.com/vethroute/vethroute/pkg/netpol"
)

// syncKey is the only work item: the engine takes the whole state and
// sends the kernel only what changed, so every event is one level-
// triggered sync and bursts of events collapse into one.
const syncKey = "network-policy"

// Engine programs the policy table (*netpol.Engine).
type Engine interface {
	Sync(ctx context.Context, s netpol.State) (netpol.Result, error)
	Drifted(ctx context.Context) (bool, error)
}

// Config is what the controller needs besides its collaborators.
type Config struct {
	// NodeName is the Node whose pods get chains.
	NodeName string
	// DriftPeriod is how often the table is compared with what was
	// applied (someone flushed it).
	DriftPeriod time.Duration
	// RetryBase and RetryMax bound the backoff of failed syncs.
	RetryBase, RetryMax time.Duration
	// UnwiredRetry is how soon a sync is repeated while a pod of this node
	// has addresses but no host veth yet.
	UnwiredRetry time.Duration
}

// Metrics are the controller's Prometheus metrics.
type Metrics struct {
	Rules        prometheus.Gauge
	Syncs        *prometheus.CounterVec
	SyncErrors   prometheus.Counter
	SyncDuration prometheus.Histogram
	PolicyErrors prometheus.Gauge
	UnwiredPods  prometheus.Gauge
}

// NewMetrics creates the metrics and registers them on reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	const ns, sub = "vethroute_agent", "network_policy"
	m := &Metrics{
		Rules: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns, Subsystem: sub, Name: "rules",
			Help: "nftables rules in table inet " + netpol.Table + " after the last sync."}),
		Syncs: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "syncs_total",
			Help: "Syncs of the policy table, by kind (full, incremental, unchanged) or error."}, []string{"result"}),
		SyncErrors: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "sync_errors_total",
			Help: "Syncs of the policy table that failed and were retried with backoff."}),
		SyncDuration: prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: ns, Subsystem: sub, Name: "sync_duration_seconds",
			Help: "Duration of policy syncs, from the informer cache to the kernel.", Buckets: prometheus.ExponentialBuckets(0.0005, 2, 14)}),
		PolicyErrors: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns, Subsystem: sub, Name: "policy_errors",
			Help: "Problems found in NetworkPolicies in the last sync (parts left out; see the policies' Events)."}),
		UnwiredPods: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns, Subsystem: sub, Name: "unwired_pods",
			Help: "Pods of this node with addresses but no host veth found in the last sync."}),
	}
	reg.MustRegister(m.Rules, m.Syncs, m.SyncErrors, m.SyncDuration, m.PolicyErrors, m.UnwiredPods)
	return m
}

// Controller keeps the policy table in sync with the cluster's
// NetworkPolicies, Pods and Namespaces.
type Controller struct {
	cfg      Config
	pods     corelisters.PodLister
	nss      corelisters.NamespaceLister
	pols     networkinglisters.NetworkPolicyLister
	synced   []cache.InformerSynced
	queue    workqueue.TypedRateLimitingInterface[string]
	engine   Engine
	veths    VethResolver
	recorder record.EventRecorder
	metrics  *Metrics
	log      *slog.Logger

	// reported holds the problems announced per policy, so an Event goes
	// out when a problem appears or changes. Only the worker touches it.
	reported map[string]string
	// reportedPods holds the pod problems already logged.
	reportedPods map[string]bool
}

// NewInformerFactory returns an informer factory whose caches keep only
// what policies need: a pod's labels, addresses, ports, node and phase,
// a namespace's labels. Every pod of the cluster is a possible peer, so
// the cache holds them all; stripped, they cost little.
func NewInformerFactory(client kubernetes.Interface) informers.SharedInformerFactory {
	return informers.NewSharedInformerFactoryWithOptions(client, 0, informers.WithTransform(strip))
}

func strip(obj any) (any, error) {
	switch o := obj.(type) {
	case *corev1.Pod:
		p := &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: o.Name, Namespace: o.Namespace, UID: o.UID, Labels: o.Labels, ResourceVersion: o.ResourceVersion},
			Spec:       corev1.PodSpec{NodeName: o.Spec.NodeName, HostNetwork: o.Spec.HostNetwork},
			Status:     corev1.PodStatus{Phase: o.Status.Phase, PodIPs: o.Status.PodIPs},
		}
		for _, c := range o.Spec.Containers {
			if len(c.Ports) > 0 {
				p.Spec.Containers = append(p.Spec.Containers, corev1.Container{Ports: c.Ports})
			}
		}
		return p, nil
	case *corev1.Namespace:
		return &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: o.Name, UID: o.UID, Labels: o.Labels, ResourceVersion: o.ResourceVersion}}, nil
	case *networkingv1.NetworkPolicy:
		o.ManagedFields = nil
		o.Annotations = nil
		return o, nil
	}
	return obj, nil
}

// NewController wires a controller to the factory's informers; the caller
// starts the factory after this.
func NewController(cfg Config, factory informers.SharedInformerFactory, engine Engine, veths VethResolver, recorder record.EventRecorder, metrics *Metrics, log *slog.Logger) (*Controller, error) {
	if cfg.NodeName == "" {
		return nil, errors.New("node name is empty")
	}
	if cfg.DriftPeriod <= 0 {
		cfg.DriftPeriod = 30 * time.Second
	}
	if cfg.RetryBase <= 0 {
		cfg.RetryBase = 200 * time.Millisecond
	}
	if cfg.RetryMax <= 0 {
		cfg.RetryMax = time.Minute
	}
	if cfg.UnwiredRetry <= 0 {
		cfg.UnwiredRetry = time.Second
	}
	pods := factory.Core().V1().Pods()
	nss := factory.Core().V1().Namespaces()
	pols := factory.Networking().V1().NetworkPolicies()
	c := &Controller{
		cfg:    cfg,
		pods:   pods.Lister(),
		nss:    nss.Lister(),
		pols:   pols.Lister(),
		synced: []cache.InformerSynced{pods.Informer().HasSynced, nss.Informer().HasSynced, pols.Informer().HasSynced},
		queue: workqueue.NewTypedRateLimitingQueueWithConfig(
			workqueue.NewTypedItemExponentialFailureRateLimiter[string](cfg.RetryBase, cfg.RetryMax),
			workqueue.TypedRateLimitingQueueConfig[string]{Name: "vethroute-network-policy"},
		),
		engine:   engine,
		veths:    veths,
		recorder: recorder,
		metrics:  metrics,
		log:      log,
		reported: map[string]string{},
	}
	enqueue := cache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { c.Enqueue() },
		UpdateFunc: func(any, any) { c.Enqueue() },
		DeleteFunc: func(any) { c.Enqueue() },
	}
	podHandler := enqueue
	podHandler.UpdateFunc = func(oldObj, newObj any) {
		o, ok1 := oldObj.(*corev1.Pod)
		n, ok2 := newObj.(*corev1.Pod)
		if !ok1 || !ok2 || podChanged(o, n) {
			c.Enqueue()
		}
	}
	for _, reg := range []struct {
		inf cache.SharedIndexInformer
		h   cache.ResourceEventHandler
	}{{pods.Informer(), podHandler}, {nss.Informer(), enqueue}, {pols.Informer(), enqueue}} {
		if _, err := reg.inf.AddEventHandler(reg.h); err != nil {
			return nil, fmt.Errorf("add event handler: %w", err)
		}
	}
	return c, nil
}

// podChanged reports whether an update changes what policies see of a pod;
// the stripped cache still gets an update for every status change.
func podChanged(o, n *corev1.Pod) bool {
	return !maps.Equal(o.Labels, n.Labels) || o.Spec.NodeName != n.Spec.NodeName ||
		o.Spec.HostNetwork != n.Spec.HostNetwork || o.Status.Phase != n.Status.Phase ||
		!slices.Equal(o.Status.PodIPs, n.Status.PodIPs) ||
		!slices.EqualFunc(o.Spec.Containers, n.Spec.Containers, func(a, b corev1.Container) bool { return slices.Equal(a.Ports, b.Ports) })
}

// Enqueue asks for a sync (a route to a pod changed, for instance).
func (c *Controller) Enqueue() { c.queue.Add(syncKey) }

// Run waits for the caches, then syncs until ctx ends.
func (c *Controller) Run(ctx context.Context) error {
	defer c.queue.ShutDown()
	if !cache.WaitForCacheSync(ctx.Done(), c.synced...) {
		return fmt.Errorf("network policy informer caches did not sync: %w", ctx.Err())
	}
	c.Enqueue()
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		for c.processNext(ctx) {
		}
	}()
	go func() {
		defer wg.Done()
		c.driftLoop(ctx)
	}()
	<-ctx.Done()
	c.queue.ShutDown()
	wg.Wait()
	return nil
}

// driftLoop checks the table every DriftPeriod; when someone changed it,
// the next sync rewrites it whole.
func (c *Controller) driftLoop(ctx context.Context) {
	t := time.NewTicker(c.cfg.DriftPeriod)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			drift, err := c.engine.Drifted(ctx)
			switch {
			case err != nil:
				c.log.Warn("network policy drift check failed", "err", err)
				c.Enqueue()
			case drift:
				c.log.Warn("network policy table changed behind the agent's back; rewriting it", "table", "inet "+netpol.Table)
				c.Enqueue()
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
	if err := c.sync(ctx); err != nil {
		c.log.Error("network policy sync failed; retrying with backoff", "err", err, "retries", c.queue.NumRequeues(key))
		c.queue.AddRateLimited(key)
		return true
	}
	c.queue.Forget(key)
	return true
}

// sync builds the state from the caches and hands it to the engine.
func (c *Controller) sync(ctx context.Context) (err error) {
	start := time.Now()
	defer func() {
		c.metrics.SyncDuration.Observe(time.Since(start).Seconds())
		if err != nil {
			c.metrics.Syncs.WithLabelValues("error").Inc()
			c.metrics.SyncErrors.Inc()
		}
	}()
	s, unwired, err := c.state()
	if err != nil {
		return err
	}
	res, err := c.engine.Sync(ctx, s)
	if err != nil {
		return err
	}
	kind := "incremental"
	switch {
	case res.Full:
		kind = "full"
	case res.Operations == 0:
		kind = "unchanged"
	}
	c.metrics.Syncs.WithLabelValues(kind).Inc()
	c.metrics.Rules.Set(float64(res.Rules))
	c.metrics.PolicyErrors.Set(float64(len(res.Errors)))
	c.metrics.UnwiredPods.Set(float64(unwired))
	c.report(res.Errors)
	c.log.Debug("network policy sync", "kind", kind, "rules", res.Rules, "operations", res.Operations,
		"policies", len(s.Policies), "pods", len(s.Pods), "unwired", unwired, "problems", len(res.Errors), "duration", time.Since(start))
	if unwired > 0 {
		// The plugin routes a pod before the pod's IPs reach the API, so
		// this is a pod being torn down or a race with the route watch.
		c.queue.AddAfter(syncKey, c.cfg.UnwiredRetry)
	}
	return nil
}

// state reads the caches. unwired counts this node's pods with addresses
// but no host veth.
func (c *Controller) state() (netpol.State, int, error) {
	var s netpol.State
	nss, err := c.nss.List(labels.Everything())
	if err != nil {
		return s, 0, fmt.Errorf("list namespaces from cache: %w", err)
	}
	for _, ns := range nss {
		s.Namespaces = append(s.Namespaces, netpol.Namespace{Name: ns.Name, Labels: ns.Labels})
	}
	if s.Policies, err = c.pols.List(labels.Everything()); err != nil {
		return s, 0, fmt.Errorf("list networkpolicies from cache: %w", err)
	}
	pods, err := c.pods.List(labels.Everything())
	if err != nil {
		return s, 0, fmt.Errorf("list pods from cache: %w", err)
	}
	var veths map[netip.Addr]string
	unwired := 0
	for _, p := range pods {
		// A finished pod's addresses may already be someone else's.
		if p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed {
			continue
		}
		pod := netpol.Pod{Namespace: p.Namespace, Name: p.Name, Labels: p.Labels, HostNetwork: p.Spec.HostNetwork}
		for _, ip := range p.Status.PodIPs {
			if a, err := netip.ParseAddr(ip.IP); err == nil {
				pod.IPs = append(pod.IPs, a.Unmap())
			}
		}
		if len(pod.IPs) == 0 {
			continue
		}
		for _, ctr := range p.Spec.Containers {
			pod.Ports = append(pod.Ports, ctr.Ports...)
		}
		if p.Spec.NodeName == c.cfg.NodeName && !p.Spec.HostNetwork {
			if veths == nil {
				if veths, err = c.veths.Veths(); err != nil {
					return s, 0, err
				}
			}
			for _, ip := range pod.IPs {
				if v, ok := veths[ip]; ok {
					pod.HostVeth = v
					break
				}
			}
			if pod.HostVeth == "" {
				unwired++
			}
		}
		s.Pods = append(s.Pods, pod)
	}
	return s, unwired, nil
}

// report sends an Event on each policy whose problems appeared or changed.
func (c *Controller) report(errs []error) {
	now := map[string][]string{}
	pods := map[string]bool{}
	for _, err := range errs {
		var pe netpol.PolicyError
		if errors.As(err, &pe) {
			key := pe.Namespace + "/" + pe.Name
			now[key] = append(now[key], pe.Err.Error())
			continue
		}
		pods[err.Error()] = true
		if !c.reportedPods[err.Error()] {
			c.log.Warn("network policy not applied to a pod", "err", err)
		}
	}
	c.reportedPods = pods
	for key, msgs := range now {
		msg := strings.Join(msgs, "; ")
		if c.reported[key] == msg {
			continue
		}
		c.reported[key] = msg
		ns, name, _ := strings.Cut(key, "/")
		pol, err := c.pols.NetworkPolicies(ns).Get(name)
		if err != nil {
			continue
		}
		c.log.Warn("network policy partly not applied", "policy", key, "problems", msg)
		c.recorder.Eventf(pol, corev1.EventTypeWarning, "PolicyNotApplied",
			"vethroute on node %s left out what it cannot enforce (never allowing more): %s", c.cfg.NodeName, msg)
	}
	for key := range c.reported {
		if _, ok := now[key]; !ok {
			delete(c.reported, key)
		}
	}
}
