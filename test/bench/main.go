// Command bench compares vethroute with the reference ptp + host-local
// plugins (at the version go.mod pins) in one run, operation by operation
// alternating between them, in network namespaces it creates and removes,
// and writes docs/benchmarks.md and a density chart:
//
//	go run ./test/bench -out docs/benchmarks.md          # full, ~10 minutes
//	go run ./test/bench -quick -out /tmp/benchmarks.md   # smoke, ~1 minute
//
// It needs root. It never touches the machine's own network namespace:
// every node and container is a namespace named vrbench<pid>-*, plugins run
// from inside their node's namespace, and iperf3 only ever connects to
// addresses inside those namespaces.
package main

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"

	"github.com/vethroute/vethroute/internal/testutil"
)

// options are the run's sizes; -quick picks small ones for a smoke run.
type options struct {
	out, plot     string
	quick         bool
	install       bool
	cycles        int
	stormPods     int
	concs         []int
	levels        []int
	probes        int
	usageRuns     int
	startupRuns   int
	profileCycles int
	iperfRounds   int
	iperfTime     time.Duration
	timeout       time.Duration
	// compare maps a label to a directory holding another vethroute
	// binary (say, before a change) that section 1 runs alongside.
	compare map[string]string
	// sections are the parts to run (all by default).
	sections map[string]bool
}

// allSections are the parts of a run, in the order they run.
var allSections = []string{"seq", "storm", "rusage", "profile", "dataplane", "density", "netpol"}

func (o *options) has(section string) bool { return o.sections[section] }

func main() {
	if os.Getenv(netpolChildEnv) != "" {
		if err := netpolChild(); err != nil {
			fmt.Fprintln(os.Stderr, "bench netpol child:", err)
			os.Exit(1)
		}
		return
	}
	opts, err := parseFlags(os.Args[1:])
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(2)
	}
	if _, err := run(opts); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

func parseFlags(args []string) (*options, error) {
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	o := &options{}
	fs.StringVar(&o.out, "out", "docs/benchmarks.md", "markdown report to write")
	fs.StringVar(&o.plot, "plot", "", "PNG density chart to write (default: benchmarks-density.png beside -out)")
	fs.BoolVar(&o.quick, "quick", false, "smoke run: small counts and densities (about a minute)")
	fs.BoolVar(&o.install, "install", true, "apt-get install iperf3, strace and time when they are missing")
	cycles := fs.Int("cycles", 0, "sequential ADD+DEL cycles per plugin (default 200, quick 20)")
	storm := fs.Int("storm", 0, "pods per storm (default 100, quick 10)")
	concs := fs.String("concurrency", "1,4,16", "storm concurrencies")
	sections := fs.String("sections", strings.Join(allSections, ","), "parts to run: "+strings.Join(allSections, ","))
	levels := fs.String("density", "", "densities, containers already on the node (default 10,250,1000, quick 5,20,40)")
	probes := fs.Int("probes", 0, "ADD+DEL probes per density level (default 100, quick 10)")
	usage := fs.Int("rusage-runs", 0, "direct ADD+DEL executions per plugin for rusage (default 20, quick 3)")
	iperfRounds := fs.Int("iperf-rounds", 0, "iperf3 rounds per scenario and plugin (default 5, quick 1)")
	fs.DurationVar(&o.iperfTime, "iperf-time", 0, "length of one iperf3 run (default 3s, quick 1s)")
	fs.DurationVar(&o.timeout, "timeout", 40*time.Minute, "abort (and clean up) after this long")
	o.compare = map[string]string{}
	fs.Func("compare", "`label=dir`: also run the vethroute binary in dir in section 1, as \"vethroute (label)\" (repeatable; for before/after figures of a change)", func(v string) error {
		label, dir, ok := strings.Cut(v, "=")
		if !ok || label == "" || dir == "" {
			return errors.New("want label=dir")
		}
		if _, err := os.Stat(filepath.Join(dir, "vethroute")); err != nil {
			return err
		}
		o.compare[label] = dir
		return nil
	})
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	pick := func(set, full, quick int) int {
		switch {
		case set > 0:
			return set
		case o.quick:
			return quick
		}
		return full
	}
	o.cycles = pick(*cycles, 200, 20)
	o.stormPods = pick(*storm, 100, 10)
	o.probes = pick(*probes, 100, 10)
	o.usageRuns = pick(*usage, 20, 3)
	o.iperfRounds = pick(*iperfRounds, 5, 1)
	o.startupRuns = pick(0, 20, 3)
	o.profileCycles = pick(0, 500, 30)
	if o.iperfTime == 0 {
		o.iperfTime = 3 * time.Second
		if o.quick {
			o.iperfTime = time.Second
		}
	}
	var err error
	if o.concs, err = ints(*concs); err != nil {
		return nil, fmt.Errorf("-concurrency: %w", err)
	}
	if *levels == "" {
		*levels = "10,250,1000"
		if o.quick {
			*levels = "5,20,40"
		}
	}
	if o.levels, err = ints(*levels); err != nil {
		return nil, fmt.Errorf("-density: %w", err)
	}
	for i := 1; i < len(o.levels); i++ {
		if o.levels[i] <= o.levels[i-1] {
			return nil, errors.New("-density: levels must increase")
		}
	}
	if o.levels[len(o.levels)-1] > 4000 {
		return nil, errors.New("-density: the /20 range holds at most 4000 containers")
	}
	o.sections = map[string]bool{}
	for _, s := range strings.Split(*sections, ",") {
		if !slices.Contains(allSections, s) {
			return nil, fmt.Errorf("-sections: %q is not one of %v", s, allSections)
		}
		o.sections[s] = true
	}
	if o.plot == "" {
		o.plot = filepath.Join(filepath.Dir(o.out), "benchmarks-density.png")
	}
	return o, nil
}

