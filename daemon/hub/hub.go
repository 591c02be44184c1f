// Package hub is the fan-out of one match: its subscribers, each with a bounded outgoing queue, and
// the broadcast of pre-rendered frames to them. It knows nothing of listeners, HTTP or how bytes
// reach a socket beyond the Conn it is given, so the connection layer underneath can change (a
// goroutine per connection today, an epoll loop later) without touching it.
//
// Slow-consumer policy: a broadcast never blocks. Each subscriber's queue holds at most QueueLimit
// frames; a subscriber whose queue is full, or whose socket accepts nothing for WriteTimeout, is
// disconnected with a logged reason, and the others never wait for it. An idle subscriber costs one
// small struct: its queue is nil and no goroutine runs for it until there is something to write.
package hub

import (
	"errors"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// Conn is the hub's view of a client connection.
type Conn interface {
	Write(p []byte) (int, error)
	Close() error
}

// deadliner is implemented by net.Conn; the hub uses it for the write timeout when available.
type deadliner interface{ SetWriteDeadline(time.Time) error }

// vectorWriter writes a batch of frames in one writev(2); the epoll connection layer implements it.
type vectorWriter interface {
	Writev(bufs [][]byte) (int64, error)
}

// Config is the hub's section of the daemon configuration.
type Config struct {
	QueueLimit   int           // frames queued per subscriber before it is cut as a slow consumer
	WriteTimeout time.Duration // a write blocked this long cuts the subscriber; 0 = no limit
}

// Stats are counters shared by every hub of a daemon (atomic, so hubs update them without a lock).
type Stats struct {
	Subscribers  atomic.Int64
	SlowDropped  atomic.Int64
	Deliveries   atomic.Int64
	WriteErrored atomic.Int64
}

// Hub fans out one match.
type Hub struct {
	cfg   Config
	log   *slog.Logger
	stats *Stats

	mu     sync.Mutex
	subs   map[*Subscriber]struct{}
	closed bool
}

// New returns the hub of one match. stats may be shared between hubs; log carries the match id.
func New(cfg Config, log *slog.Logger, stats *Stats) *Hub {
	if cfg.QueueLimit <= 0 {
		cfg.QueueLimit = 64
	}
	if stats == nil {
		stats = new(Stats)
	}
	return &Hub{cfg: cfg, log: log, stats: stats, subs: make(map[*Subscriber]struct{})}
}

// Subscriber is one client of a match.
type Subscriber struct {
	hub     *Hub
	conn    Conn
	Version int // protocol version: selects which rendering the subscriber gets

	mu         sync.Mutex
	queue      [][]byte
	writing    bool
	done       bool // closed, or closing once the queue drains
	closeAfter bool // the last frame is queued: close when drained
	closed     bool
}

// Subscribe adds conn. The frames in first (status, or history for a resume) are queued before any
// later broadcast; the caller serialises Subscribe with Broadcast so nothing is missed between.
// If last is true the connection is closed once first is written (a match not live: status, close).
func (h *Hub) Subscribe(conn Conn, version int, first [][]byte, last bool) *Subscriber {
	s := &Subscriber{hub: h, conn: conn, Version: version}
	h.mu.Lock()
	if !last && !h.closed {
		h.subs[s] = struct{}{}
		h.stats.Subscribers.Add(1)
	} else {
		last = true
	}
	h.mu.Unlock()
	s.enqueue(first, last, false)
	return s
}

// Len is the number of subscribers.
func (h *Hub) Len() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.subs)
}

// Broadcast queues n frames per subscriber — one batch of events, picked by protocol version through
// frameFor(version, i) — and never blocks. A subscriber that still has QueueLimit frames or more
// queued from earlier broadcasts is cut as a slow consumer instead; counting the backlog before the
// batch means a large batch posted at once does not cut a client that is keeping up. If last, each
// subscriber is closed once the batch is written and the hub takes no new subscribers.
func (h *Hub) Broadcast(n int, frameFor func(version, i int) []byte, last bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	var byVersion [4][][]byte // the batch is built once per version, shared by every subscriber
	for s := range h.subs {
		v := s.Version & 3
		if byVersion[v] == nil {
			byVersion[v] = make([][]byte, n)
			for i := range n {
				byVersion[v][i] = frameFor(s.Version, i)
			}
		}
		if !s.enqueue(byVersion[v], last, true) {
			delete(h.subs, s) // cut as a slow consumer
			h.stats.Subscribers.Add(-1)
		}
	}
	if last {
		h.stats.Subscribers.Add(-int64(len(h.subs)))
		clear(h.subs)
		h.closed = true
	}
}

// Shutdown queues a last frame per subscriber (the notice that the server stops), after which each
// connection closes once written; the hub takes no new subscribers. A subscriber's backlog does not
// count against it here: the notice is one small frame.
func (h *Hub) Shutdown(frameFor func(version int) []byte) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for s := range h.subs {
		s.enqueue([][]byte{frameFor(s.Version)}, true, false)
	}
	h.stats.Subscribers.Add(-int64(len(h.subs)))
	clear(h.subs)
	h.closed = true
}

// Close disconnects every subscriber now.
func (h *Hub) Close() {
	h.mu.Lock()
	subs := h.subs
	h.subs = make(map[*Subscriber]struct{})
	h.stats.Subscribers.Add(-int64(len(subs)))
	h.closed = true
	h.mu.Unlock()
	for s := range subs {
		s.close()
	}
}

// Leave removes the subscriber (its client went away) and closes its connection.
func (s *Subscriber) Leave() {
	h := s.hub
	h.mu.Lock()
	if _, ok := h.subs[s]; ok {
		delete(h.subs, s)
		h.stats.Subscribers.Add(-1)
	}
	h.mu.Unlock()
	s.close()
}

// enqueue appends frames; false means the subscriber was cut because its backlog was at the limit.
// The initial frames of a subscription (limited false) are never refused.
func (s *Subscriber) enqueue(frames [][]byte, last, limited bool) bool {
	s.mu.Lock()
	if s.done {
		s.mu.Unlock()
		return true
	}
	if queued := len(s.queue); limited && queued >= s.hub.cfg.QueueLimit {
		s.done = true
		s.mu.Unlock()
		s.hub.stats.SlowDropped.Add(1)
		s.hub.log.Info("client cut", "reason", "slow_consumer", "queued", queued, "limit", s.hub.cfg.QueueLimit)
		s.close()
		return false
	}
	s.queue = append(s.queue, frames...)
	s.closeAfter = last
	s.done = last
	start := !s.writing
	s.writing = true
	s.mu.Unlock()
	if start {
		go s.flush()
	}
	return true
}

// flush writes the queue until it is empty; it is the only goroutine writing to the connection.
func (s *Subscriber) flush() {
	for {
		s.mu.Lock()
		batch := s.queue
		s.queue = nil
		if len(batch) == 0 || s.closed {
			s.writing = false
			closeNow := s.closeAfter
			s.mu.Unlock()
			if closeNow {
				s.close()
			}
			return
		}
		s.mu.Unlock()

		if d, ok := s.conn.(deadliner); ok && s.hub.cfg.WriteTimeout > 0 {
			d.SetWriteDeadline(time.Now().Add(s.hub.cfg.WriteTimeout))
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
		s.hub.log.Info("client cut", "reason", "write_timeout", "timeout", s.hub.cfg.WriteTimeout)
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
