package live

import (
	"context"
	"errors"
	"fmt"
	"time"

	"matchstream/daemon/hub"
	"matchstream/daemon/protocol"
)

// ErrNotFound: no such match, or it has not started.
var ErrNotFound = errors.New("no such match")

// ErrNotInMemory refuses a join that needs the history of a match whose history left memory: the
// caller restores it (Restore reads the store) where a store call may block, then joins again. A
// poller goroutine must never read the store itself: every connection it serves would wait.
var ErrNotInMemory = errors.New("history not in memory")

// PastEndError refuses a join that resumes after a seq the match has not reached.
type PastEndError struct {
	Match string
	After uint64
	Last  uint64
}

func (e *PastEndError) Error() string {
	return fmt.Sprintf("%d is past the last event of %s (%d)", e.After, e.Match, e.Last)
}

// Join is what a new subscriber is sent before it follows the match live: Head (if any), then
// either the events after seq After (Resume) or the match's status at Now (zero: the time of the
// join). StatusPastEnd answers a resume past the last event with the status instead of an error.
type Join struct {
	Head          []byte
	Resume        bool
	After         uint64
	StatusPastEnd bool
	Now           time.Time
}

// Subscribe connects conn to match id in protocol version and queues what j says comes first. A
// match that is not live gets that and then the connection closes. It never touches the store: a
// resume of a match whose history left memory is ErrNotInMemory.
func (r *Registry) Subscribe(conn hub.Conn, id string, version int, j Join) (*hub.Subscriber, error) {
	m, err := r.lockForSubscribe(id)
	if err != nil {
		return nil, err
	}
	defer m.mu.Unlock()
	first := make([][]byte, 0, 2)
	if j.Head != nil {
		first = append(first, j.Head)
	}
	resume := j.Resume
	if resume && j.After > m.state.Seq {
		if !j.StatusPastEnd {
			return nil, &PastEndError{Match: id, After: j.After, Last: m.state.Seq}
		}
		resume = false
	}
	if resume {
		if m.evicted && j.After < m.state.Seq {
			return nil, ErrNotInMemory
		}
		for _, f := range m.frames[min(j.After, uint64(len(m.frames))):] { // none if evicted
			first = append(first, f.For(version))
		}
	} else {
		now := j.Now
		if now.IsZero() {
			now = time.Now()
		}
		first = append(first, m.statusFor(version, now))
	}
	return m.hub.Subscribe(conn, version, first, !m.state.Live()), nil
}

// SubscribeRestoring is Subscribe for callers that may wait on the store (not a poller): a match
// whose history left memory is restored first.
func (r *Registry) SubscribeRestoring(ctx context.Context, conn hub.Conn, id string, version int, j Join) (*hub.Subscriber, error) {
	for attempt := 0; ; attempt++ {
		sub, err := r.Subscribe(conn, id, version, j)
		if !errors.Is(err, ErrNotInMemory) || attempt == 3 {
			return sub, err
		}
		if err := r.Restore(ctx, id); err != nil {
			return nil, err
		}
	}
}

// lockForSubscribe returns match id with its lock held, ready for a new subscriber: it exists, has
// started, and no hand-over is under way.
func (r *Registry) lockForSubscribe(id string) (*Match, error) {
	m := r.lookup(id)
	if m == nil {
		return nil, ErrNotFound
	}
	m.mu.Lock()
	if r.frozen.Load() {
		m.mu.Unlock()
		return nil, ErrHandingOver
	}
	if m.state.Seq == 0 { // created by a post still being stored
		m.mu.Unlock()
		return nil, ErrNotFound
	}
	return m, nil
}

// statusFor is the status frame for a new subscriber of version; m.mu is held. The v3 and SSE
// frames depend on the state alone, so they are rendered once per state and shared (a connect
// burst subscribes thousands to one state); the v1 one carries the time of the connect.
func (m *Match) statusFor(version int, now time.Time) []byte {
	if version != 3 && version != protocol.VersionSSE {
		return protocol.RenderV1Status(&m.state, now)
	}
	if m.status == nil {
		v3 := protocol.RenderV3Status(&m.state)
		m.status = &protocol.Frames{V3: v3, SSE: protocol.RenderSSE(m.state.Seq, "status", v3)}
	}
	return m.status.For(version)
}
