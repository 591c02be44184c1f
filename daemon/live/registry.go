// Package live holds the daemon's matches in memory — each one's state, history, pre-rendered frames
// and hub — and is the one path by which an event is validated, made durable in the store, folded
// into the state and broadcast. The API and the stream listeners both go through it, so the order
// of what is stored and what is sent can never differ.
//
// Locking: each match has two locks. wmu serialises its writers (a post, an ingest from the shared
// store) and is held across the store call; mu guards the state, history and hub and is only ever
// held for memory work. So a store that hangs holds up the posts of its own match and nothing else:
// subscriptions, listings, other matches and the watchdog probe take mu alone. A writer changes the
// state and broadcasts under mu in one step, so a subscriber still gets exactly the events after
// the status it was sent. Reading an evicted match back from the store never happens under mu.
//
// Files: registry.go (the match map and read-only views), write.go (posts and ingest), subscribe.go
// (clients joining), history.go (long-poll, event listing, eviction and restore), freeze.go
// (hand-over), follow.go (the shared store's other nodes).
package live

import (
	"cmp"
	"context"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"matchstream/daemon/hub"
	"matchstream/daemon/match"
	"matchstream/daemon/protocol"
	"matchstream/daemon/store"
)

// Config is the live section of the daemon configuration.
type Config struct {
	Hub hub.Config
	// MaxAhead is how far past this server's clock a posted event's "at" may be. Events must not
	// go back in time, so without a bound one event stamped in the year 9999 would leave the match
	// refusing every later event, stop included. Zero means no bound (tests only).
	MaxAhead time.Duration
}

// Registry is every match the daemon knows.
type Registry struct {
	store store.Store
	hubc  *hub.Limits // shared by every hub; SetHubLimits changes them
	ahead time.Duration
	log   *slog.Logger
	Stats hub.Stats
	// EventsAccepted counts events made durable; StoreLatency (may be nil) observes each append's
	// seconds.
	EventsAccepted atomic.Int64
	StoreLatency   hub.Observer
	// LongPolls counts long-poll requests waiting for an event.
	LongPolls atomic.Int64
	// WrittenBack counts events this node wrote back to a shared store that had lost them;
	// Diverged, the matches whose history this node found different in the store (repair.go).
	WrittenBack, Diverged atomic.Int64

	writes writeHealth

	mu      sync.RWMutex
	matches map[string]*Match
	// frozen: a hand-over to a successor process is under way; no post, ingest or subscription
	// may change a match or write to a client (read under each match's lock).
	frozen atomic.Bool
	// shared: other nodes append to the store (it is a store.Follower); discovered takes the ids
	// Discover found there, for Follow.
	shared     bool
	discovered chan string
}

// Match is one match: its state and history (see the package doc for its two locks).
type Match struct {
	id  string
	hub *hub.Hub

	wmu sync.Mutex // held by a writer across its store call

	mu      sync.Mutex
	state   match.State
	history []match.Record
	frames  []protocol.Frames // frames[i] renders history[i]
	status  *protocol.Frames  // the v3 and SSE status of state, nil until asked for or when it changes
	changed chan struct{}     // closed and cleared when events are added: wakes long-polls
	// endedAt is when this process saw the match end; once it has been over for a while and has no
	// subscriber, Evict drops history and frames (evicted) and Restore reads them from the store
	// again when a client needs them: an appliance that runs for months must not keep every match
	// it ever served.
	endedAt time.Time
	evicted bool
	// restoring is closed when a Restore in progress has read the history back.
	restoring chan struct{}
}

// Open loads every match from the store and folds its events, so live matches continue after a
// restart exactly where they were.
func Open(ctx context.Context, st store.Store, cfg Config, log *slog.Logger) (*Registry, error) {
	r := &Registry{store: st, hubc: hub.NewLimits(cfg.Hub), ahead: cfg.MaxAhead, log: log, matches: make(map[string]*Match),
		discovered: make(chan string, 64)}
	_, r.shared = st.(store.Follower)
	ids, err := st.Matches(ctx)
	if err != nil {
		return nil, fmt.Errorf("load matches: %w", err)
	}
	for _, id := range ids {
		recs, err := st.Events(ctx, id, 0)
		if err != nil {
			return nil, fmt.Errorf("load match %s: %w", id, err)
		}
		m := r.newMatch(id)
		if err := m.foldLocked(recs, false, time.Time{}); err != nil {
			return nil, fmt.Errorf("load match %s: %w", id, err)
		}
		if m.state.Seq > 0 {
			r.matches[id] = m
		}
	}
	return r, nil
}

func (r *Registry) newMatch(id string) *Match {
	m := &Match{id: id, hub: hub.NewShared(r.hubc, r.log.With("match", id), &r.Stats)}
	m.hub.Name = id
	m.state.ID = id
	m.state.Period = match.NotStarted
	return m
}

func (r *Registry) lookup(id string) *Match {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.matches[id]
}

