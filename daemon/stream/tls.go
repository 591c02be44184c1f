package stream

import (
	"context"
	"crypto/tls"
	"net"
	"os"
	"runtime/debug"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"matchstream/daemon/listen"
	"matchstream/daemon/protocol"
	"matchstream/daemon/tlsrecord"
)

// TLS ports. A connection waits for its ClientHello in the poller, like a plain one for its
// connect line: a client that says nothing costs what it costs on a plain port, and is cut at the
// handshake timeout. Once the hello arrives, crypto/tls does the handshake on a goroutine that
// lives only as long as the handshake (at most handshakeSlots at once); then the connection goes
// back to its poller, holding only its record state (package tlsrecord): no goroutine, no buffer,
// no tls.Conn. The connect line and everything after it are opened and sealed here, frame by
// frame: the hub renders a frame once and each TLS subscriber seals it with its own key as it is
// written.

// SetTLS sets the configuration TLS ports handshake with (from tlsrecord.ServerConfig, typically
// with a GetCertificate that follows certificate reloads); nil refuses their connections.
func (s *Server) SetTLS(cfg *tls.Config) { s.tlsConfig.Store(cfg) }

// awaitingHello reports a TLS port's connection before its handshake; under the dispatch lock.
func (c *conn) awaitingHello() bool { return c.port.TLS && c.tls == nil }

// acceptedTLS registers a connection accepted on a TLS port, and starts its handshake at once if
// its ClientHello is there (in a connect burst it is).
func (p *poller) acceptedTLS(fd int, port *listen.Port) {
	s := p.srv
	if s.tlsConfig.Load() == nil || s.closed.Load() {
		unix.Close(fd)
		return
	}
	c := &conn{fd: fd, srv: s, port: port, poller: p, handshaking: true}
	port.Conns.Add(1)
	if err := p.add(c); err != nil {
		s.log.Warn("epoll add", "err", err)
		c.Close()
		return
	}
	var b [1]byte
	if n, _, err := unix.Recvfrom(fd, b[:], unix.MSG_PEEK|unix.MSG_DONTWAIT); err == nil && n > 0 {
		c.helloArrived()
		return
	}
	s.waitForLine(c) // the sweeper closes it if no hello comes in time
}

// helloArrived hands a connection whose ClientHello has arrived to a handshake goroutine: out of
// the poller (crypto/tls reads it now) and off the sweeper's list (the handshake has its own
// timeout); under the dispatch lock.
func (c *conn) helloArrived() {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return
	}
	c.handshaking = false
	c.poller.remove(c)
	c.mu.Unlock()
	s := c.srv
	s.hsQueue.Lock()
	if s.hsQueue.running >= s.handshakeSlots() {
		if len(s.hsQueue.waiting) >= maxQueuedHandshakes {
			s.hsQueue.Unlock()
			s.TLSFailed.Add(1)
			c.Close() // a flood of hellos: the client may try again
			return
		}
		s.hsQueue.waiting = append(s.hsQueue.waiting, queuedTLS{c, time.Now()})
		s.hsQueue.Unlock()
		return
	}
	s.hsQueue.running++
	s.hsQueue.Unlock()
	s.wg.Add(1)
	go s.handshakes(queuedTLS{c, time.Now()})
}

// A handshake costs a goroutine and crypto/tls's state, tens of kilobytes, while it runs, and a
// client that sent its hello can still make it last the handshake timeout by saying nothing more.
// At most handshakeSlots run at once, so such a flood costs a bounded amount of memory; the rest
// wait as connections in arrival order (up to maxQueuedHandshakes), and one that waited longer
// than the handshake timeout is closed unheard. 512 per CPU keep every CPU busy with the
// handshakes of clients a few hundred milliseconds away.
const (
	slotsPerCPU         = 512
	maxQueuedHandshakes = 1 << 16
)

func (s *Server) handshakeSlots() int {
	if s.tlsSlots > 0 {
		return s.tlsSlots
	}
	return slotsPerCPU * len(s.pollers)
}

// queuedTLS is a connection whose hello has arrived, waiting for a handshake slot since at.
type queuedTLS struct {
	c  *conn
	at time.Time
}

// handshakes runs q's handshake, then those queued meanwhile, until the queue is empty: the
// goroutine holds one slot.
func (s *Server) handshakes(q queuedTLS) {
	defer s.wg.Done()
	for {
		cfg := s.tlsConfig.Load()
		if cfg == nil || time.Since(q.at) > s.conf().HandshakeTimeout || s.closed.Load() {
			s.TLSFailed.Add(1)
			q.c.Close()
		} else {
			s.release.start()
			s.handshakeTLS(q.c, cfg)
			s.release.done()
		}
		s.hsQueue.Lock()
		if len(s.hsQueue.waiting) == 0 {
			s.hsQueue.running--
			s.hsQueue.waiting = nil // a flood's backing array goes
			s.hsQueue.Unlock()
			return
		}
		q = s.hsQueue.waiting[0]
		s.hsQueue.waiting = s.hsQueue.waiting[1:]
		s.hsQueue.Unlock()
	}
}

