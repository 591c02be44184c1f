package stream

import (
	"encoding/binary"
	"fmt"
	"sync"
	"sync/atomic"

	"golang.org/x/sys/unix"
)

// poller is one epoll instance and the goroutine that waits on it. It accepts from the listening
// sockets too (accept.go). Client sockets are registered edge-triggered for input and hang-up
// once, when accepted: readers drain until EAGAIN (or a read that did not fill its buffer), and a
// writer that met EAGAIN asks for the next "writable" edge (watchWrites).
type poller struct {
	srv    *Server
	epfd   int
	wakeFd int // eventfd that interrupts epoll_wait on close

	mu        sync.RWMutex
	conns     map[int32]*conn
	listeners map[int32]*acceptor // the listening sockets it accepts from (accept.go)
	done      bool
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
	return &poller{srv: s, epfd: epfd, wakeFd: wfd, conns: make(map[int32]*conn), listeners: make(map[int32]*acceptor)}, nil
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
		n, err := pollNow(p.epfd, events)
		if n == 0 && err == nil {
			n, err = unix.EpollWait(p.epfd, events, -1)
		}
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
			if ev.Pad == listenerTag {
				if a := p.listener(ev.Fd); a != nil {
					p.accept(a)
				}
				continue
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
				c.readable(ev.Events&(unix.EPOLLERR|unix.EPOLLHUP) != 0, ev.Events&unix.EPOLLRDHUP != 0)
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
