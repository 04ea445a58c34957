package main

import (
	"bytes"
	"image/color"
	"image/png"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/vethroute/vethroute/internal/testutil"
	"gonum.org/v1/plot/plotter"
)

func TestPercentile(t *testing.T) {
	ms := func(v ...int) durations {
		var d durations
		for _, x := range v {
			d = append(d, time.Duration(x)*time.Millisecond)
		}
		return d
	}
	hundred := make([]int, 100)
	for i := range hundred {
		hundred[i] = 100 - i // descending: percentile must sort
	}
	for _, tc := range []struct {
		name string
		d    durations
		p    float64
		want time.Duration
	}{
		{"empty", nil, 50, 0},
		{"one", ms(7), 99, 7 * time.Millisecond},
		{"median of odd", ms(3, 1, 2), 50, 2 * time.Millisecond},
		{"median of even is the lower middle", ms(4, 1, 3, 2), 50, 2 * time.Millisecond},
		{"p99 of 100 ignores the single largest", ms(hundred...), 99, 99 * time.Millisecond},
		{"p100 is the maximum", ms(hundred...), 100, 100 * time.Millisecond},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.d.percentile(tc.p); got != tc.want {
				t.Errorf("percentile(%v) = %v, want %v", tc.p, got, tc.want)
			}
		})
	}
}

func TestParseStrace(t *testing.T) {
	trace := `100 execve("/bin/ptp", ["/bin/ptp"], 0x0 /* 5 vars */) = 0
100 setns(3</run/netns/c>, CLONE_NEWNET) = 0
100 sendto(3<NETLINK:[ROUTE:100]>, [{nlmsg_len=36, nlmsg_type=RTM_GETROUTE, nlmsg_flags=NLM_F_REQUEST, nlmsg_seq=1}], 36, 0, NULL, 0) = 36
100 sendto(4<NETLINK:[1234]>, [{nlmsg_len=17, nlmsg_type=0x12 /* NLMSG_??? */, nlmsg_flags=NLM_F_REQUEST|0x300, nlmsg_seq=2}], 17, 0, NULL, 0) = 17
100 sendto(4<NETLINK:[1234]>, [{nlmsg_len=17, nlmsg_type=RTM_NEWLINK, nlmsg_flags=NLM_F_REQUEST|NLM_F_ACK|NLM_F_EXCL|NLM_F_CREATE, nlmsg_seq=3}], 17, 0, NULL, 0) = 17
101 recvfrom(4<NETLINK:[1234]>,  <unfinished ...>
100 recvfrom(3<NETLINK:[ROUTE:100]>, [...], 65536, 0, NULL, NULL) = 1000
101 <... recvfrom resumed>[...], 65536, 0, NULL, NULL) = 500
100 sendto(5<TCP:[1.2.3.4:5->6.7.8.9:10]>, "x", 1, 0, NULL, 0) = 1
101 execve("/bin/host-local", ["host-local"], 0x0 /* 5 vars */) = 0
101 openat(AT_FDCWD, "/var/lib/cni/networks/bench/10.0.0.2", O_RDONLY|O_CLOEXEC) = 7
`
	f := filepath.Join(t.TempDir(), "trace")
	if err := os.WriteFile(f, []byte(trace), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := parseStrace(f)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]int{"RTM_GETROUTE": 1, "RTM_GETLINK dump": 1, "RTM_NEWLINK": 1}
	for k, v := range want {
		if c.requests[k] != v {
			t.Errorf("requests[%q] = %d, want %d (all: %v)", k, c.requests[k], v, c.requests)
		}
	}
	if c.total != 3 || c.dumps != 1 || c.recvBytes != 1500 || c.setns != 1 || c.execs != 2 || c.opens != 1 {
		t.Errorf("got total %d dumps %d recvBytes %d setns %d execs %d opens %d, want 3 1 1500 1 2 1", c.total, c.dumps, c.recvBytes, c.setns, c.execs, c.opens)
	}
}

