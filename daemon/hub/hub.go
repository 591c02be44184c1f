// Package hub is the fan-out of one match: its subscribers, each with a bounded outgoing queue, and
// the broadcast of pre-rendered frames to them. It knows nothing of listeners, HTTP or how bytes
// reach a socket beyond the Conn it is given.
//
// Delivery: a broadcast renders each frame once per protocol version and hands the same bytes to
// every subscriber, from a fan-out goroutine of the hub (its caller, a post, does not wait). When
// the connection can write without blocking (TryWriter, the epoll layer), the fan-out writes
// straight to the socket — one writev per subscriber per batch, the subscribers split over all
// cores, no goroutine per delivery. Only a subscriber whose socket is full gets a flush
// goroutine, which lives until its queue drains.
//
// Slow-consumer policy: a broadcast never blocks on a client. A subscriber that still has
// QueueLimit frames queued from earlier broadcasts, or whose socket takes nothing for WriteTimeout,
// is disconnected with a logged reason, and the others never wait for it. An idle subscriber costs
// one small struct: no queue, no goroutine.
package hub

import (
	"errors"
	"log/slog"
	"net"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// Versions is the number of protocol version slots: 1-3 on the stream ports, 4 for Server-Sent
// Events (protocol.VersionSSE; the hub does not import protocol).
const Versions = 5

// Conn is the hub's view of a client connection.
type Conn interface {
	Write(p []byte) (int, error)
	Close() error
}

// TryWriter writes what the socket takes now, without blocking and without modifying bufs;
// n is the number of bytes written. The epoll connection layer implements it.
type TryWriter interface {
	TryWritev(bufs [][]byte) (n int, err error)
}

// deadliner is implemented by net.Conn; the hub uses it for the write timeout when available.
type deadliner interface{ SetWriteDeadline(time.Time) error }

// backlogger is a connection that may have accepted bytes it has not written yet (a TLS record
// the socket took only part of): the flush goroutine runs until they are out.
type backlogger interface{ Backlogged() bool }

func backlogged(c Conn) bool {
	b, ok := c.(backlogger)
	return ok && b.Backlogged()
}

// vectorWriter writes a batch of frames in one writev(2), blocking until done.
type vectorWriter interface {
	Writev(bufs [][]byte) (int64, error)
}

// Config is the hub's section of the daemon configuration.
type Config struct {
	QueueLimit   int           // frames queued per subscriber before it is cut as a slow consumer
	WriteTimeout time.Duration // a write blocked this long cuts the subscriber; 0 = no limit
}

// Hub fans out one match.
type Hub struct {
	// Name is what the hub fans out (the match id), for whoever holds one of its subscribers.
	Name   string
	limits *Limits
	log    *slog.Logger
	stats  *Stats

	mu     sync.Mutex
	subs   []*Subscriber // each knows its index, so leaving is a swap-remove
	closed bool
	// pending are the broadcasts not yet handed out, in order; fanning: a fanOut goroutine is
	// handing them out; idle wakes Drain when it has.
	pending []batch
	shared  bool // subs is held by a pending batch too (ownSubsLocked)
	fanning bool
	idle    *sync.Cond
}

// New returns the hub of one match. stats may be shared between hubs; log carries the match id.
func New(cfg Config, log *slog.Logger, stats *Stats) *Hub {
	return NewShared(NewLimits(cfg), log, stats)
}

// NewShared is New with limits that other hubs share, and that a reload may change.
func NewShared(limits *Limits, log *slog.Logger, stats *Stats) *Hub {
	if stats == nil {
		stats = new(Stats)
	}
	return &Hub{limits: limits, log: log, stats: stats}
}

// Limits are the slow-consumer limits of Config, read by every delivery, so that a reload can
// change them for the hubs that are running.
type Limits struct {
	queue atomic.Int64
	write atomic.Int64 // nanoseconds
}

// NewLimits returns cfg's limits (QueueLimit 0 or less: 64).
func NewLimits(cfg Config) *Limits {
	l := new(Limits)
	l.Set(cfg)
	return l
}

// Set changes the limits; deliveries after it use the new ones.
func (l *Limits) Set(cfg Config) {
	if cfg.QueueLimit <= 0 {
		cfg.QueueLimit = 64
	}
	l.queue.Store(int64(cfg.QueueLimit))
	l.write.Store(int64(cfg.WriteTimeout))
}

func (l *Limits) queueLimit() int             { return int(l.queue.Load()) }
func (l *Limits) writeTimeout() time.Duration { return time.Duration(l.write.Load()) }

// Subscriber is one client of a match.
type Subscriber struct {
	hub     *Hub
	conn    Conn
	Version int // protocol version: selects which rendering the subscriber gets
	idx     int // place in hub.subs; -1 when not subscribed (guarded by hub.mu)

	mu         sync.Mutex
	queue      [][]byte
	writing    bool // someone (the broadcaster or the flush goroutine) owns the socket's write side
	done       bool // closed, or closing once the queue drains
	closeAfter bool // the last frame is queued: close when drained
	closed     bool
	oldest     time.Time // when the oldest queued frame was posted (zero: not an event)
}

// Subscribe adds conn. The frames in first (status, or history for a resume) are queued before any
// later broadcast; the caller serialises Subscribe with Broadcast so nothing is missed between.
// If last is true the connection is closed once first is written (a match not live: status, close).
func (h *Hub) Subscribe(conn Conn, version int, first [][]byte, last bool) *Subscriber {
	s := &Subscriber{hub: h, conn: conn, Version: version, idx: -1}
	h.mu.Lock()
	if !last && !h.closed {
		h.ownSubsLocked()
		s.idx = len(h.subs)
		h.subs = append(h.subs, s)
		h.stats.count(version, 1)
	} else {
		last = true
	}
	h.mu.Unlock()
	if (len(first) > 0 || last) && !s.deliver(first, last, false, time.Time{}, nil) {
		s.Leave()
	}
	return s
}

// Detach takes the subscriber out of the hub without closing or writing to its connection, for
// handing the connection to a successor process. It succeeds only for a subscriber with nothing
// queued or being written, so the client has received exactly whole frames; afterwards nothing
// in the hub touches the connection again.
func (s *Subscriber) Detach() bool {
	h := s.hub
	h.mu.Lock()
	defer h.mu.Unlock()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.writing || len(s.queue) > 0 || s.done || s.closed {
		return false
	}
	h.removeLocked(s)
	s.done, s.closed = true, true
	return true
}

// Match is the name of the hub the subscriber belongs to.
func (s *Subscriber) Match() string { return s.hub.Name }

// Busy reports whether the subscriber has frames queued or being written.
func (s *Subscriber) Busy() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.writing || len(s.queue) > 0
}

