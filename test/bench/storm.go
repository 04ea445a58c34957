package main

import (
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
)

// stormResult is one storm: pods ADDs, then pods DELs, conc at a time.
type stormResult struct {
	plugin           string
	conc             int
	addWall, delWall time.Duration
	addErrs, delErrs int
	// leaked is how many veths the node still held after the DELs.
	leaked   int
	firstErr string
}

// storm runs op for every pod with conc workers and returns the wall time
// and the failures.
func storm(pods []ns.NetNS, conc int, op func(i int, cont ns.NetNS) error) (time.Duration, int, string) {
	var next, errs atomic.Int64
	var first sync.Once
	var firstErr string
	var wg sync.WaitGroup
	start := time.Now()
	for range conc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= len(pods) {
					return
				}
				if err := op(i, pods[i]); err != nil {
					errs.Add(1)
					first.Do(func() { firstErr = err.Error() })
				}
			}
		}()
	}
	wg.Wait()
	return time.Since(start), int(errs.Load()), firstErr
}

// runStorms runs, for every concurrency, a storm of each plugin in turn, on
// pods container namespaces per plugin that every storm reuses.
func runStorms(l *lab, drivers []*driver, pods int, concs []int, progress func(string)) ([]stormResult, error) {
	spaces := make([][]ns.NetNS, len(drivers))
	for k := range drivers {
		for range pods {
			c, err := l.newNS("stormc")
			if err != nil {
				return nil, err
			}
			spaces[k] = append(spaces[k], c)
		}
	}
	var out []stormResult
	for _, conc := range concs {
		for k, d := range drivers {
			id := func(i int) string { return fmt.Sprintf("storm-c%d-%d", conc, i) }
			r := stormResult{plugin: d.name, conc: conc}
			var e1, e2 string
			r.addWall, r.addErrs, e1 = storm(spaces[k], conc, func(i int, c ns.NetNS) error { _, err := d.add(id(i), c); return err })
			r.delWall, r.delErrs, e2 = storm(spaces[k], conc, func(i int, c ns.NetNS) error { _, err := d.del(id(i), c); return err })
			r.firstErr = e1 + e2
			n, err := countVeths(d.node.NS)
			if err != nil {
				return nil, err
			}
			r.leaked = n
			out = append(out, r)
			progress(fmt.Sprintf("storm: %s at concurrency %d: ADDs %s, DELs %s, %d errors", d.name, conc,
				r.addWall.Round(time.Millisecond), r.delWall.Round(time.Millisecond), r.addErrs+r.delErrs))
		}
	}
	for k := range spaces {
		for _, c := range spaces[k] {
			if err := l.removeNS(c); err != nil {
				return out, err
			}
		}
	}
	return out, nil
}
