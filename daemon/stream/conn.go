package stream

import (
	"context"
	"errors"
	"io"
	"os"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"matchstream/daemon/hub"
	"matchstream/daemon/listen"
	"matchstream/daemon/live"
	"matchstream/daemon/protocol"
	"matchstream/daemon/tlsrecord"
)

// conn is one client socket. Its read side is driven by its poller (handshake, then noticing the
// client leave); its write side by the hub. It implements hub.Conn.
type conn struct {
	fd     int
	srv    *Server
	port   *listen.Port
	poller *poller

	// mu is held for reading around every syscall on fd and for writing by Close, so the fd number
	// is never used after it is closed (and perhaps reused by the next accept).
	mu          sync.RWMutex
	closed      bool
	handshaking bool // no connect line yet: the handshake timeout applies

	// Touched only under the poller's dispatch lock (by its goroutine, a hand-over, or a restore
	// acting for it).
	buf       []byte // the connect line so far; nil once subscribed
	sub       *hub.Subscriber
	readDone  bool // EOF seen: the client half-closed; it may still read
	restoring bool // the line waits for its match's history to come back from the store
	restores  int  // how many times it has waited (bounded: an eviction could race the restore)
	// discovered: the store was asked once for a match this node did not know.
	discovered bool

	wmu           sync.Mutex
	wake          chan struct{} // made on the first EAGAIN: the poller signals "writable"
	writeDeadline time.Time

	// tls is a TLS port's connection state after its handshake; nil on a plain port, which so
	// pays one pointer for it.
	tls *tlsConn
}

// tlsConn is what a TLS connection holds beyond a plain one, in one allocation.
type tlsConn struct {
	// rec's write side is used under mu, its read side under the poller's dispatch lock and mu
	// both (a key update the client asks for is the write side's to send).
	rec tlsrecord.State
	mu  sync.Mutex
	out []byte // sealed records the socket has not taken yet; nil when none
}

// readable handles input: the connect line during the handshake, then nothing but the client going
// away. A half-close (EOF) is not leaving: `nc -q` and shell pipes close their sending side and still
// read, so such a client stays subscribed until a write fails or its match ends. peerClosed: the
// event says the client has half-closed, so the read goes on to the EOF. On a TLS port the bytes
// read are records, opened on the way (tls.go); close_notify is the half-close there.
func (c *conn) readable(hangup, peerClosed bool) {
	if (c.readDone || c.restoring) && !hangup {
		return
	}
	if c.awaitingHello() {
		if hangup {
			c.Close()
		} else {
			c.helloArrived()
		}
		return
	}
	var scratch [2048]byte // what is ignored, and TLS records
	for {
		b := scratch[:]
		if c.sub == nil && c.tls == nil {
			if c.buf == nil {
				c.buf = make([]byte, 0, 128)
			}
			if cap(c.buf)-len(c.buf) < 128 {
				c.buf = append(c.buf, make([]byte, 128)...)[:len(c.buf)]
			}
			b = c.buf[len(c.buf):cap(c.buf)]
		}
		c.mu.RLock()
		if c.closed {
			c.mu.RUnlock()
			return
		}
		n, err := rawRead(c.fd, b)
		c.mu.RUnlock()
		switch {
		case err == unix.EAGAIN:
			if hangup {
				c.gone()
			}
			return
		case err == unix.EINTR:
			continue
		case err != nil:
			c.gone()
			return
		case n == 0: // EOF; on a TLS port without close_notify, a truncation
			c.eof(c.tls == nil)
			return
		}
		// A read that did not fill its buffer emptied the socket: whatever comes later is a new
		// edge, so the read that would only say EAGAIN is spared (one syscall per connect).
		drained := n < len(b) && !hangup && !peerClosed
		if c.tls != nil {
			closed, err := c.openTLS(b[:n])
			if err != nil {
				c.srv.log.Debug("tls: client input", "err", err)
				c.srv.TLSFailed.Add(1)
				c.gone()
				return
			}
			if closed {
				c.eof(true)
				return
			}
		}
		if c.sub != nil {
			if drained {
				return
			}
			continue // ignored, as the original ignored anything sent after connecting
		}
		if c.tls == nil {
			c.buf = c.buf[:len(c.buf)+n]
		}
		if c.handshake(false) || drained && c.sub != nil {
			return
		}
	}
}