// Busy reports whether a broadcast is being handed out or any subscriber has frames queued or
// being written.
func (h *Hub) Busy() bool {
	h.mu.Lock()
	subs, fanning := slices.Clone(h.subs), h.fanning
	h.mu.Unlock()
	if fanning {
		return true
	}
	for _, s := range subs {
		if s.Busy() {
			return true
		}
	}
	return false
}

// Len is the number of subscribers.
func (h *Hub) Len() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.subs)
}

// removeLocked takes s out of h.subs; h.mu is held.
func (h *Hub) removeLocked(s *Subscriber) bool {
	i := s.idx
	if i < 0 || i >= len(h.subs) || h.subs[i] != s {
		return false
	}
	h.ownSubsLocked()
	last := len(h.subs) - 1
	h.subs[i] = h.subs[last]
	h.subs[i].idx = i
	h.subs[last] = nil
	h.subs = h.subs[:last]
	s.idx = -1
	h.stats.count(s.Version, -1)
	return true
}

// ownSubsLocked makes h.subs this hub's own before it is changed: a pending batch may hold the
// same array (Broadcast shares it rather than copy 8 bytes per subscriber per event, garbage the
// collector would then run for in the middle of the fan-out). h.mu is held.
func (h *Hub) ownSubsLocked() {
	if h.shared {
		h.subs = slices.Clone(h.subs)
		h.shared = false
	}
}