// TestChart renders the density chart from fixed samples, one plugin
// without data, and checks the PNG has the chart's size and more than a
// background: a chart that draws nothing fails.
func TestChart(t *testing.T) {
	p, err := densityChart("ADD latency against containers on the node", 1000, []series{
		{label: "a", color: color.RGBA{31, 119, 180, 255},
			line:  plotter.XYs{{X: 0, Y: 1}, {X: 500, Y: 2}, {X: 1000, Y: 1.5}},
			marks: plotter.XYs{{X: 10, Y: 3}, {X: 1000, Y: 4}}},
		{label: "b", color: color.RGBA{230, 110, 10, 255}},
	})
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "density.png")
	if err := writeChart(path, p); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	img, err := png.Decode(f)
	if err != nil {
		t.Fatalf("chart is not a PNG: %v", err)
	}
	b := img.Bounds()
	if b.Dx() != chartW || b.Dy() != chartH {
		t.Fatalf("chart is %dx%d, want %dx%d", b.Dx(), b.Dy(), chartW, chartH)
	}
	colors := map[color.RGBA]int{}
	for y := b.Min.Y; y < b.Max.Y; y++ {
		for x := b.Min.X; x < b.Max.X; x++ {
			r, g, bl, a := img.At(x, y).RGBA()
			colors[color.RGBA{uint8(r >> 8), uint8(g >> 8), uint8(bl >> 8), uint8(a >> 8)}]++
		}
	}
	background := colors[color.RGBA{255, 255, 255, 255}]
	if inked := b.Dx()*b.Dy() - background; inked < b.Dx()*b.Dy()/100 {
		t.Errorf("chart is nearly blank: %d of %d pixels are not background", inked, b.Dx()*b.Dy())
	}
	if colors[color.RGBA{31, 119, 180, 255}] == 0 {
		t.Error("chart shows no pixel of series a's colour")
	}
}

func TestNiceStep(t *testing.T) {
	for _, tc := range []struct{ raw, want float64 }{{0.3, 0.5}, {1, 1}, {1.2, 2}, {37, 50}, {0, 1}, {math.NaN(), 1}, {math.Inf(1), 1}} {
		if got := niceStep(tc.raw); got != tc.want {
			t.Errorf("niceStep(%v) = %v, want %v", tc.raw, got, tc.want)
		}
	}
}

func TestNiceTicks(t *testing.T) {
	for _, tc := range []struct {
		lo, hi float64
		want   []string
	}{
		{0, 1000, []string{"0", "200", "400", "600", "800", "1000"}},
		{0, 4, []string{"0", "1", "2", "3", "4"}},
		{0, 0.6, []string{"0.0", "0.2", "0.4", "0.6"}},
	} {
		var got []string
		for _, tk := range (niceTicks{}).Ticks(tc.lo, tc.hi) {
			if tk.Label != "" {
				got = append(got, tk.Label)
			}
		}
		if strings.Join(got, " ") != strings.Join(tc.want, " ") {
			t.Errorf("ticks of [%v, %v] = %v, want %v", tc.lo, tc.hi, got, tc.want)
		}
	}
}

// TestSmoke runs every section of the benchmark at toy sizes and checks
// only correctness: every operation of both plugins succeeded, nothing was
// left on the nodes, the report has all six sections and the chart is a
// PNG, and no namespace of the run survives it. It never looks at a timing.
// About a minute on two busy cores.
func TestSmoke(t *testing.T) {
	testutil.RequireRoot(t)
	if testing.Short() {
		t.Skip("builds four binaries and runs every section (about a minute)")
	}
	dir := t.TempDir()
	o, err := parseFlags([]string{"-quick", "-install=false", "-cycles", "3", "-storm", "4", "-concurrency", "1,4",
		"-density", "2,4", "-probes", "2", "-rusage-runs", "1", "-iperf-rounds", "1", "-iperf-time", "1s",
		"-out", filepath.Join(dir, "benchmarks.md")})
	if err != nil {
		t.Fatal(err)
	}
	o.startupRuns, o.profileCycles = 1, 3
	rep, err := run(o)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range rep.seq {
		if s.errors != 0 || len(s.cycle) != o.cycles {
			t.Errorf("sequential %s: %d errors, %d of %d cycles: %s", s.name, s.errors, len(s.cycle), o.cycles, s.firstErr)
		}
	}
	for _, s := range rep.storms {
		if s.addErrs+s.delErrs != 0 || s.leaked != 0 {
			t.Errorf("storm %s at %d: %d errors, %d veths left: %s", s.plugin, s.conc, s.addErrs+s.delErrs, s.leaked, s.firstErr)
		}
	}
	for name, lv := range rep.density.levels {
		for _, l := range lv {
			if l.errors != 0 || len(l.add) != o.probes {
				t.Errorf("density %s at %d: %d errors: %s", name, l.n, l.errors, l.firstErr)
			}
		}
		if rep.density.fillErrs[name]+rep.density.drainErrs[name] != 0 {
			t.Errorf("density %s: %d fill and %d drain errors", name, rep.density.fillErrs[name], rep.density.drainErrs[name])
		}
	}
	for _, l := range append(append([]*densityLevel(nil), rep.density.control...), rep.density.nodeFloor...) {
		if l.errors != 0 || len(l.add) != o.probes {
			t.Errorf("density floor at %d: %d errors: %s", l.n, l.errors, l.firstErr)
		}
	}
	for _, u := range rep.usage {
		if u.errors != 0 {
			t.Errorf("rusage %s: %d errors: %s", u.name, u.errors, u.firstErr)
		}
	}
	if dp := rep.dataplane; dp.skipped == "" {
		for _, tp := range dp.topos {
			if tp.errors != 0 || tp.ttl != 62 {
				t.Errorf("data plane %s: %d errors, TTL %d across two routers (want 62): %s", tp.plugin, tp.errors, tp.ttl, tp.firstErr)
			}
		}
	}
	if np := rep.netpol; np.skipped == "" {
		c := np.child
		if len(np.errs) != 0 || len(c.Full) == 0 || len(c.PodAdd) == 0 || len(c.PolicyChange) == 0 || np.rssKB == 0 || len(np.iptPodAdd) == 0 || len(np.dpVeth) == 0 {
			t.Errorf("netpol: errors %v, %d full syncs, %d pod adds, %d policy changes, RSS %d KiB, %d baseline syncs, %d runs with policies",
				np.errs, len(c.Full), len(c.PodAdd), len(c.PolicyChange), np.rssKB, len(np.iptPodAdd), len(np.dpVeth))
		}
	}
	md, err := os.ReadFile(o.out)
	if err != nil {
		t.Fatal(err)
	}
	for _, h := range []string{"## 1. ", "## 2. ", "## 3. ", "## 4. ", "## 5. ", "## 6. ", "## Targets", "## Profile of ADD"} {
		if !bytes.Contains(md, []byte(h)) {
			t.Errorf("report lacks %q", h)
		}
	}
	f, err := os.Open(o.plot)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := png.Decode(f); err != nil {
		t.Errorf("chart: %v", err)
	}
	entries, err := os.ReadDir("/var/run/netns")
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), "vrbench"+strconv.Itoa(os.Getpid())+"-") {
			t.Errorf("namespace %s survived the run", e.Name())
		}
	}
}

