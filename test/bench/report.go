package main

import (
	"fmt"
	"image/color"
	"math"
	"os"
	"os/exec"
	"runtime"
	"sort"
	"strings"
	"time"

	"gonum.org/v1/plot/plotter"
)

// machine describes where the figures come from.
type machine struct {
	cpu, kernel, goVersion string
	cores                  int
}

func machineInfo() machine {
	m := machine{cpu: "unknown", kernel: "unknown", goVersion: runtime.Version(), cores: runtime.NumCPU()}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				m.cpu = strings.TrimSpace(v)
				break
			}
		}
	}
	if out, err := exec.Command("uname", "-r").Output(); err == nil {
		m.kernel = strings.TrimSpace(string(out))
	}
	if out, err := exec.Command("go", "env", "GOVERSION").Output(); err == nil {
		m.goVersion = strings.TrimSpace(string(out))
	}
	return m
}

type namedSummary struct {
	name string
	s    *syscallSummary
}

// report is everything one run measured.
type report struct {
	opts                  *options
	args                  []string
	started               time.Time
	elapsed               time.Duration
	machine               machine
	loadBefore, loadAfter string

	seq       []*cycleStats
	storms    []stormResult
	density   *densityResult
	usage     []*usage
	dataplane *throughput
	startup   []*startup
	syscalls  []namedSummary
	inproc    *inProcessProfile
	netpol    *netpolResult
	notes     []string
}

const (
	nameVeth      = "vethroute"
	nameVethSolo  = "vethroute (no agent: DEL deletes in-process)"
	namePtp       = "ptp+host-local"
	nameFloor     = "floor (in-process)"
	nameFloorExec = "floor (exec'd binary)"
	// nameFloorReaped is the exec'd floor whose DEL hands the deletion to
	// a process that sits out the kernel's wait, as vethroute's reaper does.
	nameFloorReaped = "floor (exec'd binary, DEL handed to a reaper)"
	nameDirect      = "vethroute (exec'd directly, no libcni)"
	nameRouting     = "vethroute's routing package in-process (no exec, no IPAM)"
	densityBuckets  = 20
)

func (r *report) cycle(name string) *cycleStats {
	for _, s := range r.seq {
		if s.name == name {
			return s
		}
	}
	return &cycleStats{name: name}
}

func (r *report) usageOf(name string) *usage {
	for _, u := range r.usage {
		if u.name == name {
			return u
		}
	}
	return &usage{name: name}
}

// target is one goal of the issue and whether this run met it.
type target struct {
	goal, measured string
	met            bool
}

func verdict(ok bool) string {
	if ok {
		return "met"
	}
	return "**not met**"
}

func fmtRatio(x float64) string {
	if math.IsNaN(x) || math.IsInf(x, 0) {
		return "n/a"
	}
	return fmt.Sprintf("%.2f", x)
}