func ints(s string) ([]int, error) {
	var out []int
	for _, f := range strings.Split(s, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n <= 0 {
			return nil, fmt.Errorf("%q is not a positive integer", f)
		}
		out = append(out, n)
	}
	if len(out) == 0 {
		return nil, errors.New("empty list")
	}
	return out, nil
}

// seqConf is the network of sections 1 to 4 and 6: a /20 pod range (room
// for the 1000-container density) and the router route toward another
// node's /20 through the uplink, which vethroute checks on every ADD and
// ptp's node has by hand.
var seqConf = pluginConf{subnet: "10.100.0.0/20", rangeStart: "10.100.0.1", rangeEnd: "10.100.15.250", gateway: "10.100.15.254",
	peerSubnet: "10.200.0.0/20", peerGW: "172.16.0.2"}

// run measures everything, writes the report and the chart, and returns
// the report (the smoke test checks it for errors).
func run(o *options) (*report, error) {
	if os.Geteuid() != 0 {
		return nil, errors.New("needs root: it creates network namespaces and veth pairs")
	}
	root, err := testutil.FindRepoRoot()
	if err != nil {
		return nil, err
	}
	rep, err := measure(o, root)
	if err != nil {
		return rep, err
	}
	if err := os.MkdirAll(filepath.Dir(o.out), 0o755); err != nil {
		return rep, err
	}
	ch, err := rep.chart()
	if err != nil {
		return rep, err
	}
	if err := writeChart(o.plot, ch); err != nil {
		return rep, err
	}
	if err := writeReport(o.out, rep.markdown()); err != nil {
		return rep, err
	}
	fmt.Fprintf(os.Stderr, "bench: wrote %s and %s in %s\n", o.out, o.plot, rep.elapsed.Round(time.Second))
	return rep, nil
}

