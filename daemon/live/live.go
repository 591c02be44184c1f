// Package live holds the daemon's matches in memory — each one's state, history, pre-rendered frames
// and hub — and is the one path by which an event is validated, made durable in the store, folded
// into the state and broadcast. The API and the stream listeners both go through it, so the order
// of what is stored and what is sent can never differ.
package live

import (
	"cmp"
	"context"
	"errors"
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
	hubc  hub.Config
	ahead time.Duration
	log   *slog.Logger
	Stats hub.Stats
	// EventsAccepted counts events made durable; StoreLatency (may be nil) observes each append's
	// seconds.
	EventsAccepted atomic.Int64
	StoreLatency   hub.Observer
	// LongPolls counts long-poll requests waiting for an event.
	LongPolls atomic.Int64

	writes writeHealth

	mu      sync.RWMutex
	matches map[string]*Match
	// frozen: a hand-over to a successor process is under way; no post, ingest or subscription
	// may change a match or write to a client (read under each match's lock).
	frozen atomic.Bool
}

// Match is one match: its state and history, guarded by one mutex that also serialises appends
// and subscriptions, so a subscriber gets exactly the events after the status it was sent.
type Match struct {
	id  string
	hub *hub.Hub

	mu      sync.Mutex
	state   match.State
	history []match.Record
	frames  []protocol.Frames // frames[i] renders history[i]
	changed chan struct{}     // closed and cleared when events are added: wakes long-polls
	// endedAt is when this process saw the match end; once it has been over for a while and has no
	// subscriber, Evict drops history and frames (evicted) and they are read from the store again
	// when asked for: an appliance that runs for months must not keep every match it ever served.
	endedAt time.Time
	evicted bool
}

// Open loads every match from the store and folds its events, so live matches continue after a
// restart exactly where they were.
func Open(ctx context.Context, st store.Store, cfg Config, log *slog.Logger) (*Registry, error) {
	r := &Registry{store: st, hubc: cfg.Hub, ahead: cfg.MaxAhead, log: log, matches: make(map[string]*Match)}
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
	m := &Match{id: id, hub: hub.New(r.hubc, r.log.With("match", id), &r.Stats)}
	m.hub.Name = id
	m.state.ID = id
	m.state.Period = match.NotStarted
	return m
}

// foldLocked applies stored records, which must follow on from the state, and broadcasts them when
// asked (events another node posted). m.mu is held, or m is not shared yet.
func (m *Match) foldLocked(recs []match.Record, broadcast bool, posted time.Time) error {
	for _, rec := range recs {
		ev := rec.Event
		if err := m.state.Apply(&ev); err != nil {
			return fmt.Errorf("stored event %d does not apply: %w", rec.Seq, err)
		}
		if m.state.Seq != rec.Seq {
			return fmt.Errorf("stored event has seq %d, want %d", rec.Seq, m.state.Seq)
		}
		m.add(rec)
	}
	if broadcast && len(recs) > 0 {
		batch := m.frames[len(m.frames)-len(recs):]
		m.hub.Broadcast(posted, len(batch), func(version, i int) []byte { return batch[i].For(version) }, m.state.Ended())
	}
	return nil
}

// Ingest takes records from the store that another node appended: those already here are skipped,
// a gap is filled from the store, and the rest are folded in and broadcast to local subscribers.
func (r *Registry) Ingest(ctx context.Context, id string, recs []match.Record) error {
	m, _ := r.getOrCreate(id, true)
	m.mu.Lock()
	defer m.mu.Unlock()
	if r.frozen.Load() {
		return ErrHandingOver // the caller retries; after a failed hand-over it catches up
	}
	return r.catchUpLocked(ctx, m, recs)
}

