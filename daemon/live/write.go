package live

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"matchstream/daemon/match"
	"matchstream/daemon/protocol"
	"matchstream/daemon/store"
)

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
	return r.PostOnce(ctx, id, "", events)
}

// PostOnce is Post with an idempotency key (none if ""): on a store that keeps keys, a batch posted
// again under its key, after an unknown outcome, is answered with the records it was stored as
// the first time instead of being stored twice. A store of one node never has unknown outcomes
// and keeps none.
func (r *Registry) PostOnce(ctx context.Context, id, key string, events []match.Event) ([]match.Record, error) {
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
	// Only writers change m.state and they hold wmu, so it is read here without mu.
	m.wmu.Lock()
	defer m.wmu.Unlock()
	if r.frozen.Load() {
		r.dropIfEmpty(m, created)
		return nil, ErrHandingOver
	}
	keyed, _ := r.store.(store.KeyedAppender)
	if key == "" {
		keyed = nil
	}
	if keyed != nil { // stored before? Then validating it again on top of itself would refuse it
		first, found, err := keyed.FirstSeq(ctx, id, key, len(events))
		if errors.Is(err, store.ErrOutcomeUnknown) {
			return nil, err // stored, not yet on enough replicas: 504 again
		}
		if err != nil {
			r.dropIfEmpty(m, created)
			return nil, fmt.Errorf("%w: %w", ErrStore, err)
		}
		if found {
			return r.storedBefore(ctx, m, first, len(events))
		}
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
		var err error
		if keyed != nil {
			err = keyed.AppendKeyed(ctx, id, key, recs)
		} else {
			err = r.store.Append(ctx, id, recs)
		}
		var dup *store.DuplicateError
		if errors.As(err, &dup) { // another node took the same retry first (confirmed)
			return r.storedBefore(ctx, m, dup.First, len(events))
		}
		if r.StoreLatency != nil {
			r.StoreLatency.Observe(time.Since(t0).Seconds())
		}
		r.writes.record(t0, err)
		if errors.Is(err, store.ErrConflict) && attempt < 3 {
			if ce := new(store.ConflictError); errors.As(err, &ce) && ce.Last < m.state.Seq {
				// Not another writer first: the store is behind this node (it lost events).
				if rerr := r.repair(ctx, m); rerr != nil {
					return nil, fmt.Errorf("%w: %w", ErrStore, rerr)
				}
			}
			// Another node appended first: take its events, then validate ours again on top.
			if cerr := r.catchUp(ctx, m, nil); cerr != nil {
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
	m.mu.Lock()
	defer m.mu.Unlock()
	m.state = next
	for _, rec := range recs {
		m.add(rec)
	}
	batch := m.frames[len(m.frames)-len(recs):]
	m.hub.Broadcast(posted, len(batch), func(version, i int) []byte { return batch[i].For(version) }, next.Ended())
	return recs, nil
}

// storedBefore answers a batch stored before under its key, from seq first: m is brought up to the
// store and the records are those. m.wmu is held.
func (r *Registry) storedBefore(ctx context.Context, m *Match, first uint64, n int) ([]match.Record, error) {
	if err := r.catchUp(ctx, m, nil); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrStore, err)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if first == 0 || first-1+uint64(n) > uint64(len(m.history)) {
		return nil, fmt.Errorf("%w: match %s: the batch stored from seq %d is not all in the store", ErrStore, m.id, first)
	}
	return slices.Clone(m.history[first-1 : first-1+uint64(n)]), nil
}

// dropIfEmpty forgets a match created for a post that failed. Called with m.wmu held.
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

// Ingest takes records from the store that another node appended: those already here are skipped,
// a gap is filled from the store, and the rest are folded in and broadcast to local subscribers.
func (r *Registry) Ingest(ctx context.Context, id string, recs []match.Record) error {
	m, _ := r.getOrCreate(id, true)
	m.wmu.Lock()
	defer m.wmu.Unlock()
	if r.frozen.Load() {
		return ErrHandingOver // the caller retries; after a failed hand-over it catches up
	}
	return r.catchUp(ctx, m, recs)
}

// catchUp brings m up to the store; m.wmu is held, m.mu is not (a gap is read from the store).
func (r *Registry) catchUp(ctx context.Context, m *Match, recs []match.Record) error {
	fresh := recs[:0:0]
	for _, rec := range recs {
		if rec.Seq > m.state.Seq {
			fresh = append(fresh, rec)
		}
	}
	if len(fresh) == 0 || fresh[0].Seq != m.state.Seq+1 {
		all, err := r.readOn(ctx, m)
		if err != nil {
			return fmt.Errorf("catch up %s: %w", m.id, err)
		}
		fresh = all
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.foldLocked(fresh, true, time.Now()); err != nil {
		return fmt.Errorf("catch up %s: %w", m.id, err)
	}
	return nil
}

// foldLocked applies stored records, which must follow on from the state, and broadcasts them when
// asked (events another node posted). m.wmu and m.mu are held, or m is not shared yet.
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

func (m *Match) add(rec match.Record) {
	m.status = nil // the state it rendered has changed
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
