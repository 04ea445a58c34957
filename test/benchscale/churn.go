package main

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"sort"
	"sync"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// opKind is one kind of churn write.
type opKind string

const (
	opAdd    opKind = "add"    // a node registers with its pod CIDRs: its routes appear
	opDelete opKind = "delete" // a node is deleted: its routes go
	opAssign opKind = "assign" // a registered node gets its pod CIDRs: its routes appear
)

var opKinds = []opKind{opAdd, opDelete, opAssign}

// churnOp is one API write and the route changes it must cause.
type churnOp struct {
	kind    opKind
	start   time.Time // before the request was sent
	dsts    []netip.Prefix
	present bool
	err     error
}

// churnResult is what the churn phase measured.
type churnResult struct {
	Duration  time.Duration
	PerSecond int
	// Latency per kind and overall: from the write's request to the last of
	// its route changes in the kernel.
	Latency map[string]latencies
	// Writes, Failed and Missing count the writes sent, refused by the API,
	// and whose route change never showed up.
	Writes, Failed, Missing int
}

type latencies struct {
	N             int
	P50, P99, Max time.Duration
}

func summarize(d []time.Duration) latencies {
	if len(d) == 0 {
		return latencies{}
	}
	s := slices.Clone(d)
	slices.Sort(s)
	pct := func(p float64) time.Duration {
		i := int(float64(len(s))*p/100+0.999999) - 1
		return s[max(0, min(i, len(s)-1))]
	}
	return latencies{N: len(s), P50: pct(50), P99: pct(99), Max: s[len(s)-1]}
}

// churn sends perSecond writes of each kind per second for d: adds of new
// nodes (indexes from nextNew on), deletes (of deletable, oldest first,
// then of the nodes it added) and pod CIDR assignments to pool, the nodes
// registered without pod CIDRs.
func churn(ctx context.Context, cs kubernetes.Interface, w *watcher, d time.Duration, perSecond, nextNew int, deletable, pool []int) churnResult {
	mark := w.mark()
	var mu sync.Mutex
	var ops []*churnOp
	deleteQ := slices.Clone(deletable)
	record := func(op *churnOp) {
		mu.Lock()
		ops = append(ops, op)
		mu.Unlock()
	}
	next := func(kind opKind) (int, bool) {
		mu.Lock()
		defer mu.Unlock()
		switch kind {
		case opAdd:
			i := nextNew
			nextNew++
			return i, i < maxNodes
		case opDelete:
			if len(deleteQ) == 0 {
				return 0, false
			}
			i := deleteQ[0]
			deleteQ = deleteQ[1:]
			return i, true
		default:
			if len(pool) == 0 {
				return 0, false
			}
			i := pool[0]
			pool = pool[1:]
			return i, true
		}
	}
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	var wg sync.WaitGroup
	for _, kind := range opKinds {
		wg.Add(1)
		go func() {
			defer wg.Done()
			tick := time.NewTicker(time.Second / time.Duration(perSecond))
			defer tick.Stop()
			for {
				select {
				case <-ctx.Done():
					return
				case <-tick.C:
				}
				i, ok := next(kind)
				if !ok {
					continue
				}
				p4, p6 := podCIDRs(i)
				op := &churnOp{kind: kind, dsts: []netip.Prefix{p4, p6}, present: kind != opDelete, start: time.Now()}
				// The writes outlive the phase's context: one cut off
				// half-way would be counted as failed.
				wctx, wcancel := context.WithTimeout(context.Background(), 30*time.Second)
				switch kind {
				case opAdd:
					op.err = apply(wctx, cs, i, true)
					if op.err == nil {
						mu.Lock()
						deleteQ = append(deleteQ, i)
						mu.Unlock()
					}
				case opDelete:
					op.err = cs.CoreV1().Nodes().Delete(wctx, nodeName(i), metav1.DeleteOptions{})
				case opAssign:
					op.err = assignCIDRs(wctx, cs, i)
				}
				wcancel()
				record(op)
			}
		}()
	}
	wg.Wait()
	// Let the last writes reach the kernel.
	time.Sleep(10 * time.Second)
	events, _ := w.eventsSince(mark)
	return match(ops, events, d, perSecond)
}

// match finds, for every write, the first kernel change of each of its
// routes after the write started, and summarizes the delays.
func match(ops []*churnOp, events []routeEvent, d time.Duration, perSecond int) churnResult {
	byDst := map[netip.Prefix][]routeEvent{}
	for _, e := range events {
		byDst[e.dst] = append(byDst[e.dst], e)
	}
	for _, es := range byDst {
		sort.Slice(es, func(i, j int) bool { return es[i].at.Before(es[j].at) })
	}
	res := churnResult{Duration: d, PerSecond: perSecond, Latency: map[string]latencies{}}
	per := map[string][]time.Duration{}
	var all []time.Duration
	for _, op := range ops {
		res.Writes++
		if op.err != nil {
			res.Failed++
			continue
		}
		var worst time.Duration
		found := true
		for _, dst := range op.dsts {
			i := slices.IndexFunc(byDst[dst], func(e routeEvent) bool { return !e.at.Before(op.start) && e.present == op.present })
			if i < 0 {
				found = false
				break
			}
			worst = max(worst, byDst[dst][i].at.Sub(op.start))
		}
		if !found {
			res.Missing++
			continue
		}
		per[string(op.kind)] = append(per[string(op.kind)], worst)
		all = append(all, worst)
	}
	for k, v := range per {
		res.Latency[k] = summarize(v)
	}
	res.Latency["all"] = summarize(all)
	return res
}

func (c churnResult) String() string {
	a := c.Latency["all"]
	return fmt.Sprintf("%d writes (%d failed, %d without a route change), p50 %s p99 %s max %s", c.Writes, c.Failed, c.Missing, a.P50, a.P99, a.Max)
}