func (r *report) targets() []target {
	var ts []target
	v, so, p, fe := r.cycle(nameVeth), r.cycle(nameVethSolo), r.cycle(namePtp), r.cycle(nameFloorExec)
	vsp := func(a, b durations) string {
		return fmt.Sprintf("%s vs %s: **%s×**", ms(a.median()), ms(b.median()), fmtRatio(ratio(a.median(), b.median())))
	}
	// Alone (containerd without the agent) DEL waits for the kernel to
	// release the device, as ptp's and the exec'd floor's do; with the
	// agent's reaper it does not (package reaper), which is how vethroute
	// runs on Kubernetes.
	if len(so.cycle) > 0 && len(p.cycle) > 0 {
		ts = append(ts, target{"ADD+DEL cycle median, vethroute alone (no agent: DEL deletes in-process) ≤ 0.55 × ptp+host-local's",
			vsp(so.cycle, p.cycle), ratio(so.cycle.median(), p.cycle.median()) <= 0.55})
	}
	if len(v.cycle) > 0 && len(p.cycle) > 0 {
		ts = append(ts, target{"ADD+DEL cycle median, vethroute with the node agent's reaper (as deployed on Kubernetes) ≤ 0.3 × ptp+host-local's",
			vsp(v.cycle, p.cycle), ratio(v.cycle.median(), p.cycle.median()) <= 0.3})
	}
	// The floor is two execs of a minimal static Go binary plus the netlink
	// work (section 6), compared like with like: with the reaper against
	// the floor whose DEL is handed off too, alone against the floor whose
	// DEL waits for the kernel.
	if fr := r.cycle(nameFloorReaped); len(v.cycle) > 0 && len(fr.cycle) > 0 {
		ts = append(ts, target{"ADD+DEL cycle median, vethroute with the reaper ≤ 1.1 × the exec'd floor's with its DEL handed to a reaper (section 6)",
			vsp(v.cycle, fr.cycle), ratio(v.cycle.median(), fr.cycle.median()) <= 1.1})
	}
	if len(so.cycle) > 0 && len(fe.cycle) > 0 {
		ts = append(ts, target{"ADD+DEL cycle median, vethroute alone ≤ 1.1 × the exec'd floor's (section 6; both DELs wait for the kernel)",
			vsp(so.cycle, fe.cycle), ratio(so.cycle.median(), fe.cycle.median()) <= 1.1})
	}
	if len(so.add) > 0 && len(p.add) > 0 {
		ts = append(ts, target{"ADD median, vethroute alone ≤ 0.45 × ptp+host-local's",
			vsp(so.add, p.add), ratio(so.add.median(), p.add.median()) <= 0.45})
	}
	if d := r.density; d != nil {
		lv := d.levels[nameVeth]
		if len(lv) >= 2 {
			lo, hi := lv[0], lv[len(lv)-1]
			rr := ratio(hi.add.p99(), lo.add.p99())
			ts = append(ts, target{fmt.Sprintf("ADD p99 at %d containers ≤ 1.25 × ADD p99 at %d", hi.n, lo.n),
				fmt.Sprintf("%s vs %s: **%s×**", ms(hi.add.p99()), ms(lo.add.p99()), fmtRatio(rr)), rr <= 1.25})
		}
	}
	maxConc := r.opts.concs[len(r.opts.concs)-1]
	var sv, sp *stormResult
	for i := range r.storms {
		s := &r.storms[i]
		if s.conc == maxConc && s.plugin == nameVeth {
			sv = s
		}
		if s.conc == maxConc && s.plugin == namePtp {
			sp = s
		}
	}
	if sv != nil && sp != nil {
		errs := sv.addErrs + sv.delErrs + sv.leaked
		ts = append(ts, target{fmt.Sprintf("%d-pod storm at concurrency %d: zero errors", r.opts.stormPods, maxConc),
			fmt.Sprintf("%d errors, %d veths left", sv.addErrs+sv.delErrs, sv.leaked), errs == 0})
		rs := ratio(sv.addWall+sv.delWall, sp.addWall+sp.delWall)
		ts = append(ts, target{fmt.Sprintf("%d-pod storm at concurrency %d: wall ≤ 0.5 × ptp's (vethroute with the agent's reaper)", r.opts.stormPods, maxConc),
			fmt.Sprintf("%s vs %s: **%s×**", (sv.addWall + sv.delWall).Round(time.Millisecond), (sp.addWall + sp.delWall).Round(time.Millisecond), fmtRatio(rs)), rs <= 0.5})
	}
	if dp := r.dataplane; dp != nil && len(dp.topos) == 2 {
		tv, tp := dp.topos[0], dp.topos[1]
		for _, sc := range []struct {
			name   string
			vs, ps []float64
		}{{"on one node", tv.sameBps, tp.sameBps}, {"across two routers", tv.xBps, tp.xBps}} {
			// The best run is the estimate of capacity: load from elsewhere
			// on a shared machine only ever takes throughput away.
			rr := maxFloat(sc.vs) / maxFloat(sc.ps)
			ts = append(ts, target{"data-plane throughput " + sc.name + " ≥ 0.95 × ptp's (best of the runs)",
				fmt.Sprintf("%s vs %s Gbit/s: **%s×** (medians %s vs %s: %s×)", gbps(maxFloat(sc.vs)), gbps(maxFloat(sc.ps)), fmtRatio(rr),
					gbps(medianFloat(sc.vs)), gbps(medianFloat(sc.ps)), fmtRatio(medianFloat(sc.vs)/medianFloat(sc.ps))), rr >= 0.95})
		}
	}
	uv, up := r.usageOf(nameVeth), r.usageOf(namePtp)
	if len(uv.addRSS) > 0 {
		rv, rpt := medianInt64(uv.addRSS), medianInt64(up.addRSS)
		ts = append(ts, target{"peak RSS of one ADD ≤ ptp's (median of the runs' ru_maxrss)",
			fmt.Sprintf("%s vs %s: **%s×**", mib(rv), mib(rpt), fmtRatio(float64(rv)/float64(rpt))), rv > 0 && rv <= rpt})
	}
	return ts
}

func gbps(bps float64) string {
	if math.IsNaN(bps) {
		return "n/a"
	}
	return fmt.Sprintf("%.2f", bps/1e9)
}

func mib(kb int64) string { return fmt.Sprintf("%.1f MiB", float64(kb)/1024) }

