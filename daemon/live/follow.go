package live

import (
	"context"
	"errors"
	"sync"
	"time"

	"matchstream/daemon/store"
)

// Follow keeps this node in step with a shared store until ctx ends: it discovers matches other
// nodes created, and for each live match follows its stream and ingests what others append. One
// goroutine per live match, all owned here and waited for.
func (r *Registry) Follow(ctx context.Context, f store.Follower, every time.Duration) {
	var wg sync.WaitGroup
	defer wg.Wait()
	if n, ok := f.(store.Announcer); ok {
		wg.Add(1)
		go func() { defer wg.Done(); r.watchNew(ctx, n) }()
	}
	following := map[string]bool{}
	incarnation := ""
	r.checkIncarnation(ctx, &incarnation)
	t := time.NewTicker(every)
	defer t.Stop()
	ids, err := r.store.Matches(ctx)
	if err != nil && ctx.Err() == nil {
		r.log.Warn("store: listing matches", "err", err)
	}
	for {
		for _, id := range ids {
			if following[id] {
				continue
			}
			if err := r.Ingest(ctx, id, nil); err != nil {
				r.log.Warn("store: loading match", "match", id, "err", err)
				continue
			}
			m := r.lookup(id)
			following[id] = true
			if _, ended := m.lastSeq(); ended {
				continue // nothing more will come
			}
			wg.Add(1)
			go func() { defer wg.Done(); r.follow(ctx, f, m) }()
		}
		select {
		case <-ctx.Done():
			return
		case id := <-r.discovered: // found by a read-through or pushed: follow it now
			ids = []string{id}
		case <-t.C: // the scan also catches an id whose push was lost
			var err error
			if ids, err = r.store.Matches(ctx); err != nil && ctx.Err() == nil {
				r.log.Warn("store: listing matches", "err", err)
			}
			r.checkIncarnation(ctx, &incarnation)
		}
	}
}

// checkIncarnation checks every match against the store when the store's incarnation differs from
// *seen (it restarted or failed over, and may have lost events), and records it.
func (r *Registry) checkIncarnation(ctx context.Context, seen *string) {
	inc, ok := r.store.(store.Incarnation)
	if !ok {
		return
	}
	cur, err := inc.Incarnation(ctx)
	if err != nil || cur == *seen {
		return
	}
	if *seen != "" {
		r.log.Warn("store: restarted or failed over; checking it has every event this node has")
		for _, m := range r.snapshot() {
			if err := r.Check(ctx, m.id); err != nil && ctx.Err() == nil {
				r.log.Warn("store: checking a match", "match", m.id, "err", err)
				return // seen stays as it was: the next tick checks again
			}
		}
	}
	*seen = cur
}

// watchNew discovers each match another node starts as soon as its start is stored, from the ids
// the store pushes.
func (r *Registry) watchNew(ctx context.Context, n store.Announcer) {
	cursor := ""
	backoff := 100 * time.Millisecond
	for ctx.Err() == nil {
		// Short blocks: a blocking read is not cut short by ctx, so this bounds the wait at shutdown.
		ids, next, err := n.NewMatches(ctx, cursor, time.Second)
		if err != nil {
			if ctx.Err() == nil {
				r.log.Warn("store: waiting for new matches", "err", err, "retry_in", backoff)
			}
			select {
			case <-time.After(backoff):
			case <-ctx.Done():
			}
			backoff = min(2*backoff, 5*time.Second)
			continue
		}
		backoff, cursor = 100*time.Millisecond, next
		for _, id := range ids {
			if _, err := r.Discover(ctx, id); err != nil && ctx.Err() == nil {
				r.log.Warn("store: discovering a new match", "match", id, "err", err)
			}
		}
	}
}

func (r *Registry) follow(ctx context.Context, f store.Follower, m *Match) {
	backoff := 100 * time.Millisecond
	// A store back with less than this node has is caught by checkIncarnation, not here: go-redis
	// retries this read on the new server without an error.
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
