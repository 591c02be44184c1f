package live

import (
	"context"
	"fmt"
	"slices"
	"time"

	"matchstream/daemon/match"
	"matchstream/daemon/protocol"
)

// Poll is what a long-poll returns: the events after the seq asked for (none if it timed out),
// the match's last seq and whether it is over, so a client knows where to poll from and when to stop.
type Poll struct {
	Seq    uint64
	Ended  bool
	Events []match.Record
}

// Wait returns match id's events after seq after as soon as there are any, or an empty Poll when
// ctx ends first. false: no such match.
func (r *Registry) Wait(ctx context.Context, id string, after uint64) (Poll, bool) {
	m := r.lookup(id)
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
			recs, ok := m.inMemoryLocked(after)
			m.mu.Unlock()
			if !ok {
				var err error
				if recs, err = r.readBack(ctx, m, after); err != nil {
					return p, true // what the match is, without events: the client polls again
				}
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

// Events returns match id's records with seq > from; false: no such match. A match whose history
// was evicted is read from the store, with no lock held, which may fail (ErrStore).
func (r *Registry) Events(ctx context.Context, id string, from uint64) ([]match.Record, bool, error) {
	m := r.lookup(id)
	if m == nil {
		return nil, false, nil
	}
	m.mu.Lock()
	if m.state.Seq == 0 {
		m.mu.Unlock()
		return nil, false, nil
	}
	recs, ok := m.inMemoryLocked(from)
	m.mu.Unlock()
	if ok {
		return recs, true, nil
	}
	recs, err := r.readBack(ctx, m, from)
	return recs, true, err
}

// inMemoryLocked copies the records after seq from if m's history is in memory. m.mu is held.
func (m *Match) inMemoryLocked(from uint64) ([]match.Record, bool) {
	if m.evicted {
		return nil, false
	}
	if from >= uint64(len(m.history)) {
		return []match.Record{}, true
	}
	return slices.Clone(m.history[from:]), true
}

// readBack reads an evicted match's records after from from the store. Only a match that is over
// is evicted and it never changes again, so no lock is needed.
func (r *Registry) readBack(ctx context.Context, m *Match, from uint64) ([]match.Record, error) {
	recs, err := r.store.Events(ctx, m.id, from)
	if err != nil {
		return nil, fmt.Errorf("%w: reading match %s back: %w", ErrStore, m.id, err)
	}
	return recs, nil
}

// Evict drops the history and rendered frames of every match that has been over for keep and has
// no subscriber; its state stays for listings and statuses. It returns how many it dropped.
func (r *Registry) Evict(keep time.Duration, now time.Time) int {
	n := 0
	for _, m := range r.snapshot() {
		m.mu.Lock()
		if !m.evicted && m.restoring == nil && !m.endedAt.IsZero() && now.Sub(m.endedAt) >= keep && m.hub.Len() == 0 {
			m.history, m.frames, m.evicted = nil, nil, true
			n++
		}
		m.mu.Unlock()
	}
	return n
}

// Restore reads an evicted match's history back from the store into memory, with no lock held
// while the store answers; concurrent calls for one match share one read. It counts as the match
// ending now, for the next eviction. A match in memory is left as it is.
func (r *Registry) Restore(ctx context.Context, id string) error {
	m := r.lookup(id)
	if m == nil {
		return ErrNotFound
	}
	for {
		m.mu.Lock()
		if !m.evicted {
			m.mu.Unlock()
			return nil
		}
		if wait := m.restoring; wait != nil {
			m.mu.Unlock()
			select {
			case <-wait:
				continue
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		done := make(chan struct{})
		m.restoring, m.endedAt = done, time.Now()
		seq := m.state.Seq
		m.mu.Unlock()

		recs, err := r.readBack(ctx, m, 0)
		var frames []protocol.Frames
		if err == nil && (uint64(len(recs)) != seq || len(recs) > 0 && recs[len(recs)-1].Seq != seq) {
			err = fmt.Errorf("%w: match %s: the store has %d events, this node %d", ErrStore, id, len(recs), seq)
		}
		if err == nil {
			frames = make([]protocol.Frames, len(recs))
			for i, rec := range recs {
				frames[i] = protocol.RenderEvent(m.id, rec)
			}
		}
		m.mu.Lock()
		if err == nil {
			m.history, m.frames, m.evicted = recs, frames, false
		}
		m.restoring = nil
		close(done)
		m.mu.Unlock()
		return err
	}
}
