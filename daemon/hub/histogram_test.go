package hub

import (
	"maps"
	"sync"
	"testing"
)

func TestHistogram(t *testing.T) {
	bounds := []float64{0, 1, 4}
	for _, tc := range []struct {
		name string
		obs  []float64
		want map[float64]uint64 // cumulative, as Prometheus's le
		n    uint64
		sum  float64
	}{
		{"empty", nil, map[float64]uint64{0: 0, 1: 0, 4: 0}, 0, 0},
		{"on the bounds", []float64{0, 1, 4}, map[float64]uint64{0: 1, 1: 2, 4: 3}, 3, 5},
		{"between and above", []float64{0.5, 2, 3, 9}, map[float64]uint64{0: 0, 1: 1, 4: 3}, 4, 14.5},
	} {
		t.Run(tc.name, func(t *testing.T) {
			direct, tallied := NewHistogram(bounds), NewHistogram(bounds)
			tally := tallied.Tally()
			for _, v := range tc.obs {
				direct.Observe(v)
				tally.Observe(v)
			}
			if n, _, _ := tallied.Snapshot(); n != 0 {
				t.Fatalf("a tally reached its histogram before Flush: %d", n)
			}
			tally.Flush()
			tally.Flush() // a second flush adds nothing
			for name, h := range map[string]*Histogram{"direct": direct, "tallied": tallied} {
				n, sum, cum := h.Snapshot()
				if n != tc.n || sum != tc.sum || !maps.Equal(cum, tc.want) {
					t.Errorf("%s: count %d sum %v buckets %v, want %d %v %v", name, n, sum, cum, tc.n, tc.sum, tc.want)
				}
			}
		})
	}
}

// Tallies flushed from many goroutines at once lose nothing.
func TestHistogramConcurrentFlushes(t *testing.T) {
	h := NewHistogram([]float64{1})
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			tally := h.Tally()
			for i := range 1000 {
				tally.Observe(float64(i % 2 * 2)) // 0 or 2
				if i%100 == 99 {
					tally.Flush()
				}
			}
		})
	}
	wg.Wait()
	n, sum, cum := h.Snapshot()
	if n != 8000 || sum != 8000 || cum[1] != 4000 {
		t.Fatalf("count %d sum %v le=1 %d, want 8000 8000 4000", n, sum, cum[1])
	}
}

func TestNilHistogramTallyDrops(t *testing.T) {
	var h *Histogram
	tally := h.Tally()
	tally.Observe(1)
	tally.Flush()
}
