package stream

import (
	"encoding/binary"
	"fmt"
	"sync"
	"sync/atomic"

	"golang.org/x/sys/unix"
)

// poller is one epoll instance and the goroutine that waits on it. Sockets are registered
// edge-triggered for input, output and hang-up once, when accepted, and never modified: readers
// drain until EAGAIN, and a writer that met EAGAIN waits for the next "writable" edge.
type poller struct {
	srv    *Server
	epfd   int
	wakeFd int // eventfd that interrupts epoll_wait on close

	mu    sync.RWMutex
	conns map[int32]*conn
	done  bool
	// dispatch is held while a batch of events is handled, so a hand-over can pause the poller
	// between batches and read connection state the poller goroutine otherwise owns.
	dispatch sync.Mutex
	// writeWakes counts "writable" events handled (tests: an idle connection gets none).
	writeWakes atomic.Int64
}

func newPoller(s *Server) (*poller, error) {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("epoll_create: %w", err)
	}
	wfd, err := unix.Eventfd(0, unix.EFD_NONBLOCK|unix.EFD_CLOEXEC)
	if err != nil {
		unix.Close(epfd)
		return nil, fmt.Errorf("eventfd: %w", err)
	}
	if err := unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, wfd, &unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(wfd)}); err != nil {
		unix.Close(epfd)
		unix.Close(wfd)
		return nil, fmt.Errorf("epoll_ctl: %w", err)
	}
	return &poller{srv: s, epfd: epfd, wakeFd: wfd, conns: make(map[int32]*conn)}, nil
}

func (p *poller) add(c *conn) error {
	p.mu.Lock()
	p.conns[int32(c.fd)] = c
	p.mu.Unlock()
	ev := unix.EpollEvent{Events: readEvents, Fd: int32(c.fd)}
	return unix.EpollCtl(p.epfd, unix.EPOLL_CTL_ADD, c.fd, &ev)
}

// readEvents are what every connection is registered for. "Writable" is asked for only while a
// writer waits for room (watchWrites): registered always, it is reported at registration, a
// wake-up per connection for nothing during a connect burst.
const readEvents = unix.EPOLLIN | unix.EPOLLRDHUP | unix.EPOLLET

// watchWrites asks for c's "writable" edge too (on), or no longer (off). EPOLL_CTL_MOD looks at
// the socket's readiness as it is, so room that came between the EAGAIN and this call is reported.
func (p *poller) watchWrites(c *conn, on bool) error {
	ev := unix.EpollEvent{Events: readEvents, Fd: int32(c.fd)}
	if on {
		ev.Events |= unix.EPOLLOUT
	}
	return unix.EpollCtl(p.epfd, unix.EPOLL_CTL_MOD, c.fd, &ev)
}

// remove forgets c; called by c.Close with c's write lock held, before the fd is closed, so an
// event for a reused fd number never reaches the old conn.
func (p *poller) remove(c *conn) {
	unix.EpollCtl(p.epfd, unix.EPOLL_CTL_DEL, c.fd, nil)
	p.mu.Lock()
	if p.conns[int32(c.fd)] == c {
		delete(p.conns, int32(c.fd))
	}
	p.mu.Unlock()
}

func (p *poller) all() []*conn {
	p.mu.RLock()
	defer p.mu.RUnlock()
	out := make([]*conn, 0, len(p.conns))
	for _, c := range p.conns {
		out = append(out, c)
	}
	return out
}

func (p *poller) run() {
	defer unix.Close(p.epfd)
	defer unix.Close(p.wakeFd)
	events := make([]unix.EpollEvent, 256)
	for {
		n, err := unix.EpollWait(p.epfd, events, -1)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			p.srv.log.Error("epoll_wait", "err", err)
			return
		}
		p.dispatch.Lock()
		for _, ev := range events[:n] {
			if int(ev.Fd) == p.wakeFd {
				p.dispatch.Unlock()
				return
			}
			p.mu.RLock()
			c := p.conns[ev.Fd]
			p.mu.RUnlock()
			if c == nil {
				continue
			}
			if ev.Events&(unix.EPOLLOUT|unix.EPOLLERR|unix.EPOLLHUP) != 0 {
				p.writeWakes.Add(1)
				c.writable()
			}
			if ev.Events&(unix.EPOLLIN|unix.EPOLLRDHUP|unix.EPOLLERR|unix.EPOLLHUP) != 0 {
				c.readable(ev.Events&(unix.EPOLLERR|unix.EPOLLHUP) != 0)
			}
		}
		p.dispatch.Unlock()
	}
}

func (p *poller) close() {
	p.mu.Lock()
	if p.done {
		p.mu.Unlock()
		return
	}
	p.done = true
	p.mu.Unlock()
	var one [8]byte
	binary.NativeEndian.PutUint64(one[:], 1)
	unix.Write(p.wakeFd, one[:])
}

// waiter waits for one socket to become readable (a listening socket: a connection to accept), or
// for wake.
type waiter struct {
	ep, ev  int
	stopped atomic.Bool   // set by StopAccepting: the accept loop returns before its next accept
	done    chan struct{} // closed when the accept loop using it has returned
	mu      sync.Mutex    // wake against close
	closed  bool
}

func newWaiter(fd int) (*waiter, error) {
	ep, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("epoll_create: %w", err)
	}
	ev, err := unix.Eventfd(0, unix.EFD_NONBLOCK|unix.EFD_CLOEXEC)
	if err != nil {
		unix.Close(ep)
		return nil, fmt.Errorf("eventfd: %w", err)
	}
	w := &waiter{ep: ep, ev: ev, done: make(chan struct{})}
	for _, f := range []int{fd, ev} {
		if err := unix.EpollCtl(ep, unix.EPOLL_CTL_ADD, f, &unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(f)}); err != nil {
			w.close()
			return nil, fmt.Errorf("epoll_ctl: %w", err)
		}
	}
	return w, nil
}

// wait blocks until the socket is readable (true) or wake was called (false); a timeout in
// milliseconds (or -1) also returns true.
func (w *waiter) wait(timeout int) bool {
	var evs [2]unix.EpollEvent
	for {
		n, err := unix.EpollWait(w.ep, evs[:], timeout)
		if err == unix.EINTR {
			continue
		}
		for _, e := range evs[:max(n, 0)] {
			if int(e.Fd) == w.ev {
				return false
			}
		}
		return err == nil
	}
}

// wake interrupts wait; safe after close (an accept loop that failed closes its waiter while
// StopAccepting may still hold it), when it does nothing rather than write to a reused fd number.
func (w *waiter) wake() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return
	}
	var one [8]byte
	binary.NativeEndian.PutUint64(one[:], 1)
	unix.Write(w.ev, one[:])
}

func (w *waiter) close() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return
	}
	w.closed = true
	unix.Close(w.ep)
	unix.Close(w.ev)
}