// markdown renders docs/benchmarks.md.
func (r *report) markdown() string {
	var b strings.Builder
	w := func(format string, a ...any) { fmt.Fprintf(&b, format, a...) }
	o := r.opts
	mode := "full"
	if o.quick {
		mode = "quick (smoke)"
	}
	w("# vethroute benchmarks\n\n")
	w("Generated by `%s` (mode: %s) on %s in %s. Do not edit by hand: `make bench` regenerates this file and `%s`.\n\n",
		commandLine(r.args), mode, r.started.UTC().Format("2006-01-02 15:04 UTC"), r.elapsed.Round(time.Second), o.plot)
	w("vethroute is compared with the reference **ptp + host-local** of containernetworking/plugins at the version go.mod pins (built from its `tool` directives with the same Go and `CGO_ENABLED=0`). ")
	w("Both run in the same process, operation by operation alternating, each on its own node namespace with identical ranges, routes and MTU, driven through libcni from inside the node's namespace as a runtime on that node would. ")
	w("The machine is shared: absolute figures are noisy, **ratios within this one run are what counts**.\n\n")

	w("## Machine\n\n| CPU | cores | kernel | Go | load average before | load average after |\n|---|---|---|---|---|---|\n")
	w("| %s | %d | %s | %s | %s | %s |\n\n", r.machine.cpu, r.machine.cores, r.machine.kernel, r.machine.goVersion, r.loadBefore, r.loadAfter)

	w("## Commands\n\n```sh\n")
	w("make bench                                         # go run ./test/bench -out docs/benchmarks.md (root, ~10 min)\n")
	w("go run ./test/bench -quick -out /tmp/bench.md      # smoke run, ~1-2 min\n")
	w("go test ./test/bench/                              # smoke test: correctness only, never timing\n")
	w("go test -run '^$' -bench . ./pkg/routing/ ./pkg/ipam/   # Go benchmarks of the hot paths\n")
	w("```\n\n")

	w("## Targets\n\n| target | measured | |\n|---|---|---|\n")
	for _, t := range r.targets() {
		w("| %s | %s | %s |\n", t.goal, t.measured, verdict(t.met))
	}
	w("\n")

	r.writeSeq(w)
	r.writeStorms(w)
	r.writeDensity(w)
	r.writeUsage(w)
	r.writeDataPlane(w)
	r.writeFloor(w)
	r.writeProfile(w)
	r.writeNetpol(w)
	r.writeFindings(w)
	if len(r.notes) > 0 {
		w("## Notes of this run\n\n")
		for _, n := range r.notes {
			w("- %s\n", n)
		}
		w("\n")
	}
	return b.String()
}

func commandLine(args []string) string {
	if len(args) == 0 {
		return "go run ./test/bench"
	}
	return strings.TrimSpace("go run ./test/bench " + strings.Join(args[1:], " "))
}

func (r *report) writeSeq(w func(string, ...any)) {
	w("## 1. Sequential ADD+DEL\n\n")
	if len(r.seq) == 0 {
		w("Not run (-sections).\n\n")
		return
	}
	w("%d cycles per plugin, one at a time, a new container ID each cycle in a reused container namespace; the node holds no other container. ", r.opts.cycles)
	w("Cycle i of every row of this section and of section 6 runs before cycle i+1 of any, starting with a different row each time. ")
	w("After every cycle, untimed, the run deletes a scratch veth and pauses 10 ms, so that each cycle starts with no deletion in flight in the kernel: a reaper's deletion goes on after DEL has returned, and the next row's DEL would wait for it in rcu_barrier() (before this step, the in-process routing row's DEL measured twice the floor's for that reason alone). ")
	w("Network: /20 range, default route, MTU 1500, and the router route `10.200.0.0/20 via 172.16.0.2` (vethroute's `hostRoutes`, checked on every ADD; added by hand on ptp's node). ")
	w("vethroute's node runs `vethroute-agent reaper` (the node agent's reaper, which every Kubernetes node running vethroute has): DEL hands it the host veth and returns once the node no longer lists the interface, instead of waiting for the kernel to release the device (`pkg/reaper`). ")
	w("\"%s\" is the same binary on a node without the agent.\n\n", nameVethSolo)
	w("| plugin | ADD median | ADD p99 | DEL median | DEL p99 | cycle median | cycle p99 | errors |\n|---|---|---|---|---|---|---|---|\n")
	for _, s := range r.seq {
		if s.name == nameVeth || s.name == namePtp || (strings.HasPrefix(s.name, nameVeth+" (") && s.name != nameDirect) {
			w("| %s | %s | %s | %s | %s | %s | %s | %d |\n", s.name, ms(s.add.median()), ms(s.add.p99()), ms(s.del.median()), ms(s.del.p99()),
				ms(s.cycle.median()), ms(s.cycle.p99()), s.errors)
		}
	}
	p := r.cycle(namePtp)
	w("\n")
	for _, name := range []string{nameVeth, nameVethSolo} {
		v := r.cycle(name)
		if len(v.cycle) == 0 {
			continue
		}
		w("%s / ptp+host-local: ADD median **%s×**, DEL median **%s×**, cycle median **%s×**, cycle p99 **%s×**.\n\n", name,
			fmtRatio(ratio(v.add.median(), p.add.median())), fmtRatio(ratio(v.del.median(), p.del.median())),
			fmtRatio(ratio(v.cycle.median(), p.cycle.median())), fmtRatio(ratio(v.cycle.p99(), p.cycle.p99())))
	}
	for _, s := range r.seq {
		if s.firstErr != "" {
			w("First error of %s: `%s`\n\n", s.name, oneLine(s.firstErr))
		}
	}
}

