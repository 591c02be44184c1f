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