// measure runs every section in a lab that it removes before returning.
func measure(o *options, root string) (rep *report, err error) {
	started := time.Now()
	rep = &report{opts: o, args: os.Args, started: started, loadBefore: testutil.LoadAvg()}
	rep.machine = machineInfo()
	progress := func(msg string) {
		fmt.Fprintf(os.Stderr, "[%6.1fs] %s\n", time.Since(started).Seconds(), msg)
	}
	if o.install {
		ensureTools(progress, "iperf3", "strace", "time")
	}

	progress("building vethroute, ptp, host-local and floorplugin")
	l, err := newLab(root)
	if err != nil {
		return nil, err
	}
	// Whatever happens from here on, the namespaces go: on return, on
	// SIGINT/SIGTERM, and when the whole run exceeds -timeout.
	defer l.close()
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGINT, syscall.SIGTERM)
	done := make(chan struct{})
	defer close(done) // runs before l.close: the watchdog is gone first
	go func() {
		defer signal.Stop(stop)
		select {
		case s := <-stop:
			fmt.Fprintf(os.Stderr, "bench: %v: removing namespaces\n", s)
		case <-time.After(o.timeout):
			fmt.Fprintf(os.Stderr, "bench: still running after %s: removing namespaces\n", o.timeout)
		case <-done:
			return
		}
		l.close()
		os.Exit(1)
	}()

	veth, err := l.newDriver("vethroute", "nodev", seqConf, true)
	if err != nil {
		return rep, err
	}
	ptp, err := l.newDriver("ptp", "nodep", seqConf, true)
	if err != nil {
		return rep, err
	}
	drivers := []*driver{veth, ptp}
	conts := make([]ns.NetNS, len(drivers))
	for k := range drivers {
		if conts[k], err = l.newNS("seqc"); err != nil {
			return rep, err
		}
	}
	fl, err := l.newFloorRig()
	if err != nil {
		return rep, err
	}
	// The exec'd floor again, its DEL handed to a reaper of the floor's
	// own: the floor of vethroute with the agent's reaper.
	flr, err := l.newFloorRig()
	if err != nil {
		return rep, err
	}
	if flr.reaper, err = l.startFloorReaper(flr.node); err != nil {
		return rep, err
	}

	direct, err := l.newNS("seqd")
	if err != nil {
		return rep, err
	}
	inproc, err := l.newRoutingRig(seqConf)
	if err != nil {
		return rep, err
	}
	// The same plugin on a node without the agent (containerd alone):
	// DEL deletes the host veth itself and waits for the kernel.
	solo, err := l.newDriverFrom(l.binDir, "vethroute", "nodes", seqConf, true, false)
	if err != nil {
		return rep, err
	}
	solo.name = nameVethSolo
	soloCont, err := l.newNS("seqs")
	if err != nil {
		return rep, err
	}
	cyclers := []cycler{pluginCycler(veth, conts[0], "seq"), pluginCycler(ptp, conts[1], "seq"),
		pluginCycler(solo, soloCont, "seq"), fl.inProcess(), fl.exec(), flr.exec(), directCycler(veth, direct), inproc}
	for _, label := range sortedKeys(o.compare) {
		d, err := l.newDriverFrom(o.compare[label], "vethroute", "cmp", seqConf, true, true)
		if err != nil {
			return rep, err
		}
		d.name = "vethroute (" + label + ")"
		c, err := l.newNS("cmpc")
		if err != nil {
			return rep, err
		}
		cyclers = append(cyclers, pluginCycler(d, c, "seq"))
	}
	if o.has("seq") {
		progress(fmt.Sprintf("sequential: %d ADD+DEL cycles of each, interleaved with the floor", o.cycles))
		settle, err := l.newSettler()
		if err != nil {
			return rep, err
		}
		rep.seq = runSequential(cyclers, o.cycles, settle, progress)
	}

	if o.has("storm") {
		progress(fmt.Sprintf("storms: %d pods at concurrency %v", o.stormPods, o.concs))
		if rep.storms, err = runStorms(l, drivers, o.stormPods, o.concs, progress); err != nil {
			return rep, err
		}
	}

	if o.has("rusage") {
		progress(fmt.Sprintf("rusage: %d direct executions of each", o.usageRuns))
		rep.usage = runUsage(drivers, conts, o.usageRuns)
	}

	if o.has("profile") {
		if err := profile(l, o, rep, veth, ptp, conts, progress); err != nil {
			return rep, err
		}
	}

	if o.has("dataplane") {
		progress("data plane: iperf3 on one node and across two routers")
		if rep.dataplane, err = runDataPlane(l, []string{"vethroute", "ptp"}, o.iperfRounds, o.iperfTime, progress); err != nil {
			return rep, err
		}
	}

	if o.has("density") {
		progress(fmt.Sprintf("density: levels %v, %d probes each", o.levels, o.probes))
		dv, err := l.newDriver("vethroute", "densv", seqConf, true)
		if err != nil {
			return rep, err
		}
		dp, err := l.newDriver("ptp", "densp", seqConf, true)
		if err != nil {
			return rep, err
		}
		ctl, err := l.newFloorRig()
		if err != nil {
			return rep, err
		}
		if rep.density, err = runDensity(l, []*driver{dv, dp}, ctl.exec(), o.levels, o.probes, peerRoute(seqConf), true, progress); err != nil {
			return rep, err
		}
	}

	if o.has("netpol") {
		if rep.netpol, err = runNetpol(l, o, progress); err != nil {
			return rep, err
		}
	}

	rep.loadAfter = testutil.LoadAvg()
	rep.elapsed = time.Since(started)
	return rep, nil
}