func (r *report) writeStorms(w func(string, ...any)) {
	if len(r.storms) == 0 {
		w("## 2. Storms\n\nNot run (-sections).\n\n")
		return
	}
	w("## 2. Storms\n\n%d ADDs, then %d DELs, by a pool of N concurrent workers (each a libcni call in the node's namespace); the plugins take turns, storm by storm. ", r.opts.stormPods, r.opts.stormPods)
	w("vethroute's node runs the agent's reaper, as in section 1. \"veths left\" counts the node's veths right after the DELs (must be 0).\n\n")
	w("| plugin | concurrency | ADD wall | DEL wall | total wall | errors | veths left |\n|---|---|---|---|---|---|---|\n")
	walls := map[string]map[int]time.Duration{}
	for _, s := range r.storms {
		w("| %s | %d | %s | %s | %s | %d | %d |\n", s.plugin, s.conc, s.addWall.Round(time.Millisecond), s.delWall.Round(time.Millisecond),
			(s.addWall + s.delWall).Round(time.Millisecond), s.addErrs+s.delErrs, s.leaked)
		if walls[s.plugin] == nil {
			walls[s.plugin] = map[int]time.Duration{}
		}
		walls[s.plugin][s.conc] = s.addWall + s.delWall
	}
	w("\nTotal wall vethroute / ptp+host-local:")
	for _, c := range r.opts.concs {
		w(" concurrency %d **%s×**;", c, fmtRatio(ratio(walls[nameVeth][c], walls[namePtp][c])))
	}
	w("\n\n")
	for _, s := range r.storms {
		if s.firstErr != "" {
			w("First error of %s at concurrency %d: `%s`\n\n", s.plugin, s.conc, oneLine(s.firstErr))
		}
	}
}

func (r *report) writeDensity(w func(string, ...any)) {
	d := r.density
	w("## 3. Density\n\n")
	if d == nil {
		w("Not run.\n\n")
		return
	}
	w("Each node is filled to %v containers (one network namespace each, the fill ADDs of both plugins interleaved); at each level %d ADD+DEL probes of one more container alternate between the plugins.\n\n",
		r.opts.levels, r.opts.probes)
	w("| plugin | containers on the node | ADD median | ADD p99 | DEL median | DEL p99 | errors |\n|---|---|---|---|---|---|---|\n")
	for _, name := range []string{nameVeth, namePtp} {
		for _, lv := range d.levels[name] {
			w("| %s | %d | %s | %s | %s | %s | %d |\n", name, lv.n, ms(lv.add.median()), ms(lv.add.p99()), ms(lv.del.median()), ms(lv.del.p99()), lv.errors)
		}
	}
	for _, lv := range d.control {
		w("| exec'd floor, empty node (load control) | %d | %s | %s | %s | %s | %d |\n", lv.n, ms(lv.add.median()), ms(lv.add.p99()), ms(lv.del.median()), ms(lv.del.p99()), lv.errors)
	}
	for _, lv := range d.nodeFloor {
		w("| in-process floor on vethroute's node (the kernel's share) | %d | %s | %s | %s | %s | %d |\n", lv.n, ms(lv.add.median()), ms(lv.add.p99()), ms(lv.del.median()), ms(lv.del.p99()), lv.errors)
	}
	w("\nThe levels are measured minutes apart and the machine's load moves in between; the load control (the exec'd floor on an empty node of its own, probed in the same loop) moves only with the load. From the lowest to the highest level:\n\n")
	var ctlAdd99, ctlAddMed, ctlDel99 float64 = math.NaN(), math.NaN(), math.NaN()
	if c := d.control; len(c) >= 2 {
		lo, hi := c[0], c[len(c)-1]
		ctlAdd99, ctlAddMed, ctlDel99 = ratio(hi.add.p99(), lo.add.p99()), ratio(hi.add.median(), lo.add.median()), ratio(hi.del.p99(), lo.del.p99())
		w("- load control: ADD p99 **%s×**, ADD median **%s×**, DEL p99 **%s×**\n", fmtRatio(ctlAdd99), fmtRatio(ctlAddMed), fmtRatio(ctlDel99))
	}
	if nf := d.nodeFloor; len(nf) >= 2 {
		lo, hi := nf[0], nf[len(nf)-1]
		a99, amed, d99 := ratio(hi.add.p99(), lo.add.p99()), ratio(hi.add.median(), lo.add.median()), ratio(hi.del.p99(), lo.del.p99())
		w("- in-process floor on vethroute's node: ADD p99 **%s×** (%s× the control's), ADD median **%s×** (%s×), DEL p99 **%s×** (%s×)\n",
			fmtRatio(a99), fmtRatio(a99/ctlAdd99), fmtRatio(amed), fmtRatio(amed/ctlAddMed), fmtRatio(d99), fmtRatio(d99/ctlDel99))
	}
	for _, name := range []string{nameVeth, namePtp} {
		lv := d.levels[name]
		if len(lv) >= 2 {
			lo, hi := lv[0], lv[len(lv)-1]
			a99, amed, d99 := ratio(hi.add.p99(), lo.add.p99()), ratio(hi.add.median(), lo.add.median()), ratio(hi.del.p99(), lo.del.p99())
			w("- %s: ADD p99 **%s×** (%s× the control's), ADD median **%s×** (%s×), DEL p99 **%s×** (%s×)\n", name,
				fmtRatio(a99), fmtRatio(a99/ctlAdd99), fmtRatio(amed), fmtRatio(amed/ctlAddMed), fmtRatio(d99), fmtRatio(d99/ctlDel99))
		}
	}
	w("\n![ADD latency against density](%s)\n\n", baseName(r.opts.plot))
	if lv := d.levels[nameVeth]; len(lv) > 0 && len(lv[0].hostRoutes) > 0 {
		w("vethroute's router-route check (`noderoutes.Ensure`, in-process, the route already present) at each level: it asks the kernel for the matching route (FIB match) rather than listing the routing table, whose size follows the node's (one host route per container), so its cost should stay flat:\n\n| containers | median | p99 |\n|---|---|---|\n")
		for _, l := range lv {
			w("| %d | %s | %s |\n", l.n, ms(l.hostRoutes.median()), ms(l.hostRoutes.p99()))
		}
		w("\n")
	}
	w("Netlink requests, namespace switches, execs and files opened by one directly executed ADD and DEL (with children), from `strace -f -yy` at each level; \"dump\" requests make the kernel send everything of that kind the namespace holds:\n\n")
	w("| plugin | containers | ADD requests (dumps) | ADD bytes from netlink | DEL requests (dumps) | DEL bytes from netlink | setns ADD/DEL | execs ADD/DEL | files opened ADD/DEL |\n|---|---|---|---|---|---|---|---|---|\n")
	for _, name := range []string{nameVeth, namePtp} {
		for _, l := range d.levels[name] {
			if l.trace == nil {
				continue
			}
			a, dl := l.trace.add, l.trace.del
			w("| %s | %d | %d (%d) | %s | %d (%d) | %s | %d/%d | %d/%d | %d/%d |\n", name, l.n, a.total, a.dumps, kib(a.recvBytes), dl.total, dl.dumps, kib(dl.recvBytes), a.setns, dl.setns, a.execs, dl.execs, a.opens, dl.opens)
		}
	}
	w("\n")
	for _, name := range []string{nameVeth, namePtp} {
		lv := d.levels[name]
		if len(lv) == 0 || lv[len(lv)-1].trace == nil {
			continue
		}
		l := lv[len(lv)-1]
		w("%s at %d containers, ADD: %s. DEL: %s.\n\n", name, l.n, requestList(l.trace.add), requestList(l.trace.del))
	}
	fillErrs := 0
	for _, n := range d.fillErrs {
		fillErrs += n
	}
	drainErrs := 0
	for _, n := range d.drainErrs {
		drainErrs += n
	}
	w("Cost of the density section itself (%s in all): %d container namespaces created at %s median, %s p99 each (%s in all); ",
		d.total.Round(time.Second), len(d.nsCreate), ms(d.nsCreate.median()), ms(d.nsCreate.p99()), d.nsCreate.sum().Round(time.Millisecond))
	w("draining the nodes with DEL, %d at a time, took %s (vethroute) and %s (ptp+host-local); removing the %d namespaces took %s (the kernel frees them asynchronously afterwards). Fill ADD errors: %d, drain DEL errors: %d.\n\n",
		drainWorkers, d.drain[nameVeth].Round(time.Millisecond), d.drain[namePtp].Round(time.Millisecond), d.nsCount, d.nsRemove.Round(time.Millisecond), fillErrs, drainErrs)
}

