package netpol

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"

	"sigs.k8s.io/knftables"
)

// Engine programs the table. It remembers what it last applied, so each
// Sync sends only the difference; it starts over from an empty table on
// its first Sync, after a failed one and after Drifted found the table
// changed behind its back.
type Engine struct {
	nft knftables.Interface

	mu      sync.Mutex
	applied *desired // nil: the table's content is unknown
}

// New returns an Engine working through nft, which must be bound to
// family inet and table Table (knftables.New or knftables.NewFake).
func New(nft knftables.Interface) *Engine {
	return &Engine{nft: nft}
}

// Result says what a Sync did.
type Result struct {
	// Errors are the PolicyErrors and PodErrors of the state: what could
	// not be compiled and was left out. The rest is applied.
	Errors []error
	// Rules counts the rules the table holds after the Sync.
	Rules int
	// Operations counts the nft operations sent; 0 when nothing changed.
	Operations int
	// Full is set when the table was rewritten whole.
	Full bool
}

// Sync makes the table enforce the policies of s for the pods of s with a
// HostVeth, in one nft transaction. Problems with single policies or pods
// are in the Result; the error is set only when the transaction failed, and
// then the table is as it was and the next Sync rewrites it whole.
func (e *Engine) Sync(ctx context.Context, s State) (Result, error) {
	want, errs := compile(s)
	res := Result{Errors: errs, Rules: want.rules()}

	e.mu.Lock()
	defer e.mu.Unlock()
	tx := e.nft.NewTransaction()
	if e.applied == nil {
		res.Full = true
		writeFull(tx, want)
	} else {
		writeDiff(tx, e.applied, want)
	}
	res.Operations = tx.NumOperations()
	if res.Operations == 0 {
		return res, nil
	}
	if err := e.nft.Run(ctx, tx); err != nil {
		e.applied = nil
		return res, fmt.Errorf("program table inet %s: %w", Table, err)
	}
	e.applied = want
	return res, nil
}

// Drifted compares the table in the kernel with what the engine applied:
// every chain, set and map there and each chain's rule count. When they
// differ (someone flushed or deleted the table), it returns true and the
// next Sync rewrites the table whole.
func (e *Engine) Drifted(ctx context.Context) (bool, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.applied == nil {
		return true, nil
	}
	all, err := e.nft.ListAll(ctx)
	if knftables.IsNotFound(err) {
		e.applied = nil
		return true, nil
	}
	if err != nil {
		return false, fmt.Errorf("list table inet %s: %w", Table, err)
	}
	rules, err := e.nft.ListRules(ctx, "")
	if knftables.IsNotFound(err) {
		e.applied = nil
		return true, nil
	}
	if err != nil {
		return false, fmt.Errorf("list rules of table inet %s: %w", Table, err)
	}
	count := map[string]int{}
	for _, r := range rules {
		count[r.Chain]++
	}
	wantChains := map[string]int{forwardChain: len(forwardRules)}
	for name, rs := range e.applied.chains {
		wantChains[name] = len(rs)
	}
	same := sameNames(all["chain"], slices.Collect(maps.Keys(wantChains))) &&
		sameNames(all["set"], slices.Collect(maps.Keys(e.applied.sets))) &&
		sameNames(all["map"], []string{ingressMap, egressMap}) &&
		maps.Equal(count, wantChains)
	if !same {
		e.applied = nil
	}
	return !same, nil
}

// Delete removes the table, if it is there: policy enforcement is off.
func (e *Engine) Delete(ctx context.Context) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.applied = nil
	tx := e.nft.NewTransaction()
	tx.Delete(&knftables.Table{})
	if err := e.nft.Run(ctx, tx); err != nil && !knftables.IsNotFound(err) {
		return fmt.Errorf("delete table inet %s: %w", Table, err)
	}
	return nil
}

func sameNames(a, b []string) bool {
	a, b = slices.Clone(a), slices.Clone(b)
	slices.Sort(a)
	slices.Sort(b)
	return slices.Equal(a, b)
}

// forwardRules is the base chain: replies and related traffic of accepted
// connections pass at once; then a pod's egress chain (by the interface
// the packet came from) and the ingress chain of the pod it goes to (by
// the interface it leaves through). Pods without a chain in a direction
// are not isolated in it. Egress chains return to let the ingress check
// follow; ingress chains accept.
var forwardRules = []string{
	"ct state established,related accept",
	"iifname vmap @" + egressMap,
	"oifname vmap @" + ingressMap,
}

