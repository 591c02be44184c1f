package stream

import (
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"matchstream/daemon/listen"
	"matchstream/daemon/protocol"
)

// The pollers accept. Every listening socket is in every poller's epoll instance (EPOLLEXCLUSIVE:
// one poller is woken per connection), and the poller that accepts a connection reads its connect
// line at once (in a burst it has arrived by then), registers it, and answers it, all on its own
// thread. An accept loop of its own per port handed each connection to a poller thread, which was
// then woken to read it: two threads and an epoll round trip per connect, and in a connect burst
// most of the daemon's time went to those threads sleeping and waking.

// acceptBatch bounds the connections a poller accepts per wake-up, so the other sockets of its
// batch are served meanwhile; the listener is level-triggered and wakes it again.
const acceptBatch = 64

// listenerTag marks a listening socket's epoll events (the high half of epoll_data).
const listenerTag = 1

// acceptor is one Serve: a listening socket the pollers accept from.
type acceptor struct {
	s    *Server
	lfd  int // our own duplicate of the listening socket
	port *listen.Port
	// listenerTuned: the socket options were set on the listener, so sockets it accepts inherit
	// them, once the backlog queued before has been accepted (inherited).
	listenerTuned bool
	inherited     atomic.Bool
	stopped       atomic.Bool   // StopAccepting: no poller accepts from it any more
	done          chan struct{} // closed by StopAccepting: Serve returns

	mu    sync.Mutex   // a back-off's end watching the listener again, against stopping
	delay atomic.Int64 // the last back-off (nanoseconds); 0 once the queue was found empty
}

// Serve accepts on p until StopAccepting or Shutdown. The pollers accept with accept4(2) on a
// duplicate of the listening socket of our own, so accepted sockets never pass through the Go
// runtime's poller: they go straight to ours.
func (s *Server) Serve(p *listen.Port) error {
	rc, err := listen.RawConn(p.Listener)
	if err != nil {
		return err
	}
	lfd := -1
	var dupErr error
	rc.Control(func(fd uintptr) { lfd, dupErr = unix.FcntlInt(fd, unix.F_DUPFD_CLOEXEC, 0) })
	if dupErr != nil {
		return fmt.Errorf("stream port %d: dup: %w", p.Number(), dupErr)
	}
	defer unix.Close(lfd)
	// The duplicate shares the listener's open file, which Go has made non-blocking already; the
	// raw accept4 calls rely on it.
	if err := unix.SetNonblock(lfd, true); err != nil {
		return fmt.Errorf("stream port %d: %w", p.Number(), err)
	}
	// Set on the listening socket, the options are copied into each socket it accepts (Linux
	// clones the listener when a handshake completes): six setsockopt calls a connection fewer in
	// a connect burst. A connection that completed before, already queued (a socket-activated or
	// handed-over listener's backlog), has not got them: each is tuned until the queue is first
	// found empty, after which every accepted one completed later. If the listener refuses an
	// option, every accepted socket is tuned.
	a := &acceptor{s: s, lfd: lfd, port: p, listenerTuned: s.tune(lfd) == nil, done: make(chan struct{})}
	// Watched under s.mu, so a StopAccepting cannot come between: it would miss a listener added
	// after it, which, level-triggered and never accepted from, would wake its poller for ever.
	s.mu.Lock()
	if s.accepting == nil {
		s.mu.Unlock()
		return nil // stopped before it started
	}
	for _, pl := range s.pollers {
		if err := pl.watchListener(a, true); err != nil {
			s.mu.Unlock()
			a.unwatch()
			return fmt.Errorf("stream port %d: epoll_ctl: %w", p.Number(), err)
		}
	}
	s.accepting = append(s.accepting, a)
	s.mu.Unlock()
	<-a.done
	return nil
}

// unwatch takes a out of every poller and returns once none is accepting from it.
func (a *acceptor) unwatch() {
	a.mu.Lock()
	a.stopped.Store(true) // a back-off that ends now no longer watches the listener again
	a.mu.Unlock()
	for _, pl := range a.s.pollers {
		pl.dispatch.Lock() // a batch that is accepting finishes first; later ones see stopped
		pl.watchListener(a, false)
		pl.dispatch.Unlock()
	}
}

// StopAccepting makes every Serve return: once it returns, no connection is being accepted, so a
// hand-over that walks the pollers next sees every one. Connections already accepted stay.
func (s *Server) StopAccepting() {
	s.mu.Lock()
	as := s.accepting
	s.accepting = nil
	s.mu.Unlock()
	for _, a := range as {
		a.unwatch()
		close(a.done)
	}
}