func requestList(c *nlCounts) string {
	type kv struct {
		k string
		v int
	}
	var l []kv
	for k, v := range c.requests {
		l = append(l, kv{k, v})
	}
	sort.Slice(l, func(i, j int) bool { return l[i].v > l[j].v || (l[i].v == l[j].v && l[i].k < l[j].k) })
	s := make([]string, len(l))
	for i, x := range l {
		s[i] = fmt.Sprintf("%d× %s", x.v, x.k)
	}
	return strings.Join(s, ", ")
}

func kib(b int64) string { return fmt.Sprintf("%.1f KiB", float64(b)/1024) }

func baseName(p string) string {
	if i := strings.LastIndex(p, "/"); i >= 0 {
		return p[i+1:]
	}
	return p
}

func (r *report) writeUsage(w func(string, ...any)) {
	if len(r.usage) == 0 {
		w("## 4. Resource use of one ADD\n\nNot run (-sections).\n\n")
		return
	}
	w("## 4. Resource use of one ADD\n\n%d ADDs (each followed by its DEL) per plugin, the binary executed directly with CNI environment variables (no libcni), plugins alternating. ", r.opts.usageRuns)
	w("Wall and CPU time are wait4's rusage of the plugin process, which includes the children it waited for (ptp's host-local is counted in ptp's CPU time). ")
	w("Peak RSS is ru_maxrss from a second set of runs under GNU time (`time -f %%M`), the largest of the plugin and its children: wait4's own ru_maxrss of a process forked by the Go benchmark reports the benchmark's size, because the kernel carries the forking address space's high-water mark across exec.\n\n")
	w("| plugin | ADD wall median | ADD peak RSS median (max) | ADD CPU median (user + sys) | DEL wall median | DEL peak RSS median | DEL CPU median | errors |\n|---|---|---|---|---|---|---|---|\n")
	for _, name := range []string{nameVeth, namePtp} {
		u := r.usageOf(name)
		w("| %s | %s | %s (%s) | %s (%s + %s) | %s | %s | %s | %d |\n", name, ms(u.addWall.median()), mib(medianInt64(u.addRSS)), mib(maxInt64(u.addRSS)),
			ms(u.addCPU.median()), ms(u.addUser.median()), ms(u.addSys.median()), ms(u.delWall.median()), mib(medianInt64(u.delRSS)), ms(u.delCPU.median()), u.errors)
	}
	v, p := r.usageOf(nameVeth), r.usageOf(namePtp)
	w("\nvethroute / ptp+host-local: ADD peak RSS **%s×**, ADD CPU **%s×**, ADD wall **%s×**.\n\n",
		fmtRatio(float64(medianInt64(v.addRSS))/float64(medianInt64(p.addRSS))), fmtRatio(ratio(v.addCPU.median(), p.addCPU.median())), fmtRatio(ratio(v.addWall.median(), p.addWall.median())))
	for _, u := range r.usage {
		if u.firstErr != "" {
			w("First error of %s: `%s`\n\n", u.name, oneLine(u.firstErr))
		}
	}
}

