package live

import (
	"context"
	"fmt"
)

// Discover makes sure this node knows match id if the store has it, so no node of a cluster
// answers not_found for a match another node has acknowledged: a match unknown here is read from
// a shared store (one round trip) and followed from then on. It reports whether the match exists.
// A store of one node (bolt) has nothing this node does not know, and is not read.
func (r *Registry) Discover(ctx context.Context, id string) (bool, error) {
	if seq, ok := r.Seq(id); ok && seq > 0 {
		return true, nil
	}
	if !r.shared {
		return false, nil
	}
	recs, err := r.store.Events(ctx, id, 0)
	if err != nil {
		return false, fmt.Errorf("%w: %w", ErrStore, err)
	}
	if len(recs) == 0 {
		return false, nil
	}
	if err := r.Ingest(ctx, id, recs); err != nil {
		return false, err
	}
	select { // Follow starts following it now, not at its next scan
	case r.discovered <- id:
	default:
	}
	return true, nil
}

// DiscoverAll discovers every match a shared store lists, for the listings.
func (r *Registry) DiscoverAll(ctx context.Context) error {
	if !r.shared {
		return nil
	}
	ids, err := r.store.Matches(ctx)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrStore, err)
	}
	for _, id := range ids {
		if _, err := r.Discover(ctx, id); err != nil {
			return err
		}
	}
	return nil
}

// Sync brings match id up to the shared store (a known match is caught up, an unknown one
// discovered), so what this node answers next is what the store holds: a watcher that got 504
// reads back from here whether its event was stored. Nothing to do on a store of one node.
func (r *Registry) Sync(ctx context.Context, id string) error {
	if !r.shared {
		return nil
	}
	if seq, ok := r.Seq(id); !ok || seq == 0 {
		_, err := r.Discover(ctx, id)
		return err
	}
	if err := r.Ingest(ctx, id, nil); err != nil {
		return fmt.Errorf("%w: %w", ErrStore, err)
	}
	return nil
}

// Shared reports whether other nodes append to the store: a match unknown here may exist.
func (r *Registry) Shared() bool { return r.shared }
