package main

import (
	"fmt"
	"image/color"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"

	"github.com/vethroute/vethroute/test/bench/docsection"
)

// sectionName marks this program's section of docs/benchmarks.md.
const sectionName = "bench-scale"

// Targets of issue 20.
const (
	targetNodes    = 5000
	targetRSSMiB   = 64
	targetConverge = 5 * time.Second
	targetChurnP99 = 200 * time.Millisecond
	// linearSlack is how much the per-node cost between the two largest
	// sizes may exceed the one between the two smallest before growth
	// counts as faster than linear (the machine is shared and noisy).
	linearSlack = 1.25
)

func describe(root string) string {
	out, err := exec.Command("git", "-C", root, "describe", "--tags", "--always", "--dirty").Output()
	if err != nil {
		return "unknown"
	}
	return strings.TrimSpace(string(out))
}

func (r *results) size(n int) *sizeResult {
	for i := range r.Sizes {
		if r.Sizes[i].Nodes == n && r.Sizes[i].Err == "" {
			return &r.Sizes[i]
		}
	}
	return nil
}

func sec(d time.Duration) string { return fmt.Sprintf("%.2f s", d.Seconds()) }
func msec(d time.Duration) string {
	return fmt.Sprintf("%.0f ms", float64(d)/float64(time.Millisecond))
}
func mibs(kib int64) string { return fmt.Sprintf("%.1f MiB", mibOf(kib)) }
func bytesMiB(b int64) string {
	return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20))
}

func table(w func(string, ...any), r *results) {
	w("| nodes | routes | start-up to all routes | CPU to converge | RSS at convergence | RSS steady | RSS peak | received from API (start-up) | received during churn | churn CPU | churn p50 | churn p99 | churn max | writes (failed, missing) |\n")
	w("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|\n")
	for _, s := range r.Sizes {
		if s.Err != "" {
			w("| %d | %d | failed: %s |||||||||||||\n", s.Nodes, s.Routes, oneLine(s.Err))
			continue
		}
		a := s.Churn.Latency["all"]
		w("| %d | %d | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %d (%d, %d) |\n", s.Nodes, s.Routes, sec(s.Converge), sec(s.CPUConverge),
			mibs(s.RSSConverge), mibs(s.RSSSteady), mibs(s.RSSPeak), bytesMiB(s.BytesConverge), bytesMiB(s.BytesChurn), sec(s.CPUChurn),
			msec(a.P50), msec(a.P99), msec(a.Max), s.Churn.Writes, s.Churn.Failed, s.Churn.Missing)
	}
}

func oneLine(s string) string {
	s = strings.ReplaceAll(s, "\n", " ")
	s = strings.ReplaceAll(s, "|", "/")
	if len(s) > 200 {
		s = s[:200] + "…"
	}
	return s
}

func churnTable(w func(string, ...any), r *results) {
	w("| nodes | RSS steady: anonymous / file-backed (the binary's pages) | Go heap in use when steady | reconciles during churn | mean reconcile (agent's histogram) |\n|---:|---:|---:|---:|---:|\n")
	for _, s := range r.Sizes {
		split := "not measured"
		if s.RSSSteadyAnon > 0 {
			split = mibs(s.RSSSteadyAnon) + " / " + mibs(s.RSSSteadyFile)
		}
		switch {
		case s.Err != "":
		case s.HeapSteady == 0 && s.ChurnReconciles == 0:
			w("| %d | %s | not measured | not measured | not measured |\n", s.Nodes, split)
		default:
			w("| %d | %s | %s | %d | %.1f ms |\n", s.Nodes, split, bytesMiB(s.HeapSteady), s.ChurnReconciles, float64(s.ChurnReconcileMean)/float64(time.Millisecond))
		}
	}
	w("\nChurn delays by kind of write:\n\n")
	w("| nodes | write | count | p50 | p99 | max |\n|---:|---|---:|---:|---:|---:|\n")
	for _, s := range r.Sizes {
		if s.Err != "" {
			continue
		}
		for _, k := range []string{string(opAdd), string(opDelete), string(opAssign)} {
			l := s.Churn.Latency[k]
			w("| %d | %s | %d | %s | %s | %s |\n", s.Nodes, k, l.N, msec(l.P50), msec(l.P99), msec(l.Max))
		}
	}
}