// eof is the end of the client's input: it may still read, so a subscribed client stays. One
// still in its handshake has its last line, without a newline, answered if the end was clean,
// and is closed otherwise.
func (c *conn) eof(clean bool) {
	c.readDone = true
	if c.sub == nil {
		if len(c.buf) > 0 && clean {
			c.handshake(true)
		} else {
			c.Close() // went away before saying anything
		}
	}
}

// handshake tries to complete the connect line; it reports whether the read loop should stop.
func (c *conn) handshake(eof bool) bool {
	line, ok, err := protocol.CutLine(c.buf, c.srv.conf().MaxLine)
	if err == nil && !ok {
		if !eof {
			return false
		}
		line = c.buf
	}
	if err == nil {
		var req protocol.Request
		if req, err = protocol.ParseConnect(line); err == nil {
			c.mu.Lock()
			c.handshaking = false // the sweeper skips it now
			c.mu.Unlock()
			var sub *hub.Subscriber
			if sub, err = c.srv.subscribe(c, req, time.Now()); err == nil {
				c.sub, c.buf = sub, nil
				return false // keep draining: whatever else it sent is ignored
			}
			switch {
			case errors.Is(err, live.ErrNotInMemory) && c.restores < 3:
				c.srv.readThenHandshake(c, func(ctx context.Context) error { return c.srv.reg.Restore(ctx, req.Match) })
				return true
			case errors.Is(err, errUnknownHere):
				c.discovered = true // once: then not_found is the answer
				c.srv.readThenHandshake(c, func(ctx context.Context) error {
					_, err := c.srv.reg.Discover(ctx, req.Match)
					return err
				})
				return true
			}
			if errors.Is(err, live.ErrHandingOver) {
				// Keep the line: the successor (or this process, if the hand-over fails) answers it.
				c.mu.Lock()
				c.handshaking = true
				c.mu.Unlock()
				return true
			}
		}
	}
	c.refuse(protocol.ErrorFor(err, c.srv.conf().MaxLine))
	return true
}

// refuse writes a protocol error, as much of it as the socket takes now, and closes.
func (c *conn) refuse(pe *protocol.Error) {
	c.srv.log.Debug("handshake refused", "code", pe.Code, "detail", pe.Detail)
	if n := c.srv.Refused[pe.Code]; n != nil {
		n.Add(1)
	}
	c.writeNow(pe.Frame())
	c.Close()
}

func (c *conn) handshakeTimeout() {
	c.mu.RLock()
	expired := !c.closed && c.handshaking
	silent := c.awaitingHello() // no TLS yet: a clear-text error would be garbage to the client
	c.mu.RUnlock()
	if expired && silent {
		c.srv.TLSFailed.Add(1)
		c.Close()
		return
	}
	if expired {
		c.refuse(protocol.ErrorFor(os.ErrDeadlineExceeded, c.srv.conf().MaxLine))
	}
}

// gone is the client leaving (reset, or hang-up): unsubscribe and close.
func (c *conn) gone() {
	if c.sub != nil {
		c.sub.Leave() // closes c
		return
	}
	c.Close()
}

// writable wakes a writer waiting for room in the socket.
func (c *conn) writable() {
	c.wmu.Lock()
	w := c.wake
	c.wmu.Unlock()
	if w != nil {
		select {
		case w <- struct{}{}:
		default:
		}
	}
}

// SetWriteDeadline bounds how long Write waits for a socket that takes nothing (hub's write timeout).
func (c *conn) SetWriteDeadline(t time.Time) error {
	c.wmu.Lock()
	c.writeDeadline = t
	c.wmu.Unlock()
	return nil
}

// Write writes all of p, waiting for the poller when the socket is full.
func (c *conn) Write(p []byte) (int, error) {
	n, err := c.Writev([][]byte{p})
	return int(n), err
}