// dropAllLocked empties the hub (match over, shutdown); h.mu is held.
func (h *Hub) dropAllLocked() []*Subscriber {
	subs := h.subs
	for _, s := range subs {
		s.idx = -1
		h.stats.count(s.Version, -1)
	}
	h.subs, h.shared = nil, false
	h.closed = true
	return subs
}

// parallelMin is the subscriber count below which one goroutine delivers a broadcast alone.
const parallelMin = 256

// Broadcast sends n frames to every subscriber — one batch of events, picked by protocol version
// through frameFor(version, i) — and returns once they are rendered: the hub's fan-out goroutine
// hands them out, batch after batch in the order they were broadcast, so the post that caused
// them is answered without waiting for 15,000 writes. The batch goes to the subscribers of this
// moment; who subscribes after it was sent a status or history that has it. It never blocks on a
// client. A subscriber that still has QueueLimit frames or more queued from earlier broadcasts is
// cut as a slow consumer instead; counting the backlog before the batch means a large batch
// posted at once does not cut a client that keeps up. If last, each subscriber is closed once the batch is written and the hub takes no
// new subscribers. posted is when the batch reached the daemon, for the latency histogram.
func (h *Hub) Broadcast(posted time.Time, n int, frameFor func(version, i int) []byte, last bool) {
	var b batch // built once per version, shared by every subscriber
	for v := 1; v < len(b.byVersion); v++ {
		b.byVersion[v] = make([][]byte, n)
		for i := range n {
			b.byVersion[v][i] = frameFor(v, i)
		}
	}
	b.posted, b.last = posted, last
	h.mu.Lock()
	b.subs, h.shared = h.subs, true
	if last {
		h.dropAllLocked()
	}
	h.pending = append(h.pending, b)
	start := !h.fanning
	h.fanning = true
	h.mu.Unlock()
	if start {
		h.stats.flushes.Go(h.fanOut)
	}
}

// batch is one broadcast waiting for the fan-out: its frames per version and the subscribers it
// goes to (those of the hub when it was posted: who joins later was sent a status that has it).
type batch struct {
	byVersion [Versions][][]byte
	subs      []*Subscriber
	posted    time.Time
	last      bool
}

// fanOut delivers the hub's pending batches in order, then ends. One runs per hub at a time, so
// each subscriber gets the batches in the order they were posted.
func (h *Hub) fanOut() {
	for {
		h.mu.Lock()
		if len(h.pending) == 0 {
			h.fanning = false
			if h.idle != nil {
				h.idle.Broadcast()
			}
			h.mu.Unlock()
			return
		}
		b := h.pending[0]
		h.pending[0] = batch{}
		h.pending = h.pending[1:]
		h.mu.Unlock()
		cut := b.deliver()
		h.mu.Lock()
		for _, c := range cut {
			for _, s := range c {
				h.removeLocked(s)
			}
		}
		h.mu.Unlock()
	}
}

// deliver hands the batch to each of its subscribers, split over every core, and returns those to
// cut.
func (b *batch) deliver() [][]*Subscriber {
	subs := b.subs
	if len(subs) == 0 {
		return nil
	}
	st := subs[0].hub.stats
	workers := min(runtime.GOMAXPROCS(0), max(1, len(subs)/parallelMin))
	cut := make([][]*Subscriber, workers)
	part := func(w int, part []*Subscriber) {
		t := st.tallies()
		for _, s := range part {
			if !s.deliver(b.byVersion[s.Version%Versions], b.last, true, b.posted, t) {
				cut[w] = append(cut[w], s)
			}
		}
		t.flush(st)
	}
	if workers == 1 {
		part(0, subs)
		return cut
	}
	var wg sync.WaitGroup
	size := (len(subs) + workers - 1) / workers
	for w := range workers {
		wg.Go(func() { part(w, subs[min(w*size, len(subs)):min((w+1)*size, len(subs))]) })
	}
	wg.Wait()
	return cut
}