func (r *report) writeDataPlane(w func(string, ...any)) {
	d := r.dataplane
	w("## 5. Data plane\n\n")
	if d == nil || d.skipped != "" {
		reason := "not run"
		if d != nil {
			reason = d.skipped
		}
		w("Skipped: %s.\n\n", reason)
		return
	}
	w("The article's topology per plugin: node A (router01, pods 192.168.0.0/24, gateway .254) and node B (router02, pods 10.0.0.0/24) joined by a veth 172.16.0.1/24 — 172.16.0.2/24, each with a route to the other's pod subnet (vethroute: `hostRoutes`; ptp: added by hand). ")
	w("iperf3 TCP, %s per run, %d run(s) per scenario and plugin, alternating; the server is bound to the container's address inside its namespace. Figures in Gbit/s; the targets compare the best runs, since load from elsewhere on the machine only ever takes throughput away.\n\n", r.opts.iperfTime, r.opts.iperfRounds)
	w("| plugin | one node (a2 → a1): best / median | runs | across two routers (b1 → a1): best / median | runs | ping TTL across | errors |\n|---|---|---|---|---|---|---|\n")
	for _, t := range d.topos {
		w("| %s | %s / %s | %s | %s / %s | %s | %d | %d |\n", t.plugin, gbps(maxFloat(t.sameBps)), gbps(medianFloat(t.sameBps)), runList(t.sameBps),
			gbps(maxFloat(t.xBps)), gbps(medianFloat(t.xBps)), runList(t.xBps), t.ttl, t.errors)
	}
	w("\nA TTL of 62 shows the packet crossed both routers, as in the article.\n\n")
	for _, t := range d.topos {
		if t.firstErr != "" {
			w("First error of %s: `%s`\n\n", t.plugin, oneLine(t.firstErr))
		}
	}
}

func (r *report) writeFloor(w func(string, ...any)) {
	w("## 6. The floor\n\n")
	if len(r.seq) == 0 {
		w("Not run (-sections).\n\n")
		return
	}
	w("The floor is the netlink work any plugin must do for this topology (`test/bench/floor`): one veth request with the peer created in the container's namespace, the container's address, link up and three routes (gateway on-link, subnet, default), the gateway /32 and host route on the node end, link up; DEL deletes the node end. No IPAM, no configuration, no checks. ")
	w("It ran in the loop of section 1, in-process (a function call in the node's namespace) and as `floorplugin`, a minimal static Go binary doing the same, executed directly: the cost of starting any Go plugin process plus the floor. ")
	w("A second exec'd floor hands its DEL to a reaper of its own (in the benchmark's process: it deletes the link, answers over a Unix socket once the node no longer lists it and sits out the kernel's release of the device): the floor of vethroute with the agent's reaper. ")
	w("Between the floor and the plugin as a runtime calls it, the same loop ran vethroute's routing package in-process (Setup + noderoutes.Ensure, Teardown: no exec, no IPAM) and the vethroute binary executed directly (no libcni).\n\n")
	w("| | ADD median | DEL median | cycle median | cycle p99 | errors |\n|---|---|---|---|---|---|\n")
	for _, name := range []string{nameFloor, nameRouting, nameFloorExec, nameFloorReaped, nameDirect, nameVeth, nameVethSolo, namePtp} {
		s := r.cycle(name)
		w("| %s | %s | %s | %s | %s | %d |\n", name, ms(s.add.median()), ms(s.del.median()), ms(s.cycle.median()), ms(s.cycle.p99()), s.errors)
	}
	v, f, fe, p := r.cycle(nameVeth), r.cycle(nameFloor), r.cycle(nameFloorExec), r.cycle(namePtp)
	rt, dx := r.cycle(nameRouting), r.cycle(nameDirect)
	w("\nCycle medians against the floor in-process: routing package **%s×**, vethroute **%s×**, ptp+host-local **%s×**. ",
		fmtRatio(ratio(rt.cycle.median(), f.cycle.median())), fmtRatio(ratio(v.cycle.median(), f.cycle.median())), fmtRatio(ratio(p.cycle.median(), f.cycle.median())))
	w("Against the exec'd floor: vethroute executed directly **%s×**, vethroute through libcni **%s×**, ptp+host-local **%s×**.\n\n",
		fmtRatio(ratio(dx.cycle.median(), fe.cycle.median())), fmtRatio(ratio(v.cycle.median(), fe.cycle.median())), fmtRatio(ratio(p.cycle.median(), fe.cycle.median())))
}