// profile measures process start-up, strace's view of one ADD and a CPU
// profile of the routing package in-process.
func profile(l *lab, o *options, rep *report, veth, ptp *driver, conts []ns.NetNS, progress func(string)) error {
	progress("profile: process start-up")
	for _, b := range []struct{ name, bin string }{
		{"vethroute", veth.bin}, {"ptp", ptp.bin}, {"host-local", filepath.Join(l.refDir, "host-local")},
		{"floorplugin", filepath.Join(l.binDir, "floorplugin")},
	} {
		st, err := measureStartup(veth.node, b.name, b.bin, o.startupRuns)
		if err != nil {
			return fmt.Errorf("startup of %s: %w", b.name, err)
		}
		rep.startup = append(rep.startup, st)
	}
	progress("profile: strace -c of one ADD")
	for k, d := range []*driver{veth, ptp} {
		s, err := straceSummary(d, "strace-c", conts[k])
		if err != nil {
			rep.notes = append(rep.notes, fmt.Sprintf("strace -c of %s: %v", d.name, err))
			continue
		}
		rep.syscalls = append(rep.syscalls, namedSummary{d.name, s})
	}
	progress("profile: pprof of the routing package in-process")
	var err error
	if rep.inproc, err = profileInProcess(l, o.profileCycles, seqConf); err != nil {
		rep.notes = append(rep.notes, "in-process profile: "+err.Error())
	}
	return nil
}

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// ensureTools installs the Debian packages of missing tools; a failure only
// costs the sections that need them, which then say so.
func ensureTools(progress func(string), tools ...string) {
	var missing []string
	for _, t := range tools {
		if _, err := exec.LookPath(t); err != nil {
			missing = append(missing, t)
		}
	}
	if len(missing) == 0 {
		return
	}
	progress("installing " + strings.Join(missing, ", "))
	env := append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
	install := exec.Command("apt-get", append([]string{"install", "-y", "-qq", "--no-install-recommends"}, missing...)...)
	install.Env = env
	if install.Run() == nil {
		return
	}
	update := exec.Command("apt-get", "update", "-qq")
	update.Env = env
	_ = update.Run()
	install = exec.Command("apt-get", append([]string{"install", "-y", "-qq", "--no-install-recommends"}, missing...)...)
	install.Env = env
	if out, err := install.CombinedOutput(); err != nil {
		progress(fmt.Sprintf("apt-get install %v: %v\n%s", missing, err, out))
	}
}
