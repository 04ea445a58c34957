package kindchaos_test

import (
	"fmt"
	"slices"
	"strings"
	"time"
)

// report logs every fault's recovery times (median and worst over the
// run) and counts, as docs/reliability.md's "Cluster" section shows them.
func (e *env) report(ch *churn, seed int64, took time.Duration) {
	creates, deletes, refused := ch.counts()
	var b strings.Builder
	fmt.Fprintf(&b, "seed %d, %d rounds, %s of faults and churn; churn: %d creates, %d deletes, %d calls refused (API server down)\n",
		seed, *roundsFlag, took.Round(time.Second), creates, deletes, refused)
	b.WriteString("| fault | injections | probes answered after the fault ended: median / worst | routes right after the agent ran: median / worst | creates and deletes during | GC removed (owner records / veths) |\n")
	b.WriteString("|---|---|---|---|---|---|\n")
	for _, f := range faults {
		var probes, routes []time.Duration
		var ops int
		var gc gcCount
		for _, r := range e.results {
			if r.fault != f.name {
				continue
			}
			probes, routes = append(probes, r.probes), append(routes, r.routes)
			ops += r.ops
			gc.owners += r.gc.owners
			gc.veths += r.gc.veths
		}
		if len(probes) == 0 {
			continue
		}
		fmt.Fprintf(&b, "| %s | %d | %s / %s | %s / %s | %d | %d / %d |\n", f.name, len(probes),
			fmtDur(median(probes)), fmtDur(slices.Max(probes)), fmtDur(median(routes)), fmtDur(slices.Max(routes)), ops, gc.owners, gc.veths)
	}
	e.t.Logf("chaos summary:\n%s", b.String())
	if creates+deletes < *minOps {
		e.t.Errorf("the churn made %d creates and deletes, want at least %d", creates+deletes, *minOps)
	}
}

// median of ds (the mean of the middle two for an even count).
func median(ds []time.Duration) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	n := len(s)
	if n == 0 {
		return 0
	}
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}