// A TLS handshake holds tens of kilobytes while it runs (crypto/tls's buffers, the handshake
// state, a grown goroutine stack), and a connect burst runs a thousand at once: once they are
// over, the heap is mostly free, but the Go runtime gives free memory back to the system a little
// at a time, and without allocation to drive it hardly at all. So after a burst of at least
// releaseAfter handshakes, once none has run for releaseQuiet, the free memory is returned at
// once (debug.FreeOSMemory: a collection, then every free page). Measured, it is the difference
// between 3.9 KB and about 1 KB of RSS per held TLS client after a 5,000-client burst.
const (
	releaseAfter = 256
	releaseQuiet = time.Second
)

// burstRelease counts handshakes and schedules the release. The zero value releases with
// debug.FreeOSMemory after releaseQuiet; tests set free and quiet.
type burstRelease struct {
	inFlight atomic.Int64
	since    atomic.Int64 // handshakes started since the last release
	pending  atomic.Bool  // a release is scheduled
	free     func()
	quiet    time.Duration
}

func (b *burstRelease) start() {
	b.inFlight.Add(1)
	b.since.Add(1)
}

func (b *burstRelease) done() {
	if b.inFlight.Add(-1) != 0 || b.since.Load() < releaseAfter || !b.pending.CompareAndSwap(false, true) {
		return
	}
	free, quiet := b.free, b.quiet
	if free == nil {
		free, quiet = debug.FreeOSMemory, releaseQuiet
	}
	time.AfterFunc(quiet, func() {
		defer b.pending.Store(false)
		if b.inFlight.Load() != 0 {
			return // the burst goes on: the next lull schedules it again
		}
		b.since.Store(0)
		free()
	})
}

// handshakeTLS runs c's handshake within the handshake timeout (Shutdown cuts it short), then
// gives c back to its poller. Meanwhile nothing else touches c: it is in no poller and the
// sweeper passes it by.
func (s *Server) handshakeTLS(c *conn, cfg *tls.Config) {
	nc, err := fileConn(c.fd)
	if err != nil {
		s.log.Warn("tls: taking the connection", "err", err)
		c.Close()
		return
	}
	ctx, cancel := context.WithTimeout(s.ctx, s.conf().HandshakeTimeout)
	st, _, err := tlsrecord.Handshake(ctx, nc, cfg)
	cancel()
	nc.Close() // our duplicate only: c.fd stays open
	if err != nil {
		s.TLSFailed.Add(1)
		s.log.Debug("tls handshake failed", "err", err)
		c.Close()
		return
	}
	s.TLSHandshakes.Add(1)
	p := c.poller
	p.dispatch.Lock() // c's read side is the poller's from now on; a hand-over waits for this
	defer p.dispatch.Unlock()
	c.mu.Lock()
	c.tls, c.handshaking = &tlsConn{rec: *st}, true
	c.mu.Unlock()
	if s.closed.Load() {
		c.Close()
		return
	}
	if s.conf().Welcome {
		c.writeNow([]byte(protocol.Welcome))
	}
	if err := p.add(c); err != nil {
		s.log.Warn("epoll add", "err", err)
		c.Close()
		return
	}
	c.readable(false, false) // the connect line may have come with the client's Finished
	c.mu.RLock()
	waiting := c.handshaking && !c.closed
	c.mu.RUnlock()
	if waiting {
		s.waitForLine(c)
	}
}

// fileConn is a net.Conn on a duplicate of fd, in the Go runtime's poller, for crypto/tls.
func fileConn(fd int) (net.Conn, error) {
	d, err := unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	f := os.NewFile(uintptr(d), "tls")
	defer f.Close()
	return net.FileConn(f)
}

// openTLS opens the records in, appending their application data to the connect line (or
// dropping it once subscribed); closed reports close_notify. Under the dispatch lock, and under
// c.tls.mu too: a key update the client asks for is the write side's to send, and a write that
// undoes its records must not undo the request with them.
func (c *conn) openTLS(in []byte) (closed bool, err error) {
	c.tls.mu.Lock()
	buf, res, err := c.tls.rec.Open(c.buf, in, c.sub != nil)
	c.tls.mu.Unlock()
	if err == nil && c.sub == nil {
		c.buf = buf
	}
	return res.Closed, err
}

// seal seals bufs (total bytes) into a buffer from the server's pool, under c.tls.mu; the caller gives the
// buffer back with putSealBuf once written (a tail the socket did not take is copied out first).
func (c *conn) seal(bufs [][]byte, total int) (rec []byte, bp *[]byte, err error) {
	bp, _ = c.srv.sealBufs.Get().(*[]byte)
	if need := total + tlsrecord.Overhead(total); bp == nil || cap(*bp) < need {
		b := make([]byte, 0, max(need, 4096))
		bp = &b
	}
	rec, err = c.tls.rec.Seal((*bp)[:0], bufs...)
	return rec, bp, err
}

// putSealBuf gives a buffer back to the pool, unless it grew past 64 KiB for a large batch.
func (s *Server) putSealBuf(bp *[]byte, rec []byte) {
	if cap(rec) <= 64<<10 {
		*bp = rec[:0]
		s.sealBufs.Put(bp)
	}
}