// Drain waits until every batch broadcast so far has been handed to its subscribers (written, or
// queued for a slow one): before a hand-over detaches them, or a shutdown notice follows.
func (h *Hub) Drain() {
	h.mu.Lock()
	defer h.mu.Unlock()
	for h.fanning {
		if h.idle == nil {
			h.idle = sync.NewCond(&h.mu)
		}
		h.idle.Wait()
	}
}

// Heartbeat writes frame to every subscriber of one version (an SSE comment that keeps proxies from
// timing an idle stream out). A subscriber whose backlog is at the limit is cut, as by a broadcast.
func (h *Hub) Heartbeat(version int, frame []byte) {
	h.mu.Lock()
	defer h.mu.Unlock()
	var cut []*Subscriber
	batch := [][]byte{frame}
	for _, s := range h.subs {
		if s.Version == version && !s.deliver(batch, false, true, time.Time{}, nil) {
			cut = append(cut, s)
		}
	}
	for _, s := range cut {
		h.removeLocked(s)
	}
}

// Shutdown queues a last frame per subscriber (the notice that the server stops), after which each
// connection closes once written; the hub takes no new subscribers. A subscriber's backlog does not
// count against it here: the notice is one small frame.
func (h *Hub) Shutdown(frameFor func(version int) []byte) {
	h.Drain() // the events broadcast before come first
	h.mu.Lock()
	subs := h.dropAllLocked()
	h.mu.Unlock()
	now := time.Now()
	for _, s := range subs {
		s.deliver([][]byte{frameFor(s.Version)}, true, false, now, nil)
	}
}

// Close disconnects every subscriber now.
func (h *Hub) Close() {
	h.mu.Lock()
	subs := h.dropAllLocked()
	h.mu.Unlock()
	for _, s := range subs {
		s.close()
	}
}

// Cut disconnects every subscriber now and goes on taking new ones: they were shown a history the
// match no longer has, and reconnect to the one it has.
func (h *Hub) Cut() {
	h.mu.Lock()
	subs := h.dropAllLocked()
	h.closed = false
	h.mu.Unlock()
	for _, s := range subs {
		s.close()
	}
}

// Leave removes the subscriber (its client went away) and closes its connection.
func (s *Subscriber) Leave() {
	h := s.hub
	h.mu.Lock()
	h.removeLocked(s)
	h.mu.Unlock()
	s.close()
}