// TestCycleTargets checks the restated cycle and storm targets against
// figures on either side of each bound.
func TestCycleTargets(t *testing.T) {
	msd := func(v float64) durations { return durations{time.Duration(v * float64(time.Millisecond))} }
	stats := func(name string, add, del float64) *cycleStats {
		return &cycleStats{name: name, add: msd(add), del: msd(del), cycle: msd(add + del)}
	}
	// ptp's cycle is 40 ms (ADD 15), the exec'd floor's 22 ms.
	base := func(vAdd, vDel, soloDel float64) *report {
		return &report{opts: &options{concs: []int{16}, stormPods: 100}, seq: []*cycleStats{
			stats(nameVeth, vAdd, vDel), stats(nameVethSolo, vAdd, soloDel),
			stats(namePtp, 15, 25), stats(nameFloorExec, 4, 18), stats(nameFloorReaped, 5, 6),
		}, storms: []stormResult{
			{plugin: nameVeth, conc: 16, addWall: 300 * time.Millisecond, delWall: 200 * time.Millisecond},
			{plugin: namePtp, conc: 16, addWall: 600 * time.Millisecond, delWall: 500 * time.Millisecond},
		}}
	}
	for _, tc := range []struct {
		name              string
		vAdd, vDel, solo  float64
		alone, reaper, fl bool
		add, flReaped     bool
	}{
		// alone 6+16=22 (0.55x ptp, 1.0x floor), reaper 6+6=12 (0.3x, 1.09x
		// the reaped floor's 11), ADD 0.4x
		{"every bound met", 6, 6, 16, true, true, true, true, true},
		// alone 7+18=25 (0.625x, 1.14x floor), reaper 7+6=13 (0.325x,
		// 1.18x), ADD 0.47x
		{"every bound missed", 7, 6, 18, false, false, false, false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := map[string]bool{}
			for _, tg := range base(tc.vAdd, tc.vDel, tc.solo).targets() {
				got[tg.goal] = tg.met
			}
			want := map[string]bool{
				"ADD+DEL cycle median, vethroute alone (no agent: DEL deletes in-process) ≤ 0.55 × ptp+host-local's":                     tc.alone,
				"ADD+DEL cycle median, vethroute with the node agent's reaper (as deployed on Kubernetes) ≤ 0.3 × ptp+host-local's":      tc.reaper,
				"ADD+DEL cycle median, vethroute alone ≤ 1.1 × the exec'd floor's (section 6; both DELs wait for the kernel)":            tc.fl,
				"ADD+DEL cycle median, vethroute with the reaper ≤ 1.1 × the exec'd floor's with its DEL handed to a reaper (section 6)": tc.flReaped,
				"ADD median, vethroute alone ≤ 0.45 × ptp+host-local's":                                                                  tc.add,
				"100-pod storm at concurrency 16: wall ≤ 0.5 × ptp's (vethroute with the agent's reaper)":                                true,
			}
			for goal, met := range want {
				m, ok := got[goal]
				if !ok {
					t.Fatalf("no target %q among %v", goal, got)
				}
				if m != met {
					t.Errorf("%q: met=%v, want %v", goal, m, met)
				}
			}
		})
	}
}