func (r *report) writeProfile(w func(string, ...any)) {
	if len(r.startup) == 0 {
		w("## Profile of ADD\n\nNot run (-sections).\n\n")
		return
	}
	w("## Profile of ADD\n\n### Process start-up\n\n")
	w("Each binary executed %d times with `CNI_COMMAND=VERSION` inside a node (start-up, init() and exit, nothing else), once under GNU time for the peak RSS, and %d times with `GODEBUG=inittrace=1`: \"main() at\" is when the last init() ended, counted from the process start (median), the init() columns are from the run with the median init() total.\n\n", r.opts.startupRuns, r.opts.startupRuns)
	w("| binary | size | wall median | peak RSS | CPU median | main() at | init() clock (sum) | init() heap | costliest init()s |\n|---|---|---|---|---|---|---|---|---|\n")
	for _, s := range r.startup {
		var top []string
		for _, c := range s.initTop {
			top = append(top, fmt.Sprintf("%s %.2f ms", c.pkg, float64(c.clock)/float64(time.Millisecond)))
		}
		w("| %s | %.1f MiB | %s | %s | %s | %s | %s | %s | %s |\n", s.name, float64(s.sizeBytes)/(1<<20), ms(s.wall.median()), mib(medianInt64(s.rss)),
			ms(s.cpu.median()), ms(s.mainAt), ms(s.initClock), kib(s.initBytes), strings.Join(top, "; "))
	}
	w("\n### System calls of one ADD (`strace -c -f`)\n\n")
	for _, ns := range r.syscalls {
		w("%s: %d system calls in all (with children). The most frequent:\n\n| syscall | calls | errors |\n|---|---|---|\n", ns.name, ns.s.total)
		for i, row := range ns.s.rows {
			if i == 12 {
				break
			}
			w("| %s | %d | %d |\n", row.name, row.calls, row.errors)
		}
		var sync []string
		for _, row := range ns.s.rows {
			switch row.name {
			case "fsync", "fdatasync", "sync_file_range", "flock", "setns", "execve", "clone", "clone3", "unshare", "mount":
				sync = append(sync, fmt.Sprintf("%s %d", row.name, row.calls))
			}
		}
		sort.Strings(sync)
		w("\nOf note: %s.\n\n", strings.Join(append(sync, "(calls not listed: 0)"), ", "))
	}
	if r.inproc != nil {
		w("### CPU profile of the routing package in-process (pprof)\n\n%d cycles of `routing.Setup` + `noderoutes.Ensure` + `routing.Teardown` in a node of their own, under `runtime/pprof`; `go tool pprof -top`:\n\n```\n%s```\n\n",
			r.opts.profileCycles, trimPprof(r.inproc.top))
	}
}

// trimPprof drops pprof's header lines that name temporary files.
func trimPprof(s string) string {
	var keep []string
	for _, line := range strings.Split(s, "\n") {
		if strings.HasPrefix(line, "File:") || strings.HasPrefix(line, "Build ID:") || strings.HasPrefix(line, "Time:") {
			continue
		}
		keep = append(keep, line)
	}
	return strings.Join(keep, "\n")
}

func oneLine(s string) string {
	s = strings.Join(strings.Fields(s), " ")
	if len(s) > 300 {
		s = s[:300] + "…"
	}
	return strings.ReplaceAll(s, "`", "'")
}

// chart draws ADD latency against density: the fill ADDs' medians per
// bucket of occupancy, and the probes' p99 at each level.
func (r *report) chart() (*chart, error) {
	colors := map[string]color.RGBA{nameVeth: {31, 119, 180, 255}, namePtp: {230, 110, 10, 255}}
	xmax := float64(r.opts.levels[len(r.opts.levels)-1])
	var all []series
	for _, name := range []string{nameVeth, namePtp} {
		s := series{label: name, color: colors[name]}
		if d := r.density; d != nil {
			fill := d.fill[name]
			width := max(1, int(math.Ceil(xmax/densityBuckets)))
			for lo := 0; lo < len(fill); lo += width {
				hi := min(len(fill), lo+width)
				s.line = append(s.line, plotter.XY{X: float64(lo+hi) / 2, Y: msf(fill[lo:hi].median())})
			}
			for _, lv := range d.levels[name] {
				s.marks = append(s.marks, plotter.XY{X: float64(lv.n), Y: msf(lv.add.p99())})
			}
		}
		all = append(all, s)
	}
	return densityChart("ADD latency against containers on the node", xmax, all)
}