// Writev writes all of bufs with as few writev(2) calls as the socket allows: a batch of queued
// frames goes out in one syscall. It consumes bufs.
func (c *conn) Writev(bufs [][]byte) (int64, error) {
	if c.tls != nil {
		return c.writevTLS(bufs)
	}
	var total int64
	watching := false // EPOLLOUT is armed for this write: disarm it when done
	defer func() {
		if watching {
			c.watchWrites(false)
		}
	}()
	for len(bufs) > 0 {
		c.mu.RLock()
		if c.closed {
			c.mu.RUnlock()
			return total, errClosed
		}
		n, err := rawWritev(c.fd, bufs)
		c.mu.RUnlock()
		switch {
		case err == unix.EAGAIN:
			if !watching {
				if err := c.watchWrites(true); err != nil {
					return total, err
				}
				watching = true
			}
			if err := c.waitWritable(); err != nil {
				return total, err
			}
			continue
		case err == unix.EINTR:
			continue
		case err != nil:
			return total, err
		}
		total += int64(n)
		for n > 0 {
			if n >= len(bufs[0]) {
				n -= len(bufs[0])
				bufs = bufs[1:]
			} else {
				bufs[0] = bufs[0][n:]
				n = 0
			}
		}
		for len(bufs) > 0 && len(bufs[0]) == 0 {
			bufs = bufs[1:]
		}
	}
	return total, nil
}

// TryWritev writes what the socket takes now, in one writev(2), without blocking or touching bufs.
func (c *conn) TryWritev(bufs [][]byte) (int, error) {
	if c.tls != nil {
		return c.tryWritevTLS(bufs)
	}
	c.mu.RLock()
	defer c.mu.RUnlock()
	if c.closed {
		return 0, errClosed
	}
	return c.writeSome(bufs)
}

// writeSome is one writev(2) of what the socket takes now: EAGAIN is 0 bytes, EINTR is retried;
// under c.mu (read).
func (c *conn) writeSome(bufs [][]byte) (int, error) {
	for {
		n, err := rawWritev(c.fd, bufs)
		switch err {
		case nil:
			return n, nil
		case unix.EAGAIN:
			return 0, nil
		case unix.EINTR:
			continue
		}
		return 0, err
	}
}

// watchWrites arms or disarms the poller's "writable" edge for c, unless c is closed (its fd may
// already be another connection's).
func (c *conn) watchWrites(on bool) error {
	c.mu.RLock()
	defer c.mu.RUnlock()
	if c.closed {
		return errClosed
	}
	return c.poller.watchWrites(c, on)
}

func (c *conn) waitWritable() error {
	c.wmu.Lock()
	if c.wake == nil {
		c.wake = make(chan struct{}, 1)
	}
	w, d := c.wake, c.writeDeadline
	c.wmu.Unlock()
	if d.IsZero() {
		<-w
		return nil
	}
	t := time.NewTimer(time.Until(d))
	defer t.Stop()
	select {
	case <-w:
		return nil
	case <-t.C:
		return os.ErrDeadlineExceeded
	}
}

// Close closes the socket once; safe from any goroutine.
func (c *conn) Close() error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil
	}
	c.poller.remove(c)
	if c.tls != nil {
		c.closeNotify() // under mu, before closed: it writes to fd
	}
	c.closed = true
	err := unix.Close(c.fd)
	c.mu.Unlock()
	c.port.Conns.Add(-1)
	c.writable() // a writer waiting for room finds the connection closed
	return err
}

var _ io.Writer = (*conn)(nil)

// detach makes the connection closed for this process without closing the socket, which is being
// handed to a successor: nothing here reads or writes it any more.
func (c *conn) detach() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return false
	}
	c.closed = true
	c.poller.remove(c)
	return true
}

// reattach undoes detach (the hand-over failed).
func (c *conn) reattach() {
	c.mu.Lock()
	c.closed = false
	c.mu.Unlock()
	if err := c.poller.add(c); err != nil {
		c.Close()
	}
}

// register adds a connection that was subscribed before it reached its poller (a hand-over or an
// event stream) to the poller; only now, after c.sub is set, so the poller never sees it half made.
// It holds c.mu so that a Close (match over, refused line) cannot slip between the check and the
// registration. errClosed: it was closed already; any other error closes it.
func (c *conn) register() error {
	c.mu.RLock()
	if c.closed {
		c.mu.RUnlock()
		return errClosed
	}
	err := c.poller.add(c)
	c.mu.RUnlock()
	if err != nil {
		c.Close()
	}
	return err
}
