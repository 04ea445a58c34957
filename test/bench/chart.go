package main

import (
	"fmt"
	"image/color"
	"image/png"
	"io"
	"math"
	"os"
	"strconv"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"
)

// series is one plugin's curve in the density chart: ADD latency (ms)
// against the number of containers already on the node.
type series struct {
	label string
	color color.RGBA
	// line are the medians of the fill ADDs, bucketed by occupancy.
	line plotter.XYs
	// marks are the p99 ADD latencies measured at the density levels.
	marks plotter.XYs
}

// The chart's size in pixels, and the resolution that turns the plot's
// point sizes into pixels.
const (
	chartW, chartH = 960, 540
	chartDPI       = 96
)

// chart is the density plot with one legend per plugin, drawn in a band
// below the plot so that no legend ever hides a point.
type chart struct {
	plot    *plot.Plot
	legends []plot.Legend
}

// densityChart plots ADD latency against node density for every series:
// a line for the fill ADDs' medians and square marks for the probes' p99.
func densityChart(title string, xmax float64, all []series) (*chart, error) {
	p := plot.New()
	p.Title.Text = title
	p.Title.TextStyle.Font.Size = vg.Points(14)
	p.Title.Padding = vg.Points(8)
	p.X.Label.Text = "containers already on the node"
	p.Y.Label.Text = "ADD latency (ms)"
	p.X.Min, p.X.Max = 0, xmax
	p.Y.Min, p.Y.Max = 0, 1
	p.X.Tick.Marker = niceTicks{}
	p.Y.Tick.Marker = niceTicks{}
	p.Add(plotter.NewGrid())
	ch := &chart{plot: p}
	for _, s := range all {
		line, err := plotter.NewLine(s.line)
		if err != nil {
			return nil, fmt.Errorf("line of %s: %w", s.label, err)
		}
		line.Color = s.color
		line.Width = vg.Points(2)
		marks, err := plotter.NewScatter(s.marks)
		if err != nil {
			return nil, fmt.Errorf("marks of %s: %w", s.label, err)
		}
		marks.Color = s.color
		marks.Shape = draw.BoxGlyph{}
		marks.Radius = vg.Points(3.5)
		if len(s.line) > 0 {
			p.Add(line)
		}
		if len(s.marks) > 0 {
			p.Add(marks)
		}
		// A plugin without data keeps its legend, so its absence shows.
		l := plot.NewLegend()
		l.Top, l.Left = true, true
		l.Add(s.label+": median ADD while filling", line)
		l.Add(s.label+": p99 ADD at a density level", marks)
		ch.legends = append(ch.legends, l)
	}
	// Room above the highest point, and a labelled tick at the top.
	top := p.Y.Max * 1.05
	step := niceStep(top / 5)
	p.Y.Max = math.Ceil(top/step) * step
	return ch, nil
}

// draw draws the plot and, in a band below it, the legends side by side.
func (ch *chart) draw(c draw.Canvas) {
	var band vg.Length
	for _, l := range ch.legends {
		band = max(band, l.Rectangle(c).Size().Y)
	}
	pad := vg.Points(10)
	if len(ch.legends) > 0 {
		band += 2 * pad
	}
	ch.plot.Draw(draw.Crop(c, 0, 0, band, 0))
	if len(ch.legends) == 0 {
		return
	}
	strip := draw.Crop(c, pad, 0, pad, band-c.Size().Y-pad)
	colW := strip.Size().X / vg.Length(len(ch.legends))
	for i, l := range ch.legends {
		left := colW * vg.Length(i)
		l.Draw(draw.Crop(strip, left, left+colW-strip.Size().X, 0, 0))
	}
}

// encodeChart renders ch as a chartW x chartH PNG.
func encodeChart(w io.Writer, ch *chart) error {
	c := vgimg.NewWith(vgimg.UseWH(vg.Length(chartW)*vg.Inch/chartDPI, vg.Length(chartH)*vg.Inch/chartDPI), vgimg.UseDPI(chartDPI))
	ch.draw(draw.New(c))
	return png.Encode(w, c.Image())
}

// writeChart renders ch as a PNG file at path.
func writeChart(path string, ch *chart) error {
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("chart create %s: %w", path, err)
	}
	if err := encodeChart(f, ch); err != nil {
		f.Close()
		return fmt.Errorf("chart encode %s: %w", path, err)
	}
	return f.Close()
}

// niceTicks labels an axis every 1, 2 or 5 times a power of ten, about
// five labels from min to max, with minor ticks halfway between them.
type niceTicks struct{}

func (niceTicks) Ticks(lo, hi float64) []plot.Tick {
	step := niceStep((hi - lo) / 5)
	decimals := max(0, int(-math.Floor(math.Log10(step))))
	first := math.Ceil(lo / step)
	var ticks []plot.Tick
	for i := 0.0; i <= 20; i++ {
		v := (first + i) * step
		if v > hi+step/1e6 {
			break
		}
		ticks = append(ticks, plot.Tick{Value: v, Label: strconv.FormatFloat(v, 'f', decimals, 64)})
		if mid := v + step/2; mid < hi {
			ticks = append(ticks, plot.Tick{Value: mid})
		}
	}
	return ticks
}

// niceStep rounds a raw tick step up to 1, 2 or 5 times a power of ten.
func niceStep(raw float64) float64 {
	if raw <= 0 || math.IsNaN(raw) || math.IsInf(raw, 0) {
		return 1
	}
	p := math.Pow(10, math.Floor(math.Log10(raw)))
	for _, m := range []float64{1, 2, 5, 10} {
		if m*p >= raw {
			return m * p
		}
	}
	return 10 * p
}
