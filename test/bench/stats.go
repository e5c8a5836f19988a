package main

import (
	"math"
	"slices"
	"time"
)

// summary is the median and spread of one figure over the repetitions of a measurement.
type summary struct {
	Median float64 `json:"median"`
	Min    float64 `json:"min"`
	Max    float64 `json:"max"`
	// SpreadPct is (max-min)/median in percent: how much the repetitions disagree.
	SpreadPct float64   `json:"spread_pct"`
	N         int       `json:"n"`
	Samples   []float64 `json:"samples"`
}

func summarize(samples []float64) summary {
	s := summary{N: len(samples), Samples: samples}
	if len(samples) == 0 {
		s.Median, s.Min, s.Max, s.SpreadPct = math.NaN(), math.NaN(), math.NaN(), math.NaN()
		return s
	}
	sorted := slices.Clone(samples)
	slices.Sort(sorted)
	s.Min, s.Max = sorted[0], sorted[len(sorted)-1]
	s.Median = quantileSorted(sorted, 0.5)
	if s.Median != 0 {
		s.SpreadPct = 100 * (s.Max - s.Min) / math.Abs(s.Median)
	}
	return s
}

// quantileSorted is the linear-interpolation quantile (type 7) of an ascending slice.
func quantileSorted(sorted []float64, q float64) float64 {
	if len(sorted) == 0 {
		return math.NaN()
	}
	pos := q * float64(len(sorted)-1)
	lo := int(math.Floor(pos))
	hi := int(math.Ceil(pos))
	if lo == hi {
		return sorted[lo]
	}
	return sorted[lo] + (sorted[hi]-sorted[lo])*(pos-float64(lo))
}

// percentiles returns the p50 and p99 of durations, in microseconds.
func percentiles(d []time.Duration) (p50, p99 float64) {
	if len(d) == 0 {
		return math.NaN(), math.NaN()
	}
	f := make([]float64, len(d))
	for i, v := range d {
		f[i] = float64(v) / float64(time.Microsecond)
	}
	slices.Sort(f)
	return quantileSorted(f, 0.50), quantileSorted(f, 0.99)
}

// pairedRatios divides a[i] by b[i]: ratios of interleaved measurements, so a noisy moment affects both
// sides of one ratio rather than one side of the comparison.
func pairedRatios(a, b []float64) []float64 {
	n := min(len(a), len(b))
	out := make([]float64, 0, n)
	for i := range n {
		if b[i] != 0 {
			out = append(out, a[i]/b[i])
		}
	}
	return out
}

// pairedDiffs is a[i]-b[i].
func pairedDiffs(a, b []float64) []float64 {
	n := min(len(a), len(b))
	out := make([]float64, 0, n)
	for i := range n {
		out = append(out, a[i]-b[i])
	}
	return out
}
