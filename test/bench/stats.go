package main

import (
	"fmt"
	"math"
	"sort"
	"time"
)

// durations is a set of measured latencies.
type durations []time.Duration

// sorted returns a sorted copy, leaving the measurement order intact.
func (d durations) sorted() durations {
	s := append(durations(nil), d...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s
}

// percentile returns the nearest-rank percentile p (0 < p <= 100): the
// smallest sample that at least p% of the samples do not exceed. With 100
// samples p99 is the 99th smallest, so one outlier does not decide it.
func (d durations) percentile(p float64) time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := d.sorted()
	rank := int(math.Ceil(p / 100 * float64(len(s))))
	rank = min(max(rank, 1), len(s))
	return s[rank-1]
}

func (d durations) median() time.Duration { return d.percentile(50) }
func (d durations) p99() time.Duration    { return d.percentile(99) }

// sum returns the total of the samples.
func (d durations) sum() time.Duration {
	var t time.Duration
	for _, x := range d {
		t += x
	}
	return t
}

// ms formats a duration in milliseconds with two decimals.
func ms(d time.Duration) string { return fmt.Sprintf("%.2f ms", float64(d)/float64(time.Millisecond)) }

// ratio returns a/b, or NaN when b is zero (nothing was measured).
func ratio(a, b time.Duration) float64 {
	if b == 0 {
		return math.NaN()
	}
	return float64(a) / float64(b)
}

// medianInt64 returns the median of integer samples (upper middle).
func medianInt64(v []int64) int64 {
	if len(v) == 0 {
		return 0
	}
	s := append([]int64(nil), v...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[len(s)/2]
}

// medianFloat returns the median of float samples (upper middle).
func medianFloat(v []float64) float64 {
	if len(v) == 0 {
		return math.NaN()
	}
	s := append([]float64(nil), v...)
	sort.Float64s(s)
	return s[len(s)/2]
}

// maxFloat returns the largest sample, NaN for none.
func maxFloat(v []float64) float64 {
	if len(v) == 0 {
		return math.NaN()
	}
	m := v[0]
	for _, x := range v[1:] {
		m = math.Max(m, x)
	}
	return m
}