// writeNow seals p and writes what the socket takes now, for the short frames that precede a
// close (a refusal) or a subscription (the banner); on a plain port it is one write(2).
func (c *conn) writeNow(p []byte) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	if c.closed {
		return
	}
	if c.tls == nil {
		rawWrite(c.fd, p)
		return
	}
	c.tls.mu.Lock()
	defer c.tls.mu.Unlock()
	if len(c.tls.out) > 0 {
		return
	}
	rec, bp, err := c.seal([][]byte{p}, len(p))
	if err == nil {
		if n, _ := rawWrite(c.fd, rec); n > 0 && n < len(rec) {
			c.tls.out = append([]byte(nil), rec[n:]...)
		}
	}
	c.srv.putSealBuf(bp, rec)
}

// closeNotify tells the client we send nothing more, if the socket takes it now; under c.mu.
func (c *conn) closeNotify() {
	c.tls.mu.Lock()
	defer c.tls.mu.Unlock()
	if len(c.tls.out) > 0 {
		rawWrite(c.fd, c.tls.out) // the end of a record first, or the alert is garbage to the client
		c.tls.out = nil
	}
	var b [64]byte
	if rec, err := c.tls.rec.CloseNotify(b[:0]); err == nil {
		rawWrite(c.fd, rec)
	}
}

// Backlogged reports sealed bytes the socket has not taken yet: the hub keeps its flush going
// until they are written (Writev writes them first).
func (c *conn) Backlogged() bool {
	if c.tls == nil {
		return false
	}
	c.tls.mu.Lock()
	defer c.tls.mu.Unlock()
	return len(c.tls.out) > 0
}

// tryWritevTLS is TryWritev on a TLS port: it seals all of bufs into records and writes them in one
// write(2). If the socket takes nothing, the records are unsealed (the sequence number goes back)
// and 0 is returned; if it takes part, the rest is kept in c.tls.out and all of bufs is reported
// written: a record cannot be cut, so its tail must go out before anything else.
func (c *conn) tryWritevTLS(bufs [][]byte) (int, error) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	if c.closed {
		return 0, errClosed
	}
	c.tls.mu.Lock()
	defer c.tls.mu.Unlock()
	if len(c.tls.out) > 0 {
		if err := c.flushOut(); err != nil || len(c.tls.out) > 0 {
			return 0, err
		}
	}
	total := 0
	for _, b := range bufs {
		total += len(b)
	}
	mark := c.tls.rec.Mark()
	rec, bp, err := c.seal(bufs, total)
	defer c.srv.putSealBuf(bp, rec)
	if err != nil {
		return 0, err
	}
	n, err := c.writeRaw(rec)
	switch {
	case err != nil:
		return 0, err
	case n == 0:
		c.tls.rec.Undo(mark)
		return 0, nil
	case n < len(rec):
		c.tls.out = append([]byte(nil), rec[n:]...)
	}
	return total, nil
}

// writevTLS is Writev on a TLS port: the sealed tail of an earlier write first, then bufs sealed,
// waiting for the poller while the socket is full.
func (c *conn) writevTLS(bufs [][]byte) (int64, error) {
	var total int64
	for _, b := range bufs {
		total += int64(len(b))
	}
	watching := false
	defer func() {
		if watching {
			c.watchWrites(false)
		}
	}()
	for {
		c.mu.RLock()
		if c.closed {
			c.mu.RUnlock()
			return 0, errClosed
		}
		c.tls.mu.Lock()
		err := c.flushOut()
		if err == nil && len(c.tls.out) == 0 && len(bufs) > 0 {
			// A batch is sealed once; what the socket does not take now waits in c.tls.out.
			var rec []byte
			var bp *[]byte
			if rec, bp, err = c.seal(bufs, int(total)); err == nil {
				var n int
				if n, err = c.writeRaw(rec); err == nil && n < len(rec) {
					c.tls.out = append([]byte(nil), rec[n:]...)
				}
				bufs = nil
			}
			c.srv.putSealBuf(bp, rec)
		}
		done := len(c.tls.out) == 0 && len(bufs) == 0
		c.tls.mu.Unlock()
		c.mu.RUnlock()
		switch {
		case err != nil:
			return 0, err
		case done:
			return total, nil
		}
		if !watching {
			if err := c.watchWrites(true); err != nil {
				return 0, err
			}
			watching = true
		}
		if err := c.waitWritable(); err != nil {
			return 0, err
		}
	}
}

// flushOut writes what it can of c.tls.out; under c.mu (read) and c.tls.mu.
func (c *conn) flushOut() error {
	for len(c.tls.out) > 0 {
		n, err := c.writeRaw(c.tls.out)
		if err != nil {
			return err
		}
		if n == 0 {
			return nil
		}
		if n == len(c.tls.out) {
			c.tls.out = nil
			return nil
		}
		c.tls.out = c.tls.out[n:]
	}
	return nil
}

// writeRaw is writeSome of one buffer.
func (c *conn) writeRaw(b []byte) (int, error) { return c.writeSome([][]byte{b}) }
