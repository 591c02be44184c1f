package stream

import (
	"context"
	"time"

	"golang.org/x/sys/unix"

	"matchstream/daemon/handover"
	"matchstream/daemon/listen"
	"matchstream/daemon/tlsrecord"
)

// Handover prepares every client connection for a successor process: it stops accepting, freezes
// the registry (posts and subscriptions wait for the successor), lets the hubs finish writing
// what they queued until ctx ends, then detaches each connection that is idle or still in its
// handshake. It returns them with their state, and release, which must be called once with the
// number of them (a prefix) that the successor now holds: those are closed here without a byte
// sent; the rest are taken back and served as before. Connections that were still being written
// to at the deadline are left in their hubs; the normal shutdown tells them the server stops.
func (s *Server) Handover(ctx context.Context) (conns []handover.Conn, release func(handed int)) {
	s.StopAccepting()
	s.reg.Freeze()
	s.drain(ctx)
	for _, p := range s.pollers {
		p.dispatch.Lock()
	}
	var detached []*conn
	for _, p := range s.pollers {
		for _, c := range p.all() {
			if c.awaitingHello() {
				continue // no TLS state to hand on yet: closed here, the client connects again
			}
			rec := handover.Conn{FD: c.fd}
			if c.sub != nil {
				id, seq, ok := s.reg.Detach(c.sub)
				if !ok {
					continue // still writing: it gets the shutdown notice
				}
				rec.Match, rec.Version, rec.Seq = id, c.sub.Version, seq
			} else {
				rec.Pending = append([]byte{}, c.buf...)
			}
			if c.tls != nil {
				if c.Backlogged() {
					continue // the end of a record is still to go: it gets the shutdown notice
				}
				c.tls.mu.Lock()
				sn := c.tls.rec.Snapshot()
				c.tls.mu.Unlock()
				rec.TLS = &sn
			}
			if !c.detach() {
				continue
			}
			conns = append(conns, rec)
			detached = append(detached, c)
		}
	}
	release = func(handed int) {
		for _, c := range detached[:handed] {
			c.port.Conns.Add(-1)
			unix.Close(c.fd)
		}
		if handed < len(detached) {
			s.reg.Thaw()
		}
		now := time.Now()
		for i, c := range detached[handed:] {
			rec := conns[handed+i]
			c.reattach()
			if rec.Match != "" {
				// The pollers are paused: a match evicted meanwhile is read back here, after a
				// hand-over that failed only.
				sub, err := s.resume(c, rec.Match, rec.Version, rec.Seq)
				if err != nil {
					c.Close()
					continue
				}
				c.sub = sub
				continue
			}
			s.hsMu.Lock()
			s.hs = append(s.hs, pending{c, now.Add(s.conf().HandshakeTimeout)})
			s.hsMu.Unlock()
			if len(c.buf) > 0 && !c.restoring {
				c.handshake(false) // the line may be complete: answer it now
			}
		}
		for _, p := range s.pollers {
			p.dispatch.Unlock()
		}
	}
	return conns, release
}

// ResumeAccepting lets Serve run again after a hand-over that failed.
func (s *Server) ResumeAccepting() {
	s.mu.Lock()
	if s.accepting == nil && !s.closed.Load() {
		s.accepting = []*acceptor{}
	}
	s.mu.Unlock()
}

// drain waits until no subscriber has frames queued, or ctx ends.
func (s *Server) drain(ctx context.Context) {
	for ctx.Err() == nil && s.reg.Busy() {
		select {
		case <-ctx.Done():
		case <-time.After(5 * time.Millisecond):
		}
	}
}

// Adopt serves connections handed over by the previous process: subscribed clients are sent
// what they missed and follow their match again; those that were in their handshake go on with
// it. It returns how many were resumed and how many had to be closed (their match is unknown here).
func (s *Server) Adopt(conns []handover.Conn, ports []*listen.Port) (resumed, closed int) {
	now := time.Now()
	for _, rec := range conns {
		if s.closed.Load() || len(ports) == 0 {
			unix.Close(rec.FD)
			closed++
			continue
		}
		unix.SetNonblock(rec.FD, true)
		port := ports[0]
		if sa, err := unix.Getsockname(rec.FD); err == nil {
			n := 0
			switch a := sa.(type) {
			case *unix.SockaddrInet4:
				n = a.Port
			case *unix.SockaddrInet6:
				n = a.Port
			}
			for _, p := range ports {
				if p.Number() == n {
					port = p
				}
			}
		}
		pl := s.nextPoller()
		c := &conn{fd: rec.FD, srv: s, port: port, poller: pl}
		if rec.TLS != nil {
			st, err := tlsrecord.Restore(*rec.TLS)
			if err != nil {
				s.log.Warn("handed-over client closed", "err", err)
				unix.Close(rec.FD)
				closed++
				continue
			}
			c.tls = &tlsConn{rec: *st}
		}
		port.Conns.Add(1)
		if rec.Match != "" {
			sub, err := s.resume(c, rec.Match, rec.Version, rec.Seq)
			if err != nil {
				s.log.Warn("handed-over client closed", "match", rec.Match, "err", err)
				c.Close()
				closed++
				continue
			}
			c.sub = sub
		} else {
			c.handshaking, c.buf = true, rec.Pending
			s.hsMu.Lock()
			s.hs = append(s.hs, pending{c, now.Add(s.conf().HandshakeTimeout)})
			s.hsMu.Unlock()
			if len(c.buf) > 0 {
				c.handshake(false)
			}
		}
		if err := c.register(); err != nil {
			if err != errClosed {
				s.log.Warn("epoll add", "err", err)
			}
			closed++
			continue
		}
		resumed++
	}
	return resumed, closed
}
