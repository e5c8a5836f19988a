package portforward

import (
	"slices"
	"sync"
	"testing"
)

// An observation counts in the first bucket whose upper bound is at or above it, as in Prometheus (le).
func TestHistogramBuckets(t *testing.T) {
	h := newHistogram([]float64{1, 2})
	for _, v := range []float64{0, 1, 1.5, 2, 3} {
		h.observe(v)
	}
	got := h.snapshot()
	want := Histogram{Bounds: []float64{1, 2}, Counts: []uint64{2, 2, 1}, Count: 5, Sum: 7.5}
	if !slices.Equal(got.Bounds, want.Bounds) || !slices.Equal(got.Counts, want.Counts) || got.Count != want.Count || got.Sum != want.Sum {
		t.Errorf("snapshot %+v, want %+v", got, want)
	}

	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 1000 {
				h.observe(0.5)
			}
		})
	}
	wg.Wait()
	if got := h.snapshot(); got.Count != 8005 || got.Counts[0] != 8002 || got.Sum != 7.5+4000 {
		t.Errorf("after 8000 concurrent observations of 0.5: %+v", got)
	}
}

// The reasons an exporter lists are every reason a session end or a reset is counted under, but the
// slot's own shutdown (and the "none" placeholder), which ends no session that is replaced.
func TestReasonLists(t *testing.T) {
	ends := SessionEndReasons()
	if slices.Contains(ends, endShutdown.String()) || slices.Contains(ends, endNone.String()) ||
		len(ends) != int(numEndReasons)-2 || !slices.Contains(ends, "partition") {
		t.Errorf("SessionEndReasons() = %v", ends)
	}
	if got := ResetReasons(); !slices.Equal(got, resetReasonNames[:]) {
		t.Errorf("ResetReasons() = %v, want %v", got, resetReasonNames)
	}
}