// catchUpLocked brings m up to the store; m.mu is held.
func (r *Registry) catchUpLocked(ctx context.Context, m *Match, recs []match.Record) error {
	fresh := recs[:0:0]
	for _, rec := range recs {
		if rec.Seq > m.state.Seq {
			fresh = append(fresh, rec)
		}
	}
	if len(fresh) == 0 || fresh[0].Seq != m.state.Seq+1 {
		all, err := r.store.Events(ctx, m.id, m.state.Seq)
		if err != nil {
			return fmt.Errorf("catch up %s: %w", m.id, err)
		}
		fresh = all
	}
	if err := m.foldLocked(fresh, true, time.Now()); err != nil {
		return fmt.Errorf("catch up %s: %w", m.id, err)
	}
	return nil
}

// lastSeq is the last seq m has.
func (m *Match) lastSeq() (uint64, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.state.Seq, m.state.Ended()
}

func (m *Match) add(rec match.Record) {
	m.history = append(m.history, rec)
	m.frames = append(m.frames, protocol.RenderEvent(m.id, rec))
	if m.state.Ended() && m.endedAt.IsZero() {
		m.endedAt = time.Now()
	}
	if m.changed != nil {
		close(m.changed)
		m.changed = nil
	}
}

// EventError is an event refused by validation: Index is its place in the posted batch.
type EventError struct {
	Index int
	Err   error
}

func (e *EventError) Error() string { return fmt.Sprintf("event %d: %v", e.Index, e.Err) }
func (e *EventError) Unwrap() error { return e.Err }

// ErrHandingOver refuses a post or subscription while the daemon hands its clients to a successor
// process: it is brief, and the post may be made again (the successor takes it).
var ErrHandingOver = errors.New("handing over to a new process; try again")

// ErrStore wraps a store failure: the events were not accepted and may be posted again.
var ErrStore = errors.New("store unavailable")

