package main

import (
	"bufio"
	"fmt"
	"strconv"
	"strings"
)

// histogram is the _sum and _count of one Prometheus histogram, added over
// the series that match a filter.
type histogram struct {
	sum   float64
	count float64
}

func (h histogram) sub(o histogram) histogram { return histogram{h.sum - o.sum, h.count - o.count} }

// mean is the average observation, 0 without any.
func (h histogram) mean() float64 {
	if h.count <= 0 {
		return 0
	}
	return h.sum / h.count
}

// scrapeHistogram adds up the _sum and _count series of the histogram name
// (Prometheus text format) whose labels contain every one of labels
// (`key="value"` strings). found is false when no series matched, so a
// metric the runtime does not export is told apart from one at zero.
func scrapeHistogram(text, name string, labels ...string) (h histogram, found bool, err error) {
	sc := bufio.NewScanner(strings.NewReader(text))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' {
			continue
		}
		series, value, ok := cutLast(line)
		if !ok {
			continue
		}
		metric, lbls, _ := strings.Cut(series, "{")
		var dst *float64
		switch metric {
		case name + "_sum":
			dst = &h.sum
		case name + "_count":
			dst = &h.count
		default:
			continue
		}
		if !hasLabels(lbls, labels) {
			continue
		}
		v, perr := strconv.ParseFloat(value, 64)
		if perr != nil {
			return h, found, fmt.Errorf("metric %s: value %q: %w", metric, value, perr)
		}
		*dst += v
		found = true
	}
	return h, found, sc.Err()
}

// cutLast splits a sample line into its series and its value; a timestamp
// after the value is dropped.
func cutLast(line string) (series, value string, ok bool) {
	// Label values may hold spaces; the series ends at the last '}', or at
	// the first space without labels.
	end := strings.LastIndexByte(line, '}')
	if end < 0 {
		end = strings.IndexByte(line, ' ') - 1
		if end < 0 {
			return "", "", false
		}
	}
	rest := strings.Fields(line[end+1:])
	if len(rest) == 0 {
		return "", "", false
	}
	return line[:end+1], rest[0], true
}

func hasLabels(lbls string, want []string) bool {
	for _, w := range want {
		if !strings.Contains(lbls, w) {
			return false
		}
	}
	return true
}