// writeFull replaces the table with want. Deleting and re-adding the
// table in the same transaction clears whatever was there, atomically.
func writeFull(tx *knftables.Transaction, want *desired) {
	tx.Add(&knftables.Table{})
	tx.Delete(&knftables.Table{})
	tx.Add(&knftables.Table{Comment: knftables.PtrTo("vethroute-agent: NetworkPolicy of this node's pods")})
	for _, m := range []string{ingressMap, egressMap} {
		tx.Add(&knftables.Map{Name: m, Type: "ifname : verdict"})
	}
	for _, name := range sortedKeys(want.sets) {
		addSet(tx, name, want.sets[name])
	}
	for _, name := range sortedKeys(want.chains) {
		addChain(tx, name, want.chains[name])
	}
	tx.Add(&knftables.Chain{
		Name:     forwardChain,
		Type:     knftables.PtrTo(knftables.FilterType),
		Hook:     knftables.PtrTo(knftables.ForwardHook),
		Priority: knftables.PtrTo(knftables.FilterPriority),
	})
	for _, r := range forwardRules {
		tx.Add(&knftables.Rule{Chain: forwardChain, Rule: r})
	}
	for _, veth := range sortedKeys(want.egress) {
		tx.Add(mapElement(egressMap, veth, want.egress[veth]))
	}
	for _, veth := range sortedKeys(want.ingress) {
		tx.Add(mapElement(ingressMap, veth, want.ingress[veth]))
	}
}

// writeDiff changes the table from old to want, in an order nft accepts:
// sets and chains exist before anything refers to them, and references go
// before what they refer to.
func writeDiff(tx *knftables.Transaction, old, want *desired) {
	for _, name := range sortedKeys(want.sets) {
		s, o := want.sets[name], old.sets[name]
		switch {
		case o == nil:
			addSet(tx, name, s)
		case o.typ != s.typ || o.interval != s.interval:
			// Names carry the kind of set, so only a bug gets here; start
			// the set over rather than send elements of the wrong type.
			tx.Delete(&knftables.Set{Name: name})
			addSet(tx, name, s)
		case s.interval:
			// Interval elements may overlap old ones; replace them all.
			if !maps.Equal(o.elems, s.elems) {
				tx.Flush(&knftables.Set{Name: name})
				addElements(tx, name, s.elems)
			}
		default:
			for _, k := range sortedKeys(o.elems) {
				if !s.elems[k] {
					tx.Delete(&knftables.Element{Set: name, Key: splitKey(k)})
				}
			}
			for _, k := range sortedKeys(s.elems) {
				if !o.elems[k] {
					tx.Add(&knftables.Element{Set: name, Key: splitKey(k)})
				}
			}
		}
	}
	for _, name := range sortedKeys(want.chains) {
		rules, ok := old.chains[name]
		switch {
		case !ok:
			addChain(tx, name, want.chains[name])
		case !slices.Equal(rules, want.chains[name]):
			tx.Flush(&knftables.Chain{Name: name})
			for _, r := range want.chains[name] {
				tx.Add(&knftables.Rule{Chain: name, Rule: r})
			}
		}
	}
	for _, m := range []struct {
		name     string
		old, new map[string]string
	}{{egressMap, old.egress, want.egress}, {ingressMap, old.ingress, want.ingress}} {
		for _, veth := range sortedKeys(m.old) {
			if m.new[veth] != m.old[veth] {
				tx.Delete(mapElement(m.name, veth, m.old[veth]))
			}
		}
		for _, veth := range sortedKeys(m.new) {
			if m.new[veth] != m.old[veth] {
				tx.Add(mapElement(m.name, veth, m.new[veth]))
			}
		}
	}
	for _, name := range sortedKeys(old.chains) {
		if _, ok := want.chains[name]; !ok {
			tx.Flush(&knftables.Chain{Name: name})
			tx.Delete(&knftables.Chain{Name: name})
		}
	}
	for _, name := range sortedKeys(old.sets) {
		if _, ok := want.sets[name]; !ok {
			tx.Delete(&knftables.Set{Name: name})
		}
	}
}

func addSet(tx *knftables.Transaction, name string, s *setSpec) {
	set := &knftables.Set{Name: name, Type: s.typ}
	if s.interval {
		set.Flags = []knftables.SetFlag{knftables.IntervalFlag}
	}
	tx.Add(set)
	addElements(tx, name, s.elems)
}

func addElements(tx *knftables.Transaction, name string, elems map[string]bool) {
	for _, k := range sortedKeys(elems) {
		tx.Add(&knftables.Element{Set: name, Key: splitKey(k)})
	}
}

func addChain(tx *knftables.Transaction, name string, rules []string) {
	tx.Add(&knftables.Chain{Name: name})
	for _, r := range rules {
		tx.Add(&knftables.Rule{Chain: name, Rule: r})
	}
}

// mapElement sends a pod's interface to its chain. The name is quoted:
// nft reads an unquoted one that looks like a number or keyword otherwise.
func mapElement(m, veth, chain string) *knftables.Element {
	return &knftables.Element{Map: m, Key: []string{`"` + veth + `"`}, Value: []string{"jump " + chain}}
}

func splitKey(k string) []string { return strings.Split(k, " . ") }

func sortedKeys[V any](m map[string]V) []string {
	return slices.Sorted(maps.Keys(m))
}