// perNode is the cost per added node between sizes a and b.
func perNode(a, b *sizeResult, v func(*sizeResult) float64) float64 {
	return (v(b) - v(a)) / float64(b.Nodes-a.Nodes)
}

type target struct {
	goal, measured, verdict string
}

func verdict(ok bool, why string) string {
	if ok {
		return "met"
	}
	return "**not met**: " + why
}

func targets(r *results) []target {
	var ts []target
	big := r.size(targetNodes)
	if big == nil {
		ts = append(ts, target{"at 5000 nodes", "not measured in this run", "n/a"})
	} else {
		peak := mibOf(big.RSSPeak)
		base := ""
		if small := r.smallest(); small != nil && small != big {
			base = fmt.Sprintf("; at %d nodes the agent's RSS is already %s (binary, Go runtime, client-go), so the cluster's share at %d is about %.1f MiB",
				small.Nodes, mibs(small.RSSSteady), big.Nodes, mibOf(big.RSSSteady-small.RSSSteady))
		}
		ts = append(ts,
			target{fmt.Sprintf("agent RSS ≤ %d MiB at %d nodes", targetRSSMiB, targetNodes),
				fmt.Sprintf("peak %s (steady %s%s)", mibs(big.RSSPeak), mibs(big.RSSSteady), heapNote(big)),
				verdict(peak <= targetRSSMiB, fmt.Sprintf("the peak is %.1f MiB%s", peak, base))},
			target{fmt.Sprintf("all routes within %s of start at %d nodes", targetConverge, targetNodes),
				sec(big.Converge), verdict(big.Converge <= targetConverge, fmt.Sprintf("%s", sec(big.Converge)))},
			target{fmt.Sprintf("churn p99 ≤ %s from API write to kernel at %d nodes", msec(targetChurnP99), targetNodes),
				msec(big.Churn.Latency["all"].P99),
				verdict(big.Churn.Latency["all"].N > 0 && big.Churn.Latency["all"].P99 <= targetChurnP99 && big.Churn.Missing == 0 && big.Churn.Failed == 0,
					fmt.Sprintf("p99 %s (%d writes without a route change, %d failed)%s; the API server, etcd, the writer and the agent share 2 cores, load average %s at the start and %s at the end",
						msec(big.Churn.Latency["all"].P99), big.Churn.Missing, big.Churn.Failed, meanReconcile(big), r.Load[0], r.Load[1]))},
		)
	}
	var ok []*sizeResult
	for i := range r.Sizes {
		if r.Sizes[i].Err == "" {
			ok = append(ok, &r.Sizes[i])
		}
	}
	if len(ok) < 3 {
		ts = append(ts, target{"RSS and start-up grow at most linearly", "needs three sizes", "n/a"})
		return ts
	}
	lo, mid, hi := ok[0], ok[len(ok)-2], ok[len(ok)-1]
	for _, m := range []struct {
		name string
		unit string
		v    func(*sizeResult) float64
	}{
		{"RSS (steady)", "KiB", func(s *sizeResult) float64 { return float64(s.RSSSteady) }},
		{"start-up time", "ms", func(s *sizeResult) float64 { return float64(s.Converge) / float64(time.Millisecond) }},
	} {
		first, last := perNode(lo, mid, m.v), perNode(mid, hi, m.v)
		overall := perNode(lo, hi, m.v)
		ts = append(ts, target{
			fmt.Sprintf("%s grows at most linearly from %d to %d nodes", m.name, lo.Nodes, hi.Nodes),
			fmt.Sprintf("%.2f %s per node overall; %.2f from %d to %d, %.2f from %d to %d", overall, m.unit, first, lo.Nodes, mid.Nodes, last, mid.Nodes, hi.Nodes),
			verdict(last <= linearSlack*max(first, 0) || last <= 0, fmt.Sprintf("the per-node cost rises %.1fx from the smaller sizes to the larger (load average %s to %s during the run)", last/first, r.Load[0], r.Load[1])),
		})
	}
	return ts
}