// Post validates events against match id, stores them atomically, and broadcasts them. Either all
// are accepted or none: a batch with a bad event is refused whole, with the index of the first bad
// one. A match that does not exist is created by a start event.
func (r *Registry) Post(ctx context.Context, id string, events []match.Event) ([]match.Record, error) {
	posted := time.Now()
	if len(events) == 0 {
		return nil, &EventError{Index: 0, Err: errors.New("no events")}
	}
	if r.ahead > 0 {
		limit := posted.Add(r.ahead)
		for i, e := range events {
			if e.At.After(limit) {
				return nil, &EventError{Index: i, Err: fmt.Errorf("%s event at %s is %s ahead of the server clock (%s); at most %s ahead is accepted (--max-clock-skew)",
					e.Kind, e.At.UTC().Format(time.RFC3339Nano), e.At.Sub(posted).Round(time.Second),
					posted.UTC().Format(time.RFC3339), r.ahead)}
			}
		}
	}
	m, created := r.getOrCreate(id, events[0].Kind == match.KindStart)
	if m == nil {
		return nil, &EventError{Index: 0, Err: fmt.Errorf("match %s does not exist: its first event must be start, not %s", id, events[0].Kind)}
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if r.frozen.Load() {
		r.dropIfEmpty(m, created)
		return nil, ErrHandingOver
	}
	var next match.State
	var recs []match.Record
	for attempt := 0; ; attempt++ {
		next = m.state.Clone()
		recs = make([]match.Record, len(events))
		for i := range events {
			ev := events[i]
			if err := next.Apply(&ev); err != nil {
				r.dropIfEmpty(m, created)
				return nil, &EventError{Index: i, Err: err}
			}
			recs[i] = match.Record{Seq: next.Seq, Event: ev}
		}
		t0 := time.Now()
		err := r.store.Append(ctx, id, recs)
		if r.StoreLatency != nil {
			r.StoreLatency.Observe(time.Since(t0).Seconds())
		}
		r.writes.record(t0, err)
		if errors.Is(err, store.ErrConflict) && attempt < 3 {
			// Another node appended first: take its events, then validate ours again on top.
			if cerr := r.catchUpLocked(ctx, m, nil); cerr != nil {
				return nil, fmt.Errorf("%w: %w", ErrStore, cerr)
			}
			continue
		}
		if errors.Is(err, store.ErrOutcomeUnknown) {
			return nil, err // not ErrStore: a retry could store the events twice
		}
		if err != nil {
			r.dropIfEmpty(m, created)
			return nil, fmt.Errorf("%w: %w", ErrStore, err)
		}
		break
	}
	r.EventsAccepted.Add(int64(len(recs)))
	m.state = next
	for _, rec := range recs {
		m.add(rec)
	}
	batch := m.frames[len(m.frames)-len(recs):]
	m.hub.Broadcast(posted, len(batch), func(version, i int) []byte { return batch[i].For(version) }, next.Ended())
	return recs, nil
}

func (r *Registry) getOrCreate(id string, create bool) (*Match, bool) {
	r.mu.RLock()
	m := r.matches[id]
	r.mu.RUnlock()
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

// dropIfEmpty forgets a match created for a post that failed. Called with m.mu held.
func (r *Registry) dropIfEmpty(m *Match, created bool) {
	if !created || m.state.Seq > 0 {
		return
	}
	r.mu.Lock()
	if r.matches[m.id] == m {
		delete(r.matches, m.id)
	}
	r.mu.Unlock()
}

// Subscribe connects conn to the match the request names (V:2: the current live match) and queues
// what the protocol sends first: the status, or for a v3 resume the history after FROM. A match
// that is not live gets that and then the connection closes.
func (r *Registry) Subscribe(conn hub.Conn, req protocol.Request, now time.Time) (*hub.Subscriber, error) {
	id := req.Match
	if req.Version == 2 {
		id = r.Current()
		if id == "" {
			return nil, &protocol.Error{Code: protocol.CodeNotFound, Detail: "no live match"}
		}
	}
	m, err := r.lockForSubscribe(id)
	if err != nil {
		return nil, err
	}
	defer m.mu.Unlock()
	var first [][]byte
	if req.Version == 3 && req.HasFrom {
		if req.From > m.state.Seq {
			return nil, &protocol.Error{Code: protocol.CodeBadRequest,
				Detail: fmt.Sprintf("FROM %d is past the last event of %s (%d)", req.From, id, m.state.Seq)}
		}
		frames, err := r.framesLocked(m, req.From)
		if err != nil {
			return nil, err
		}
		for _, f := range frames {
			first = append(first, f.V3)
		}
	} else {
		first = [][]byte{protocol.RenderStatus(&m.state, now).For(req.Version)}
	}
	return m.hub.Subscribe(conn, req.Version, first, !m.state.Live()), nil
}

// Freeze stops every change: once it returns, no post, ingest or subscription is in progress and
// new ones fail with ErrHandingOver, so no hub writes to a client except to finish what it queued.
func (r *Registry) Freeze() {
	r.frozen.Store(true)
	for _, m := range r.snapshot() {
		m.mu.Lock()
		m.mu.Unlock() // a barrier: whoever held the lock has finished
	}
}

// Busy reports whether any subscriber of any match has frames queued or being written.
func (r *Registry) Busy() bool {
	for _, m := range r.snapshot() {
		if m.hub.Busy() {
			return true
		}
	}
	return false
}

// Thaw undoes Freeze (the hand-over failed and this process goes on serving).
func (r *Registry) Thaw() { r.frozen.Store(false) }

// Detach takes an idle subscriber out of its match for a hand-over and returns its match and the
// seq of the last event it was sent. The registry must be frozen, so every idle subscriber of a
// match has been sent exactly the match's events so far.
func (r *Registry) Detach(sub *hub.Subscriber) (id string, seq uint64, ok bool) {
	r.mu.RLock()
	m := r.matches[sub.Match()]
	r.mu.RUnlock()
	if m == nil || !r.frozen.Load() {
		return "", 0, false
	}
	m.mu.Lock()
	seq = m.state.Seq
	m.mu.Unlock()
	if !sub.Detach() {
		return "", 0, false
	}
	return m.id, seq, true
}

// Resume subscribes a connection handed over by the previous process, which had sent it match id's
// events up to seq in protocol version: it is sent what came after, then follows live as before.
func (r *Registry) Resume(conn hub.Conn, id string, version int, seq uint64) (*hub.Subscriber, error) {
	m, err := r.lockForSubscribe(id)
	if err != nil {
		return nil, err
	}
	defer m.mu.Unlock()
	if seq > m.state.Seq {
		return nil, fmt.Errorf("resume %s after %d: the store has only %d events", id, seq, m.state.Seq)
	}
	frames, err := r.framesLocked(m, seq)
	if err != nil {
		return nil, err
	}
	var missed [][]byte
	for _, f := range frames {
		missed = append(missed, f.For(version))
	}
	return m.hub.Subscribe(conn, version, missed, !m.state.Live()), nil
}

// SubscribeSSE connects a Server-Sent Events client to match id. head (the HTTP response head) is
// written first; then, if resume, the events after seq after (what a reconnecting browser missed
// since its Last-Event-ID), else the status; then every event live. A match that is over gets that
// and the connection closes. A resume that is past the end is answered with the status instead.
func (r *Registry) SubscribeSSE(conn hub.Conn, id string, after uint64, resume bool, head []byte) (*hub.Subscriber, error) {
	m, err := r.lockForSubscribe(id)
	if err != nil {
		return nil, err
	}
	defer m.mu.Unlock()
	first := [][]byte{head}
	if resume && after <= m.state.Seq {
		frames, err := r.framesLocked(m, after)
		if err != nil {
			return nil, err
		}
		for _, f := range frames {
			first = append(first, f.SSE)
		}
	} else {
		first = append(first, protocol.RenderStatus(&m.state, time.Now()).SSE)
	}
	return m.hub.Subscribe(conn, protocol.VersionSSE, first, !m.state.Live()), nil
}

// Heartbeat writes an SSE comment to every Server-Sent Events client.
func (r *Registry) Heartbeat() {
	for _, m := range r.snapshot() {
		m.hub.Heartbeat(protocol.VersionSSE, protocol.SSEHeartbeat)
	}
}

// Poll is what a long-poll returns: the events after the seq asked for (none if it timed out),
// the match's last seq and whether it is over, so a client knows where to poll from and when to stop.
type Poll struct {
	Seq    uint64         `json:"seq"`
	Ended  bool           `json:"ended"`
	Events []match.Record `json:"events"`
}

// Wait returns match id's events after seq after as soon as there are any, or an empty Poll when
// ctx ends first. false: no such match.
func (r *Registry) Wait(ctx context.Context, id string, after uint64) (Poll, bool) {
	r.mu.RLock()
	m := r.matches[id]
	r.mu.RUnlock()
	if m == nil {
		return Poll{}, false
	}
	r.LongPolls.Add(1)
	defer r.LongPolls.Add(-1)
	for {
		m.mu.Lock()
		if m.state.Seq == 0 {
			m.mu.Unlock()
			return Poll{}, false
		}
		p := Poll{Seq: m.state.Seq, Ended: m.state.Ended(), Events: []match.Record{}}
		if after < p.Seq || p.Ended {
			recs, err := r.recordsLocked(ctx, m, after)
			m.mu.Unlock()
			if err != nil {
				return p, true // what the match is, without events: the client polls again
			}
			p.Events = recs
			return p, true
		}
		if m.changed == nil {
			m.changed = make(chan struct{})
		}
		changed := m.changed
		m.mu.Unlock()
		select {
		case <-changed:
		case <-ctx.Done():
			return p, true
		}
	}
}

// recordsLocked returns the records after seq from, from memory or, for an evicted match, from the
// store. m.mu is held.
func (r *Registry) recordsLocked(ctx context.Context, m *Match, from uint64) ([]match.Record, error) {
	if !m.evicted {
		if from >= uint64(len(m.history)) {
			return []match.Record{}, nil
		}
		return slices.Clone(m.history[from:]), nil
	}
	recs, err := r.store.Events(ctx, m.id, from)
	if err != nil {
		return nil, fmt.Errorf("%w: reading match %s back: %w", ErrStore, m.id, err)
	}
	return recs, nil
}

// framesLocked returns the rendered events after seq from: shared from memory or, for an evicted
// match, rendered again from the store. m.mu is held.
func (r *Registry) framesLocked(m *Match, from uint64) ([]protocol.Frames, error) {
	if !m.evicted {
		return m.frames[min(from, uint64(len(m.frames))):], nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	recs, err := r.recordsLocked(ctx, m, from)
	if err != nil {
		return nil, err
	}
	out := make([]protocol.Frames, len(recs))
	for i, rec := range recs {
		out[i] = protocol.RenderEvent(m.id, rec)
	}
	return out, nil
}

// Evict drops the history and rendered frames of every match that has been over for keep and has
// no subscriber; its state stays for listings and statuses. It returns how many it dropped.
func (r *Registry) Evict(keep time.Duration, now time.Time) int {
	n := 0
	for _, m := range r.snapshot() {
		m.mu.Lock()
		if !m.evicted && !m.endedAt.IsZero() && now.Sub(m.endedAt) >= keep && m.hub.Len() == 0 {
			m.history, m.frames, m.evicted = nil, nil, true
			n++
		}
		m.mu.Unlock()
	}
	return n
}

// lockForSubscribe returns match id with its lock held, ready for a new subscriber: it exists, has
// started, and no hand-over is under way.
func (r *Registry) lockForSubscribe(id string) (*Match, error) {
	r.mu.RLock()
	m := r.matches[id]
	r.mu.RUnlock()
	if m == nil {
		return nil, &protocol.Error{Code: protocol.CodeNotFound, Detail: id}
	}
	m.mu.Lock()
	if r.frozen.Load() {
		m.mu.Unlock()
		return nil, ErrHandingOver
	}
	if m.state.Seq == 0 { // created by a post still being stored
		m.mu.Unlock()
		return nil, &protocol.Error{Code: protocol.CodeNotFound, Detail: id}
	}
	return m, nil
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

// Summary is a match as listed by the API.
type Summary struct {
	ID          string       `json:"id"`
	Home        string       `json:"home"`
	Visit       string       `json:"visit"`
	HomeScore   int          `json:"home_score"`
	VisitScore  int          `json:"visit_score"`
	Period      match.Period `json:"period"`
	State       string       `json:"state"` // live or ended
	Seq         uint64       `json:"seq"`
	StartDate   string       `json:"start_date"`
	Subscribers int          `json:"subscribers"`
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
		state := "live"
		if s.Ended() {
			state = "ended"
		}
		out = append(out, Summary{ID: m.id, Home: s.Home, Visit: s.Visit, HomeScore: s.HomeScore,
			VisitScore: s.VisitScore, Period: s.Period, State: state, Seq: s.Seq, StartDate: s.StartDate,
			Subscribers: m.hub.Len()})
	}
	slices.SortFunc(out, func(a, b Summary) int { return cmp.Compare(a.ID, b.ID) })
	return out
}

// State returns a copy of match id's state.
func (r *Registry) State(id string) (match.State, bool) {
	r.mu.RLock()
	m := r.matches[id]
	r.mu.RUnlock()
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
	r.mu.RLock()
	m := r.matches[id]
	r.mu.RUnlock()
	if m == nil {
		return 0, false
	}
	seq, _ := m.lastSeq()
	return seq, seq > 0
}

// Events returns match id's records with seq > from; false: no such match. A match whose history
// was evicted is read from the store, which may fail (ErrStore).
func (r *Registry) Events(ctx context.Context, id string, from uint64) ([]match.Record, bool, error) {
	r.mu.RLock()
	m := r.matches[id]
	r.mu.RUnlock()
	if m == nil {
		return nil, false, nil
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.state.Seq == 0 {
		return nil, false, nil
	}
	recs, err := r.recordsLocked(ctx, m, from)
	return recs, true, err
}

// Longest returns the k subscribers with the longest queues over all matches.
func (r *Registry) Longest(k int) []QueueInfo {
	var out []QueueInfo
	for _, m := range r.snapshot() {
		for _, q := range m.hub.Longest(k) {
			out = append(out, QueueInfo{Match: m.id, Queue: q})
		}
	}
	slices.SortFunc(out, func(a, b QueueInfo) int { return b.Queued - a.Queued })
	return out[:min(k, len(out))]
}

// QueueInfo is a subscriber's backlog and its match.
type QueueInfo struct {
	Match string `json:"match"`
	hub.Queue
}

// Ping checks the store.
func (r *Registry) Ping(ctx context.Context) error { return r.store.Ping(ctx) }

// WriteFailure is when the last append failed and its error, while appends fail (nil once one
// succeeds again, or before any failed). A store can answer reads and pings and still refuse
// every write (a full disk), so health reports this beside Ping.
func (r *Registry) WriteFailure() (time.Time, error) {
	r.writes.mu.Lock()
	defer r.writes.mu.Unlock()
	return r.writes.at, r.writes.err
}

// writeHealth is the outcome of the last append.
type writeHealth struct {
	mu  sync.Mutex
	err error
	at  time.Time
}

// record notes an append's outcome: a conflict is a store that works (another node wrote first).
func (w *writeHealth) record(at time.Time, err error) {
	if errors.Is(err, store.ErrConflict) {
		err = nil
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if err == nil || w.err == nil || at.After(w.at) {
		w.err, w.at = err, at
	}
}

// Shutdown tells every subscriber the server is stopping; their connections close once it is written.
func (r *Registry) Shutdown() {
	notice := protocol.ShutdownNotice()
	for _, m := range r.snapshot() {
		m.hub.Shutdown(notice.For)
	}
}

// Probe checks the registry is alive, for the systemd watchdog: every match's lock can be taken
// within ctx (no post or subscription is stuck holding one). The store is not part of it: a shared
// store that blinks must not get the daemon killed and its clients dropped; /healthz reports it.
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

// Close disconnects every subscriber of every match.
func (r *Registry) Close() {
	for _, m := range r.snapshot() {
		m.hub.Close()
	}
}

// Follow keeps this node in step with a shared store until ctx ends: it discovers matches other
// nodes created, and for each live match follows its stream and ingests what others append. One
// goroutine per live match, all owned here and waited for.
func (r *Registry) Follow(ctx context.Context, f store.Follower, every time.Duration) {
	var wg sync.WaitGroup
	defer wg.Wait()
	following := map[string]bool{}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		ids, err := r.store.Matches(ctx)
		if err != nil && ctx.Err() == nil {
			r.log.Warn("store: listing matches", "err", err)
		}
		for _, id := range ids {
			if following[id] {
				continue
			}
			if err := r.Ingest(ctx, id, nil); err != nil {
				r.log.Warn("store: loading match", "match", id, "err", err)
				continue
			}
			r.mu.RLock()
			m := r.matches[id]
			r.mu.RUnlock()
			if _, ended := m.lastSeq(); ended {
				following[id] = true // nothing more will come
				continue
			}
			following[id] = true
			wg.Add(1)
			go func() { defer wg.Done(); r.follow(ctx, f, m) }()
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (r *Registry) follow(ctx context.Context, f store.Follower, m *Match) {
	backoff := 100 * time.Millisecond
	for ctx.Err() == nil {
		after, ended := m.lastSeq()
		if ended {
			return
		}
		recs, err := f.Follow(ctx, m.id, after, 2*time.Second)
		if err == nil && len(recs) > 0 {
			err = r.Ingest(ctx, m.id, recs)
		}
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			if !errors.Is(err, ErrHandingOver) { // brief, and expected
				r.log.Warn("store: following match", "match", m.id, "err", err, "retry_in", backoff)
			}
			select {
			case <-time.After(backoff):
			case <-ctx.Done():
				return
			}
			backoff = min(2*backoff, 5*time.Second)
			continue
		}
		backoff = 100 * time.Millisecond
	}
}