func (r *Registry) getOrCreate(id string, create bool) (*Match, bool) {
	m := r.lookup(id)
	if m != nil || !create {
		return m, false
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if m = r.matches[id]; m != nil {
		return m, false
	}
	m = r.newMatch(id)
	r.matches[id] = m
	return m, true
}

// snapshot lists the matches without holding r.mu afterwards: a match's lock is never taken while
// r.mu is held, because Post takes them the other way round.
func (r *Registry) snapshot() []*Match {
	r.mu.RLock()
	defer r.mu.RUnlock()
	ms := make([]*Match, 0, len(r.matches))
	for _, m := range r.matches {
		ms = append(ms, m)
	}
	return ms
}

// lastSeq is the last seq m has.
func (m *Match) lastSeq() (uint64, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.state.Seq, m.state.Ended()
}

// Current is the live match a V:2 client watches: the one that started last.
func (r *Registry) Current() string {
	var best string
	var bestAt time.Time
	for _, m := range r.snapshot() {
		m.mu.Lock()
		live, at := m.state.Live(), time.Time{}
		if len(m.history) > 0 {
			at = m.history[0].At
		}
		m.mu.Unlock()
		if live && (best == "" || at.After(bestAt) || at.Equal(bestAt) && m.id > best) {
			best, bestAt = m.id, at
		}
	}
	return best
}

// Summary is a match as listed: its state and how many clients follow it here.
type Summary struct {
	State       match.State
	Subscribers int
}

// List returns every started match, sorted by id.
func (r *Registry) List() []Summary {
	ms := r.snapshot()
	out := make([]Summary, 0, len(ms))
	for _, m := range ms {
		m.mu.Lock()
		s := m.state
		m.mu.Unlock()
		if s.Seq == 0 {
			continue
		}
		out = append(out, Summary{State: s, Subscribers: m.hub.Len()})
	}
	slices.SortFunc(out, func(a, b Summary) int { return cmp.Compare(a.State.ID, b.State.ID) })
	return out
}

// State returns a copy of match id's state.
func (r *Registry) State(id string) (match.State, bool) {
	m := r.lookup(id)
	if m == nil {
		return match.State{}, false
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.state.Seq == 0 {
		return match.State{}, false
	}
	return m.state.Clone(), true
}

// Seq is match id's last seq, without copying its state; false: no such match.
func (r *Registry) Seq(id string) (uint64, bool) {
	m := r.lookup(id)
	if m == nil {
		return 0, false
	}
	seq, _ := m.lastSeq()
	return seq, seq > 0
}

// Queue is a subscriber's backlog and its match.
type Queue struct {
	Match string
	hub.Queue
}

// Longest returns the k subscribers with the longest queues over all matches, longest first.
func (r *Registry) Longest(k int) []Queue {
	var out []Queue
	for _, m := range r.snapshot() {
		for _, q := range m.hub.Longest(k) {
			out = append(out, Queue{Match: m.id, Queue: q})
		}
	}
	slices.SortFunc(out, func(a, b Queue) int { return b.Queued - a.Queued })
	return out[:min(k, len(out))]
}

// LiveMatches counts the matches being played.
func (r *Registry) LiveMatches() int {
	n := 0
	for _, m := range r.snapshot() {
		m.mu.Lock()
		if m.state.Live() {
			n++
		}
		m.mu.Unlock()
	}
	return n
}

// Ping checks the store.
func (r *Registry) Ping(ctx context.Context) error { return r.store.Ping(ctx) }

// Probe checks the registry is alive, for the systemd watchdog: every match's lock can be taken
// within ctx (no post or subscription is stuck holding one). The store is not part of it: a shared
// store that blinks must not get the daemon killed and its clients dropped; /healthz reports it.
// A writer waiting on the store holds only its match's write lock, which the probe does not take.
func (r *Registry) Probe(ctx context.Context) error {
	done := make(chan struct{})
	go func() {
		defer close(done)
		for _, m := range r.snapshot() {
			m.mu.Lock()
			m.mu.Unlock() // taking the lock is the probe
		}
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("a match lock is held too long: %w", ctx.Err())
	}
}

// Heartbeat writes an SSE comment to every Server-Sent Events client.
func (r *Registry) Heartbeat() {
	for _, m := range r.snapshot() {
		m.hub.Heartbeat(protocol.VersionSSE, protocol.SSEHeartbeat)
	}
}

// Shutdown tells every subscriber the server is stopping; their connections close once it is written.
func (r *Registry) Shutdown() {
	notice := protocol.ShutdownNotice()
	for _, m := range r.snapshot() {
		m.hub.Shutdown(notice.For)
	}
}

// Close disconnects every subscriber of every match.
func (r *Registry) Close() {
	for _, m := range r.snapshot() {
		m.hub.Close()
	}
}

// SetHubLimits changes the slow-consumer limits (client-queue, write-timeout) of every hub, those
// running included: a reload.
func (r *Registry) SetHubLimits(cfg hub.Config) { r.hubc.Set(cfg) }
