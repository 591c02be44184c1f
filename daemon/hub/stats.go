package hub

import (
	"slices"
	"sync"
	"sync/atomic"
)

// Observer takes one observation (a prometheus.Histogram is one); the hub does not depend on the
// metrics library.
type Observer interface{ Observe(float64) }

// Stats are counters shared by every hub of a daemon (atomic, so hubs update them without a lock).
type Stats struct {
	Subscribers  atomic.Int64
	ByVersion    [Versions]atomic.Int64 // subscribers per protocol version (4: Server-Sent Events)
	SlowDropped  atomic.Int64
	Deliveries   atomic.Int64
	WriteErrored atomic.Int64
	MaxQueue     atomic.Int64 // the longest queue any subscriber had
	// Latency observes seconds from an event's post reaching the daemon to its write to a socket;
	// QueueDepth observes a subscriber's backlog (frames) each time a batch reaches it. Either may be nil.
	Latency, QueueDepth *Histogram

	// flushes are the flush goroutines writing queued frames, so a shutdown can wait for them.
	flushes sync.WaitGroup
}

// WaitFlushes waits until no flush goroutine of any hub sharing st is running. Called once no
// frame can be queued any more (the daemon's shutdown, after every connection is closed).
func (st *Stats) WaitFlushes() { st.flushes.Wait() }

// count adds delta subscribers of a version to the gauges.
func (st *Stats) count(version int, delta int64) {
	st.Subscribers.Add(delta)
	st.ByVersion[version%Versions].Add(delta)
}

// tallies are one fan-out worker's observations of a batch, added to the shared Stats once it has
// handed out its part (flush) rather than at every delivery.
type tallies struct {
	latency, depth *Tally
	deliveries     int64
}

func (st *Stats) tallies() *tallies {
	return &tallies{latency: st.Latency.Tally(), depth: st.QueueDepth.Tally()}
}

func (t *tallies) flush(st *Stats) {
	t.latency.Flush()
	t.depth.Flush()
	st.Deliveries.Add(t.deliveries)
	t.deliveries = 0
}

// observeDepth records a subscriber's backlog as a batch reaches it: into t, or straight into st
// outside a fan-out (t nil).
func (st *Stats) observeDepth(t *tallies, queued int) {
	switch {
	case t != nil:
		t.depth.Observe(float64(queued))
	case st.QueueDepth != nil:
		st.QueueDepth.Observe(float64(queued))
	}
}

// observeDelivered records n frames written to a socket and, if latency >= 0, their latency in
// seconds: into t, or straight into st outside a fan-out (t nil).
func (st *Stats) observeDelivered(t *tallies, n int, latency float64) {
	if t == nil {
		st.Deliveries.Add(int64(n))
		if st.Latency != nil && latency >= 0 {
			st.Latency.Observe(latency)
		}
		return
	}
	t.deliveries += int64(n)
	if latency >= 0 {
		t.latency.Observe(latency)
	}
}

func maxQueue(st *Stats, n int) {
	for {
		cur := st.MaxQueue.Load()
		if int64(n) <= cur || st.MaxQueue.CompareAndSwap(cur, int64(n)) {
			return
		}
	}
}

// Queue is one subscriber's backlog, for `matchstream top`.
type Queue struct {
	Version int `json:"protocol"`
	Queued  int `json:"queued"`
}

// Longest returns the k subscribers with the longest queues.
func (h *Hub) Longest(k int) []Queue {
	h.mu.Lock()
	subs := slices.Clone(h.subs)
	h.mu.Unlock()
	var out []Queue
	for _, s := range subs {
		s.mu.Lock()
		n := len(s.queue)
		s.mu.Unlock()
		if n > 0 {
			out = append(out, Queue{Version: s.Version, Queued: n})
		}
	}
	slices.SortFunc(out, func(a, b Queue) int { return b.Queued - a.Queued })
	return out[:min(k, len(out))]
}
