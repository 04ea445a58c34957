package main

import (
	"fmt"
	"image"
	"image/color"
	"image/png"
	"math"
	"os"
	"strings"
)

// series is one plugin's curve in the density chart: ADD latency (ms)
// against the number of containers already on the node.
type series struct {
	label string
	color color.RGBA
	// line are the medians of the fill ADDs, bucketed by occupancy.
	line []point
	// marks are the p99 ADD latencies measured at the density levels.
	marks []point
}

type point struct{ x, y float64 }

const (
	plotW, plotH                         = 960, 540
	marginL, marginR, marginT, marginB   = 80, 30, 50, 70
	textScale                            = 2
	charAdvance                          = (glyphW + 1) * textScale
	axisColorR, axisColorG, axisColorB   = 40, 40, 40
	gridColorR, gridColorG, gridColorB   = 225, 225, 225
	legendX, legendY, legendLineH, markR = marginL + 16, marginT + 12, 22, 5
)

// canvas is an RGBA image with the few drawing primitives a chart needs.
type canvas struct{ *image.RGBA }

func (c canvas) dot(x, y int, col color.RGBA) {
	if image.Pt(x, y).In(c.Bounds()) {
		c.SetRGBA(x, y, col)
	}
}

// line draws a segment of the given thickness (Bresenham, square pen).
func (c canvas) line(x0, y0, x1, y1, thick int, col color.RGBA) {
	dx, dy := abs(x1-x0), -abs(y1-y0)
	sx, sy := sign(x1-x0), sign(y1-y0)
	err := dx + dy
	for {
		for ox := 0; ox < thick; ox++ {
			for oy := 0; oy < thick; oy++ {
				c.dot(x0+ox-thick/2, y0+oy-thick/2, col)
			}
		}
		if x0 == x1 && y0 == y1 {
			return
		}
		if e2 := 2 * err; e2 >= dy {
			err += dy
			x0 += sx
		} else {
			err += dx
			y0 += sy
		}
	}
}

// square fills a square of half-side r centred on (x, y).
func (c canvas) square(x, y, r int, col color.RGBA) {
	for ox := -r; ox <= r; ox++ {
		for oy := -r; oy <= r; oy++ {
			c.dot(x+ox, y+oy, col)
		}
	}
}

// text draws s with its top-left corner at (x, y).
func (c canvas) text(x, y int, s string, col color.RGBA) {
	for _, r := range strings.ToLower(s) {
		g := glyphs[r]
		for gy := 0; gy < glyphH; gy++ {
			for gx := 0; gx < glyphW; gx++ {
				if g[gy][gx] {
					c.square(x+gx*textScale, y+gy*textScale, 0, col)
					c.square(x+gx*textScale+1, y+gy*textScale, 0, col)
					c.square(x+gx*textScale, y+gy*textScale+1, 0, col)
					c.square(x+gx*textScale+1, y+gy*textScale+1, 0, col)
				}
			}
		}
		x += charAdvance
	}
}

func textWidth(s string) int { return len(s) * charAdvance }

// densityChart draws ADD latency against node density for every series.
func densityChart(title string, xmax float64, all []series) *image.RGBA {
	img := image.NewRGBA(image.Rect(0, 0, plotW, plotH))
	c := canvas{img}
	white := color.RGBA{255, 255, 255, 255}
	for x := 0; x < plotW; x++ {
		for y := 0; y < plotH; y++ {
			img.SetRGBA(x, y, white)
		}
	}
	ymax := 0.0
	for _, s := range all {
		for _, p := range append(append([]point(nil), s.line...), s.marks...) {
			ymax = math.Max(ymax, p.y)
		}
	}
	ystep := niceStep(ymax / 5)
	ymax = math.Max(ystep, math.Ceil(ymax*1.05/ystep)*ystep)
	xstep := niceStep(xmax / 8)
	x0, y0 := marginL, plotH-marginB
	x1, y1 := plotW-marginR, marginT
	px := func(v float64) int { return x0 + int(math.Round(v/xmax*float64(x1-x0))) }
	py := func(v float64) int { return y0 - int(math.Round(v/ymax*float64(y0-y1))) }

	axis := color.RGBA{axisColorR, axisColorG, axisColorB, 255}
	grid := color.RGBA{gridColorR, gridColorG, gridColorB, 255}
	for v := 0.0; v <= ymax+ystep/2; v += ystep {
		c.line(x0, py(v), x1, py(v), 1, grid)
		lbl := trimFloat(v)
		c.text(x0-10-textWidth(lbl), py(v)-glyphH, lbl, axis)
	}
	for v := 0.0; v <= xmax+xstep/2; v += xstep {
		c.line(px(v), y0, px(v), y1, 1, grid)
		lbl := trimFloat(v)
		c.text(px(v)-textWidth(lbl)/2, y0+8, lbl, axis)
	}
	c.line(x0, y0, x1, y0, 2, axis)
	c.line(x0, y0, x0, y1, 2, axis)
	c.text((x0+x1-textWidth(title))/2, 14, title, axis)
	xl := "containers already on the node"
	c.text((x0+x1-textWidth(xl))/2, plotH-28, xl, axis)
	c.text(8, marginT-30, "ms", axis)

	for i, s := range all {
		for j := 1; j < len(s.line); j++ {
			a, b := s.line[j-1], s.line[j]
			c.line(px(a.x), py(a.y), px(b.x), py(b.y), 3, s.color)
		}
		for _, m := range s.marks {
			c.square(px(m.x), py(m.y), markR, s.color)
		}
		ly := legendY + i*2*legendLineH
		c.line(legendX, ly+glyphH, legendX+30, ly+glyphH, 3, s.color)
		c.text(legendX+40, ly, s.label+": median add while filling", axis)
		c.square(legendX+15, ly+legendLineH+glyphH, markR, s.color)
		c.text(legendX+40, ly+legendLineH, s.label+": p99 add at a density level", axis)
	}
	return img
}

// niceStep rounds a raw tick step up to 1, 2 or 5 times a power of ten.
func niceStep(raw float64) float64 {
	if raw <= 0 || math.IsNaN(raw) {
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

func trimFloat(v float64) string {
	s := fmt.Sprintf("%.2f", v)
	s = strings.TrimRight(strings.TrimRight(s, "0"), ".")
	return s
}

func writePNG(path string, img image.Image) error {
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("create %s: %w", path, err)
	}
	if err := png.Encode(f, img); err != nil {
		f.Close()
		return fmt.Errorf("encode %s: %w", path, err)
	}
	return f.Close()
}

func abs(v int) int {
	if v < 0 {
		return -v
	}
	return v
}

func sign(v int) int {
	switch {
	case v > 0:
		return 1
	case v < 0:
		return -1
	}
	return 0
}
