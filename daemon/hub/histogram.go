package hub

import (
	"math"
	"sort"
	"sync/atomic"
)

// Histogram counts observations into fixed buckets, for the delivery latency and the queue depth
// that every delivery observes. The fan-out workers tally into a local Tally and add it here once
// per batch: observed one by one into a shared histogram, each of 15,000 deliveries made a few
// atomic additions that both cores fought over (2% of the daemon's CPU in a fan-out).
type Histogram struct {
	bounds []float64       // upper bounds, ascending; the last bucket (+Inf) is implicit
	counts []atomic.Uint64 // len(bounds)+1, not cumulative
	sum    atomic.Uint64   // float64 bits
}

// NewHistogram returns a histogram with the given upper bounds (ascending).
func NewHistogram(bounds []float64) *Histogram {
	return &Histogram{bounds: bounds, counts: make([]atomic.Uint64, len(bounds)+1)}
}

func (h *Histogram) bucket(v float64) int { return sort.SearchFloat64s(h.bounds, v) }

// Observe adds one observation.
func (h *Histogram) Observe(v float64) {
	h.counts[h.bucket(v)].Add(1)
	h.addSum(v)
}

func (h *Histogram) addSum(v float64) {
	for {
		old := h.sum.Load()
		if h.sum.CompareAndSwap(old, math.Float64bits(math.Float64frombits(old)+v)) {
			return
		}
	}
}

// Snapshot returns the observation count, their sum, and the cumulative count at each upper
// bound, as Prometheus exposes a histogram. The count is the buckets' total, so it agrees with
// them even while workers add.
func (h *Histogram) Snapshot() (count uint64, sum float64, cumulative map[float64]uint64) {
	cumulative = make(map[float64]uint64, len(h.bounds))
	for i, b := range h.bounds {
		count += h.counts[i].Load()
		cumulative[b] = count
	}
	count += h.counts[len(h.bounds)].Load()
	return count, math.Float64frombits(h.sum.Load()), cumulative
}

// Tally gathers observations for one histogram on one goroutine; Flush adds them to it.
type Tally struct {
	h      *Histogram
	counts []uint64
	sum    float64
	n      int
}

// Tally returns an empty tally for h; a nil h gives a tally that drops its observations.
func (h *Histogram) Tally() *Tally {
	if h == nil {
		return nil
	}
	return &Tally{h: h, counts: make([]uint64, len(h.counts))}
}

// Observe adds one observation to the tally.
func (t *Tally) Observe(v float64) {
	if t == nil {
		return
	}
	t.counts[t.h.bucket(v)]++
	t.sum += v
	t.n++
}

// Flush adds the tally to its histogram and empties it.
func (t *Tally) Flush() {
	if t == nil || t.n == 0 {
		return
	}
	for i, c := range t.counts {
		if c > 0 {
			t.h.counts[i].Add(c)
			t.counts[i] = 0
		}
	}
	t.h.addSum(t.sum)
	t.sum, t.n = 0, 0
}