func msf(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

func (r *report) startupOf(name string) *startup {
	for _, s := range r.startup {
		if s.name == name {
			return s
		}
	}
	return &startup{name: name}
}

// writeFindings states, with this run's figures, where the time of an ADD
// and a DEL goes.
func (r *report) writeFindings(w func(string, ...any)) {
	if len(r.seq) == 0 || len(r.startup) == 0 {
		return
	}
	w("### Where the time goes (this run)\n\n")
	v, p, f, fe := r.cycle(nameVeth), r.cycle(namePtp), r.cycle(nameFloor), r.cycle(nameFloorExec)
	sv, sf := r.startupOf("vethroute"), r.startupOf("floorplugin")
	w("- **Starting a process is most of an ADD.** The exec'd floor's ADD takes %s against %s in-process: %s for starting a Go binary that does nothing more. ",
		ms(fe.add.median()), ms(f.add.median()), ms(fe.add.median()-f.add.median()))
	w("vethroute's VERSION (start-up and exit only) takes %s, main() is reached %s after the process starts, and the init()s themselves add up to %s; its binary is %.1f MiB against the floor's %.1f MiB, pages the kernel must fault in on every exec.\n",
		ms(sv.wall.median()), ms(sv.mainAt), ms(sv.initClock), float64(sv.sizeBytes)/(1<<20), float64(sf.sizeBytes)/(1<<20))
	if dx := r.cycle(nameDirect); len(dx.add) > 0 && len(v.add) > 0 {
		extra := v.add.median() - dx.add.median()
		if extra > 0 {
			w("- **libcni's share.** In the same loop vethroute's ADD takes %s through libcni and %s executed directly: %s is the runtime side (locating the plugin, building its configuration, executing it, caching the result).\n",
				ms(v.add.median()), ms(dx.add.median()), ms(extra))
		} else {
			w("- **libcni's share** is below this run's noise: vethroute's ADD takes %s through libcni and %s executed directly, in the same loop.\n",
				ms(v.add.median()), ms(dx.add.median()))
		}
		w("- **vethroute's own work.** Executed directly its ADD takes %s against the exec'd floor's %s: %s for a larger binary's start-up, configuration parsing, the allocator and the checks the floor skips.\n",
			ms(dx.add.median()), ms(fe.add.median()), ms(dx.add.median()-fe.add.median()))
	}
	w("- **DEL is the kernel's, unless someone else waits for it.** Deleting one veth in-process (the floor's DEL) takes %s, against %s for creating and configuring it. ",
		ms(f.del.median()), ms(f.add.median()))
	w("Most of it comes after the device has left the namespace: netdev_run_todo() waits in rcu_barrier() for an RCU grace period before the netlink request returns, and a busy machine stretches grace periods. ")
	w("A plugin that deletes the link itself cannot go below that (vethroute without the agent: DEL %s). With the agent's reaper, vethroute's DEL ends when the link is unlisted and the agent sits out the wait: DEL %s. vethroute's DEL makes %s netlink request(s).\n",
		ms(r.cycle(nameVethSolo).del.median()), ms(v.del.median()), delRequests(r))
	w("- **ptp + host-local pays twice.** Every ptp ADD and DEL execs host-local (two process start-ups), switches the thread into the container's namespace and back, and host-local's DEL scans its store; the cycle is %s× the exec'd floor's, vethroute's %s×.\n",
		fmtRatio(ratio(p.cycle.median(), fe.cycle.median())), fmtRatio(ratio(v.cycle.median(), fe.cycle.median())))
	if d := r.density; d != nil {
		for _, name := range []string{nameVeth, namePtp} {
			lv := d.levels[name]
			if len(lv) < 2 || lv[0].trace == nil || lv[len(lv)-1].trace == nil {
				continue
			}
			lo, hi := lv[0], lv[len(lv)-1]
			w("- **%s and node size:** from %d to %d containers, one ADD goes from %d to %d netlink requests (%s to %s received) and %d to %d files opened; one DEL from %d to %d requests and %d to %d files opened.\n",
				name, lo.n, hi.n, lo.trace.add.total, hi.trace.add.total, kib(lo.trace.add.recvBytes), kib(hi.trace.add.recvBytes),
				lo.trace.add.opens, hi.trace.add.opens, lo.trace.del.total, hi.trace.del.total, lo.trace.del.opens, hi.trace.del.opens)
		}
	}
	w("\n")
}

func delRequests(r *report) string {
	if d := r.density; d != nil {
		if lv := d.levels[nameVeth]; len(lv) > 0 && lv[0].trace != nil {
			return fmt.Sprint(lv[0].trace.del.total)
		}
	}
	return "n/a"
}

// runList lists every run's throughput in Gbit/s, in measurement order.
func runList(bps []float64) string {
	out := make([]string, len(bps))
	for i, b := range bps {
		out[i] = gbps(b)
	}
	return strings.Join(out, ", ")
}