func markdown(o *options, r, before *results) string {
	var b strings.Builder
	w := func(f string, a ...any) { fmt.Fprintf(&b, f, a...) }
	w("## Cluster scale (make bench-scale)\n\n")
	w("One vethroute-agent against a real kube-apiserver and etcd holding N simulated Node objects of a real node's size ")
	w("(InternalIP and Hostname addresses, pod CIDRs of both families, 50 images with names, digests and sizes, the usual conditions, ")
	w("labels, annotations, and the managedFields a kubelet's create and status patch leave), in a node namespace whose uplink holds every node's InternalIP ")
	w("as an on-link gateway: the agent programs 2 × (N − 1) routes (IPv4 and IPv6) in the kernel. Start-up is from the agent's exec to ")
	w("the last of them announced by a netlink route subscription in that namespace; RSS and CPU are read from /proc; bytes are counted ")
	w("by the relay between the agent and the API server. Churn: %d writes per second of each kind (a node added with its pod CIDRs, ", r.Sizes0PerSecond())
	w("a node deleted, pod CIDRs assigned to a node registered without them) for %s; the delay is from sending the write to the last ", r.ChurnFor)
	w("of its route changes in the kernel.\n\n")
	w("Run `%s` (%s UTC) on %s, label `%s`, load average %s before and %s after, in %s. ", r.Command, r.Started.Format(time.RFC3339), r.Machine, r.Label, r.Load[0], r.Load[1], r.Elapsed.Round(time.Second))
	if len(r.AgentEnv) > 0 {
		w("The agent ran with `%s` in its environment, as the DaemonSet (deploy/daemonset.yaml) sets it. ", strings.Join(r.AgentEnv, " "))
	}
	w("The machine is shared: other jobs ran at the same time, so times carry their noise.\n\n")
	w("![agent RSS and start-up time against cluster size](%s)\n\n", filepath.Base(o.plot))
	if before != nil {
		w("Before (issue 20), the informer cached whole Nodes and received them as one JSON list; start-up looked for a foreign route ")
		w("with one dump of the routing table per missing route (quadratic in the cluster's size); every Node event re-read the table, ")
		w("compared every pair of pod CIDRs and rewrote the masquerade table. After, the informer keeps of a Node only its name, UID, ")
		w("resourceVersion, pod CIDRs and IP addresses, and receives the initial Nodes as a protobuf watch stream (WatchListClient) instead ")
		w("of a list; start-up reads the table once and decides every route in O(n log n); a Node event re-decides only that node and the few ")
		w("whose pod CIDRs overlap its own or contain its addresses (an index of claims and addresses), and writes only the routes that changed. ")
		w("The price is in bytes at start-up: a watch stream is not gzip-compressed as a list response is.\n\n")
		w("### Before (`%s`)\n\n", before.Label)
		w("`%s` (%s), load average %s before and %s after.\n\n", before.Command, before.Started.Format(time.RFC3339), before.Load[0], before.Load[1])
		table(w, before)
		w("\n### After (`%s`)\n\n", r.Label)
	}
	table(w, r)
	w("\n")
	churnTable(w, r)
	if o.note != "" {
		w("\n%s\n", o.note)
	}
	w("\n### Targets (issue 20)\n\n| target | measured | verdict |\n|---|---|---|\n")
	for _, t := range targets(r) {
		w("| %s | %s | %s |\n", t.goal, t.measured, t.verdict)
	}
	return b.String()
}

func heapNote(s *sizeResult) string {
	if s.HeapSteady == 0 {
		return ""
	}
	return ", Go heap in use " + bytesMiB(s.HeapSteady)
}

func meanReconcile(s *sizeResult) string {
	if s.ChurnReconcileMean == 0 {
		return ""
	}
	return fmt.Sprintf(", with a mean reconcile of %.1f ms during churn", float64(s.ChurnReconcileMean)/float64(time.Millisecond))
}

func (r *results) smallest() *sizeResult {
	var s *sizeResult
	for i := range r.Sizes {
		if r.Sizes[i].Err == "" && (s == nil || r.Sizes[i].Nodes < s.Nodes) {
			s = &r.Sizes[i]
		}
	}
	return s
}

// Sizes0PerSecond is the churn rate of the run.
func (r *results) Sizes0PerSecond() int {
	for _, s := range r.Sizes {
		if s.Churn.PerSecond > 0 {
			return s.Churn.PerSecond
		}
	}
	return 0
}

