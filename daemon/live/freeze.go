package live

import "matchstream/daemon/hub"

// Freeze stops every change: once it returns, no post, ingest or subscription is in progress and
// new ones fail with ErrHandingOver, so no hub writes to a client except to finish what it queued.
// A post waiting on the store is waited for: it is either stored and sent, or refused.
func (r *Registry) Freeze() {
	r.frozen.Store(true)
	for _, m := range r.snapshot() {
		// Barriers: whoever held a lock has finished.
		m.wmu.Lock()
		m.wmu.Unlock()
		m.mu.Lock()
		m.mu.Unlock()
		m.hub.Drain() // what was broadcast is handed out: an idle subscriber has it all
	}
}

// Thaw undoes Freeze (the hand-over failed and this process goes on serving).
func (r *Registry) Thaw() { r.frozen.Store(false) }

// Busy reports whether any subscriber of any match has frames queued or being written.
func (r *Registry) Busy() bool {
	for _, m := range r.snapshot() {
		if m.hub.Busy() {
			return true
		}
	}
	return false
}

// Detach takes an idle subscriber out of its match for a hand-over and returns its match and the
// seq of the last event it was sent. The registry must be frozen, so every idle subscriber of a
// match has been sent exactly the match's events so far.
func (r *Registry) Detach(sub *hub.Subscriber) (id string, seq uint64, ok bool) {
	m := r.lookup(sub.Match())
	if m == nil || !r.frozen.Load() {
		return "", 0, false
	}
	seq, _ = m.lastSeq()
	if !sub.Detach() {
		return "", 0, false
	}
	return m.id, seq, true
}
