package stream

import (
	"context"
	"errors"
	"fmt"
	"time"

	"matchstream/daemon/hub"
	"matchstream/daemon/live"
	"matchstream/daemon/protocol"
)

// restoreTimeout bounds how long a client resuming an evicted match waits for the store.
const restoreTimeout = 5 * time.Second

// subscribe joins c to the match its connect line names. The wire protocol's choices are made
// here: V:2 watches the live match that started last, V:3 with FROM resumes after a seq, anything
// else gets the status first; refusals become the protocol's error codes.
func (s *Server) subscribe(c *conn, req protocol.Request, now time.Time) (*hub.Subscriber, error) {
	id := req.Match
	if req.Version == 2 {
		if id = s.reg.Current(); id == "" {
			return nil, &protocol.Error{Code: protocol.CodeNotFound, Detail: "no live match"}
		}
	}
	j := live.Join{Now: now}
	if req.Version == 3 && req.HasFrom {
		j.Resume, j.After = true, req.From
	}
	sub, err := s.reg.Subscribe(c, id, req.Version, j)
	var pe *live.PastEndError
	switch {
	case errors.Is(err, live.ErrNotFound) && s.reg.Shared() && !c.discovered && req.Version != 2:
		return nil, errUnknownHere // the store may have it: another node acknowledged it
	case errors.Is(err, live.ErrNotFound):
		return nil, &protocol.Error{Code: protocol.CodeNotFound, Detail: id}
	case errors.As(err, &pe):
		return nil, &protocol.Error{Code: protocol.CodeBadRequest,
			Detail: fmt.Sprintf("FROM %d is past the last event of %s (%d)", pe.After, pe.Match, pe.Last)}
	}
	return sub, err
}

// resume subscribes a handed-over connection, which the previous process had sent match id's
// events up to seq: it is sent what came after. Not called on a poller: it may read the store.
func (s *Server) resume(c *conn, id string, version int, seq uint64) (*hub.Subscriber, error) {
	ctx, cancel := context.WithTimeout(s.ctx, restoreTimeout)
	defer cancel()
	sub, err := s.reg.SubscribeRestoring(ctx, c, id, version, live.Join{Resume: true, After: seq})
	if err != nil {
		return nil, fmt.Errorf("resume %s after %d: %w", id, seq, err)
	}
	return sub, nil
}

// errUnknownHere: the match is not known on this node, and a shared store may have it.
var errUnknownHere = errors.New("match unknown on this node")

// readThenHandshake serves a connect line that needs the store first: a match whose history left
// memory (restore), or one this node does not know yet (discover). The store is read on a
// goroutine of its own, never on the poller (every connection of that poller would wait for it),
// and the line is answered again once read. Meanwhile the poller leaves c alone but for a
// hang-up; the goroutine then acts as c's poller, under its dispatch lock, so a hand-over sees c
// either waiting (its line is handed on) or answered.
func (s *Server) readThenHandshake(c *conn, read func(ctx context.Context) error) {
	c.restoring = true
	c.restores++
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		ctx, cancel := context.WithTimeout(s.ctx, restoreTimeout)
		err := read(ctx)
		cancel()
		c.poller.dispatch.Lock()
		defer c.poller.dispatch.Unlock()
		c.restoring = false
		c.mu.RLock()
		closed := c.closed
		c.mu.RUnlock()
		switch {
		case closed || c.sub != nil:
		case err != nil:
			c.refuse(protocol.ErrorFor(err, s.conf().MaxLine))
		default:
			c.handshake(false)
		}
	}()
}