func summaryText(r *results) string {
	var b strings.Builder
	table(func(f string, a ...any) { fmt.Fprintf(&b, f, a...) }, r)
	return b.String()
}

func writeReport(o *options, r, before *results) error {
	for _, x := range []*results{r, before} {
		if x != nil {
			slices.SortStableFunc(x.Sizes, func(a, b sizeResult) int { return a.Nodes - b.Nodes })
		}
	}
	if err := writeChart(o.plot, r, before); err != nil {
		return err
	}
	old, err := os.ReadFile(o.out)
	if err != nil && !os.IsNotExist(err) {
		return err
	}
	doc := docsection.Replace(string(old), sectionName, markdown(o, r, before))
	return os.WriteFile(o.out, []byte(doc), 0o644)
}

// writeChart draws two panels, steady RSS and start-up time against the
// number of nodes, with the before run dashed when there is one.
func writeChart(path string, r, before *results) error {
	panels := []struct {
		title, y string
		v        func(*sizeResult) float64
		limit    float64
	}{
		{"agent RSS (steady, after start-up)", "MiB", func(s *sizeResult) float64 { return mibOf(s.RSSSteady) }, targetRSSMiB},
		{"agent start-up to all routes", "seconds", func(s *sizeResult) float64 { return s.Converge.Seconds() }, targetConverge.Seconds()},
	}
	const w, h = 1200, 500
	img := vgimg.NewWith(vgimg.UseWH(vg.Length(w)*vg.Inch/96, vg.Length(h)*vg.Inch/96), vgimg.UseDPI(96))
	dc := draw.New(img)
	tiles := draw.Tiles{Rows: 1, Cols: 2, PadX: vg.Points(20), PadTop: vg.Points(10), PadBottom: vg.Points(10), PadLeft: vg.Points(10), PadRight: vg.Points(10)}
	for i, pn := range panels {
		p := plot.New()
		p.Title.Text = pn.title
		p.X.Label.Text = "nodes in the cluster"
		p.Y.Label.Text = pn.y
		p.Add(plotter.NewGrid())
		p.Legend.Top, p.Legend.Left = true, true
		series := []struct {
			r    *results
			name string
			c    color.RGBA
			dash bool
		}{{r, "after (" + r.Label + ")", color.RGBA{R: 0x1f, G: 0x77, B: 0xb4, A: 0xff}, false}}
		if before != nil {
			series = append(series, struct {
				r    *results
				name string
				c    color.RGBA
				dash bool
			}{before, "before (" + before.Label + ")", color.RGBA{R: 0xd6, G: 0x27, B: 0x28, A: 0xff}, true})
		}
		xmax := 0.0
		for _, s := range series {
			var xy plotter.XYs
			for _, sz := range s.r.Sizes {
				if sz.Err != "" {
					continue
				}
				xy = append(xy, plotter.XY{X: float64(sz.Nodes), Y: pn.v(&sz)})
				xmax = max(xmax, float64(sz.Nodes))
			}
			if len(xy) == 0 {
				continue
			}
			l, pts, err := plotter.NewLinePoints(xy)
			if err != nil {
				return err
			}
			l.Color, pts.Color = s.c, s.c
			l.Width = vg.Points(2)
			if s.dash {
				l.Dashes = []vg.Length{vg.Points(6), vg.Points(4)}
			}
			p.Add(l, pts)
			p.Legend.Add(s.name, l, pts)
		}
		if xmax > 0 {
			lim, err := plotter.NewLine(plotter.XYs{{X: 0, Y: pn.limit}, {X: xmax, Y: pn.limit}})
			if err != nil {
				return err
			}
			lim.Color = color.RGBA{G: 0x80, A: 0xff}
			lim.Dashes = []vg.Length{vg.Points(2), vg.Points(3)}
			p.Add(lim)
			p.Legend.Add(fmt.Sprintf("target at %d nodes", targetNodes), lim)
		}
		p.X.Min, p.Y.Min = 0, 0
		p.Draw(tiles.At(dc, i, 0))
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := (vgimg.PngCanvas{Canvas: img}).WriteTo(f); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
