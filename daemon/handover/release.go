package handover

import (
	"context"
	"errors"
	"sync"

	"matchstream/daemon/match"
	"matchstream/daemon/store"
)

// Releasable lets a process give up a store only one process may open (bolt's file lock) while a
// successor takes over, and take it back if the successor fails. It is a store.Store; while
// released every call fails with ErrReleased.
type Releasable struct {
	open func() (store.Store, error)
	mu   sync.RWMutex
	s    store.Store // nil while released
}

// NewReleasable wraps s, which open opens again after a release.
func NewReleasable(s store.Store, open func() (store.Store, error)) *Releasable {
	return &Releasable{s: s, open: open}
}

// ErrReleased: the store was given to a successor process.
var ErrReleased = errors.New("store released to a successor process")

func (r *Releasable) get() (store.Store, func(), error) {
	r.mu.RLock()
	if r.s == nil {
		r.mu.RUnlock()
		return nil, nil, ErrReleased
	}
	return r.s, r.mu.RUnlock, nil
}

func (r *Releasable) Append(ctx context.Context, id string, recs []match.Record) error {
	s, done, err := r.get()
	if err != nil {
		return err
	}
	defer done()
	return s.Append(ctx, id, recs)
}

func (r *Releasable) Matches(ctx context.Context) ([]string, error) {
	s, done, err := r.get()
	if err != nil {
		return nil, err
	}
	defer done()
	return s.Matches(ctx)
}

func (r *Releasable) Events(ctx context.Context, id string, from uint64) ([]match.Record, error) {
	s, done, err := r.get()
	if err != nil {
		return nil, err
	}
	defer done()
	return s.Events(ctx, id, from)
}

func (r *Releasable) Ping(ctx context.Context) error {
	s, done, err := r.get()
	if err != nil {
		return err
	}
	defer done()
	return s.Ping(ctx)
}

// Release closes the store so another process can open it.
func (r *Releasable) Release() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.s == nil {
		return nil
	}
	err := r.s.Close()
	r.s = nil
	return err
}

// Reacquire opens the store again after Release.
func (r *Releasable) Reacquire() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.s != nil {
		return nil
	}
	s, err := r.open()
	if err != nil {
		return err
	}
	r.s = s
	return nil
}

func (r *Releasable) Close() error { return r.Release() }
