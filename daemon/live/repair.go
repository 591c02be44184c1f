package live

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"matchstream/daemon/match"
	"matchstream/daemon/store"
)

// A shared store can come back with less than it acknowledged: a Redis restarted without its
// data, or a failover to a replica the last appends had not reached (with --store-min-replicas 0,
// or a replica other than the one WAIT counted). A node then has events the store lost, which
// its clients were shown. The store is where every node reads, so the node writes them back,
// with the same seq check as any append: only if nobody has written those seqs since. Should
// another node have written different events there first, history has forked; the store's is
// the one every other node serves, so this node takes it and cuts its clients of that match,
// who reconnect and get the store's (matchstream_store_diverged_total counts it).

// repair makes the store hold every event this node has of m, or m hold the store's history
// when the two differ. m.wmu is held.
func (r *Registry) repair(ctx context.Context, m *Match) error {
	m.mu.Lock()
	if m.evicted { // over and dropped from memory long ago: the store's copy is what was read back
		m.mu.Unlock()
		return nil
	}
	ours := slices.Clone(m.history)
	m.mu.Unlock()
	stored, err := r.store.Events(ctx, m.id, 0)
	if err != nil {
		return fmt.Errorf("compare %s with the store: %w", m.id, err)
	}
	for i := range min(len(stored), len(ours)) {
		if !sameRecord(stored[i], ours[i]) {
			return r.takeStores(m, stored, ours[i].Seq)
		}
	}
	if len(stored) >= len(ours) {
		return nil
	}
	missing := ours[len(stored):]
	err = r.store.Append(ctx, m.id, missing)
	if errors.Is(err, store.ErrConflict) {
		return nil // another writer came first: the caller catches up, and a fork shows next time
	}
	if err != nil {
		return fmt.Errorf("write back %d events of %s the store lost: %w", len(missing), m.id, err)
	}
	r.WrittenBack.Add(int64(len(missing)))
	r.log.Warn("store: it had lost events of a match this node has; wrote them back",
		"match", m.id, "store_had", len(stored), "node_has", len(ours))
	return nil
}

// takeStores replaces m's history with the store's, which differs from seq on, and cuts m's
// clients (they were shown the other history). m.wmu is held.
func (r *Registry) takeStores(m *Match, stored []match.Record, from uint64) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	clients := m.hub.Len()
	m.hub.Cut()
	m.state = r.newMatch(m.id).state
	m.history, m.frames, m.endedAt, m.status = nil, nil, time.Time{}, nil
	if err := m.foldLocked(stored, false, time.Time{}); err != nil {
		return fmt.Errorf("take the store's history of %s: %w", m.id, err)
	}
	r.Diverged.Add(1)
	r.log.Error("store: a match's history in the store differs from this node's; took the store's and cut the match's clients",
		"match", m.id, "from_seq", from, "store_has", len(stored), "clients_cut", clients)
	return nil
}

// readOn reads m's events after its last from the store, with its last one too, to see that the
// store still has it: if not (the store lost it, or has another event there), m is repaired
// first, so what is read on is never folded onto a history the store no longer has. m.wmu is held.
func (r *Registry) readOn(ctx context.Context, m *Match) ([]match.Record, error) {
	last, ok := m.last()
	if !ok {
		return r.store.Events(ctx, m.id, m.state.Seq)
	}
	got, err := r.store.Events(ctx, m.id, last.Seq-1)
	if err != nil {
		return nil, err
	}
	if len(got) > 0 && sameRecord(got[0], last) {
		return got[1:], nil
	}
	if err := r.repair(ctx, m); err != nil {
		return nil, err
	}
	return r.store.Events(ctx, m.id, m.state.Seq)
}

// last is m's last event, if it has one in memory.
func (m *Match) last() (match.Record, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.evicted || len(m.history) == 0 {
		return match.Record{}, false
	}
	return m.history[len(m.history)-1], true
}

// Check makes sure the store still has the events this node has of match id, and repairs it if
// not, and takes in what it has after them: called after the store was unreachable, when it may
// have come back with less. One read from the node's last event on, unless that is missing or
// different.
func (r *Registry) Check(ctx context.Context, id string) error {
	m := r.lookup(id)
	if m == nil {
		return nil
	}
	m.wmu.Lock()
	defer m.wmu.Unlock()
	if r.frozen.Load() {
		return ErrHandingOver
	}
	return r.catchUp(ctx, m, nil)
}

// sameRecord reports whether two records are one event: the same seq, instant and content (a
// time read back from the store may carry another location).
func sameRecord(a, b match.Record) bool {
	if a.Seq != b.Seq || !a.At.Equal(b.At) {
		return false
	}
	a.At, b.At = time.Time{}, time.Time{}
	ja, erra := json.Marshal(a)
	jb, errb := json.Marshal(b)
	return erra == nil && errb == nil && bytes.Equal(ja, jb)
}