// deliver writes frames now if nothing is queued and the connection can take them without
// blocking, and queues what is left for a flush goroutine. false means the subscriber is finished
// and must be removed by the caller (which may hold hub.mu): cut because its backlog was at the
// limit (only when limited: a subscription's first frames and the shutdown notice are never
// refused), or its connection failed. frames is shared and never modified.
// A fan-out worker passes its tallies t; other callers nil.
func (s *Subscriber) deliver(frames [][]byte, last, limited bool, posted time.Time, t *tallies) bool {
	st := s.hub.stats
	s.mu.Lock()
	if s.done {
		s.mu.Unlock()
		return true
	}
	queued := len(s.queue)
	if limited {
		st.observeDepth(t, queued)
	}
	if limit := s.hub.limits.queueLimit(); limited && queued >= limit {
		s.done = true
		s.mu.Unlock()
		s.hub.stats.SlowDropped.Add(1)
		s.hub.log.Info("client cut", "reason", "slow_consumer", "queued", queued, "limit", limit)
		s.close()
		return false
	}
	s.closeAfter = last
	s.done = last
	tw, direct := s.conn.(TryWriter)
	if s.writing || !direct {
		if len(s.queue) == 0 {
			s.oldest = posted
		}
		s.queue = append(s.queue, frames...)
		maxQueue(st, len(s.queue))
		start := !s.writing
		s.writing = true
		s.mu.Unlock()
		if start {
			s.hub.stats.flushes.Go(s.flush)
		}
		return true
	}
	s.writing = true // we own the write side while writing directly
	s.mu.Unlock()

	n, err := tw.TryWritev(frames)
	if err != nil {
		s.hub.stats.WriteErrored.Add(1)
		s.hub.log.Debug("client gone", "reason", "write_error", "err", err)
		s.close()
		return false
	}
	rest := remainder(frames, n)
	if len(rest) < len(frames) {
		latency := -1.0
		if !posted.IsZero() {
			latency = time.Since(posted).Seconds()
		}
		st.observeDelivered(t, len(frames)-len(rest), latency)
	}
	s.mu.Lock()
	if len(rest) > 0 {
		if len(s.queue) == 0 || posted.Before(s.oldest) {
			s.oldest = posted
		}
		s.queue = append(rest, s.queue...)
		maxQueue(st, len(s.queue))
	}
	if (len(s.queue) > 0 || backlogged(s.conn)) && !s.closed {
		s.mu.Unlock()
		s.hub.stats.flushes.Go(s.flush) // the socket is full: wait for it off the broadcaster's path
		return true
	}
	s.writing = false
	closeNow := s.closeAfter
	s.mu.Unlock()
	if closeNow {
		s.close()
	}
	return true
}

// remainder is what of frames is left after n bytes were written, as a new slice (frames is shared).
func remainder(frames [][]byte, n int) [][]byte {
	i := 0
	for i < len(frames) && n >= len(frames[i]) {
		n -= len(frames[i])
		i++
	}
	if i == len(frames) {
		return nil
	}
	rest := make([][]byte, 0, len(frames)-i)
	rest = append(rest, frames[i][n:])
	return append(rest, frames[i+1:]...)
}

// flush writes the queue until it is empty; while it runs it is the only writer to the connection.
func (s *Subscriber) flush() {
	for {
		s.mu.Lock()
		batch, oldest := s.queue, s.oldest
		s.queue = nil
		if len(batch) == 0 && !backlogged(s.conn) || s.closed {
			s.writing = false
			closeNow := s.closeAfter && !s.closed
			s.mu.Unlock()
			if closeNow {
				s.close()
			}
			return
		}
		s.mu.Unlock()

		if d, ok := s.conn.(deadliner); ok && s.hub.limits.writeTimeout() > 0 {
			d.SetWriteDeadline(time.Now().Add(s.hub.limits.writeTimeout()))
		}
		n := len(batch)
		var err error
		if vw, ok := s.conn.(vectorWriter); ok {
			_, err = vw.Writev(batch)
		} else {
			bufs := net.Buffers(batch)
			_, err = bufs.WriteTo(s.conn)
		}
		if err != nil {
			s.fail(err)
			return
		}
		s.hub.stats.Deliveries.Add(int64(n))
		if lat := s.hub.stats.Latency; lat != nil && n > 0 && !oldest.IsZero() {
			lat.Observe(time.Since(oldest).Seconds()) // the batch's oldest frame: the worst case
		}
	}
}

func (s *Subscriber) fail(err error) {
	s.mu.Lock()
	already := s.closed
	s.writing = false
	s.mu.Unlock()
	switch {
	case already: // closed by someone else: the failed write is a consequence, not news
	case isTimeout(err):
		s.hub.stats.SlowDropped.Add(1)
		s.hub.log.Info("client cut", "reason", "write_timeout", "timeout", s.hub.limits.writeTimeout())
	default: // the client went away: routine, so only at debug level
		s.hub.stats.WriteErrored.Add(1)
		s.hub.log.Debug("client gone", "reason", "write_error", "err", err)
	}
	s.Leave()
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

func (s *Subscriber) close() {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return
	}
	s.closed = true
	s.done = true
	s.queue = nil
	s.mu.Unlock()
	s.conn.Close()
}