// watchListener adds a's listening socket to the poller's epoll instance, or takes it out.
func (p *poller) watchListener(a *acceptor, on bool) error {
	p.mu.Lock()
	if on {
		p.listeners[int32(a.lfd)] = a
	} else if p.listeners[int32(a.lfd)] == a {
		delete(p.listeners, int32(a.lfd))
	}
	p.mu.Unlock()
	if !on {
		return unix.EpollCtl(p.epfd, unix.EPOLL_CTL_DEL, a.lfd, nil)
	}
	ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLEXCLUSIVE, Fd: int32(a.lfd), Pad: listenerTag}
	return unix.EpollCtl(p.epfd, unix.EPOLL_CTL_ADD, a.lfd, &ev)
}

// listener is the acceptor an event with listenerTag is for; nil if it stopped meanwhile (its fd
// number may be a client's by now).
func (p *poller) listener(fd int32) *acceptor {
	p.mu.RLock()
	defer p.mu.RUnlock()
	return p.listeners[fd]
}

// accept takes up to acceptBatch connections from a; on the poller's goroutine, under dispatch.
func (p *poller) accept(a *acceptor) {
	s := a.s
	for range acceptBatch {
		if a.stopped.Load() {
			return
		}
		var fd int
		var sa unix.Sockaddr
		var err error
		limit := s.limit.Load()
		if limit != nil { // the rate limit needs the peer's address
			fd, sa, err = unix.Accept4(a.lfd, unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC)
		} else {
			fd, err = rawAccept(a.lfd)
		}
		switch {
		case err == nil && limit != nil && !limit.allow(addrOf(sa), time.Now()):
			s.Refused[protocol.CodeRateLimited].Add(1)
			if !a.port.TLS { // a TLS client would take a clear-text line for a broken handshake
				frame := (&protocol.Error{Code: protocol.CodeRateLimited, Detail: "too many connections from " + addrOf(sa).String()}).Frame()
				rawWrite(fd, frame) // a fresh socket has room for one short line
			}
			unix.Close(fd)
		case err == nil:
			if !a.inherited.Load() {
				s.tune(fd)
			}
			if a.port.TLS {
				p.acceptedTLS(fd, a.port)
			} else {
				p.accepted(fd, a.port)
			}
		case err == unix.EINTR || err == unix.ECONNABORTED:
		case err == unix.EAGAIN:
			if a.listenerTuned {
				a.inherited.Store(true)
			}
			a.delay.Store(0) // every accept batch ends here: no lock for it
			return
		default:
			p.backOff(a, err)
			return
		}
	}
}

// backOff stops this poller accepting from a for a while after an accept error (EMFILE and
// friends), which a level-triggered listener would otherwise report again at once: the daemon
// keeps serving those already connected rather than spin.
func (p *poller) backOff(a *acceptor, err error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.stopped.Load() {
		return
	}
	delay := min(max(2*time.Duration(a.delay.Load()), 5*time.Millisecond), time.Second)
	a.delay.Store(int64(delay))
	a.s.log.Warn("accept", "port", a.port.Number(), "err", err, "retry_in", delay)
	p.watchListener(a, false)
	time.AfterFunc(delay, func() {
		a.mu.Lock()
		defer a.mu.Unlock()
		if !a.stopped.Load() {
			p.watchListener(a, true)
		}
	})
}

// accepted serves a connection the poller has just accepted: it reads the connect line now,
// registers the socket, then answers the line. Read before the registration, a line that is all
// there leaves nothing for epoll to report; what comes later (the rest of a long line, a hang-up)
// is reported as for any connection.
func (p *poller) accepted(fd int, port *listen.Port) {
	s := p.srv
	if s.closed.Load() {
		unix.Close(fd)
		return
	}
	if s.conf().Welcome {
		rawWrite(fd, []byte(protocol.Welcome)) // a fresh socket has room for it
	}
	c := &conn{fd: fd, srv: s, port: port, poller: p, handshaking: true, buf: make([]byte, 0, 128)}
	port.Conns.Add(1)
	n, rerr := rawRead(fd, c.buf[:cap(c.buf)])
	if err := p.add(c); err != nil {
		s.log.Warn("epoll add", "err", err)
		c.Close()
		return
	}
	switch {
	case rerr == unix.EAGAIN: // nothing yet: the poller reads it when it comes
	case rerr != nil:
		c.Close()
		return
	case n == 0: // went away before saying anything
		c.Close()
		return
	default:
		c.buf = c.buf[:n]
		c.handshake(false) // subscribed, refused, waiting for the store, or for the rest of the line
	}
	c.mu.RLock()
	waiting := c.handshaking && !c.closed
	c.mu.RUnlock()
	if waiting { // most connect lines are answered above: only the rest need a clock and the list
		s.waitForLine(c)
	}
}

// waitForLine puts c on the handshake list: it is cut if its connect line is not complete within
// the handshake timeout.
func (s *Server) waitForLine(c *conn) {
	s.hsMu.Lock()
	s.hs = append(s.hs, pending{c, time.Now().Add(s.conf().HandshakeTimeout)})
	s.hsMu.Unlock()
}
