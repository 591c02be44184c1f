// Package stream is the connection layer of the stream ports: it accepts client connections, reads
// the connect line within the handshake timeout and a length cap, answers protocol errors the way
// the original did, and hands the connection to the match's hub. Today each connection has one
// goroutine blocked in Read to notice the client leaving; the hub does not depend on that, so an
// epoll-driven layer can replace this package alone.
package stream

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"sync"
	"time"

	"matchstream/daemon/listen"
	"matchstream/daemon/live"
	"matchstream/daemon/protocol"
)

// Config is the stream section of the daemon configuration.
type Config struct {
	HandshakeTimeout time.Duration // no connect line within this → ERROR: timeout
	MaxLine          int           // connect line longer than this → ERROR: line_too_long
	KeepAlive        time.Duration // TCP keepalive period, finds half-open connections
	// SendBuffer, when set, fixes each client socket's SO_SNDBUF (the kernel doubles it) instead of
	// letting it autotune up to tcp_wmem's maximum: it bounds the kernel memory a client that stops
	// reading can pin, and makes such a client reach the slow-consumer cut sooner.
	SendBuffer int
}

// Server serves the stream ports.
type Server struct {
	cfg Config
	reg *live.Registry
	log *slog.Logger

	mu     sync.Mutex
	conns  map[*conn]struct{}
	closed bool
	wg     sync.WaitGroup
}

// New returns a stream server feeding clients from reg.
func New(cfg Config, reg *live.Registry, log *slog.Logger) *Server {
	return &Server{cfg: cfg, reg: reg, log: log, conns: make(map[*conn]struct{})}
}

// conn is a client connection that keeps its port's count right however it is closed (by the hub
// after stop, by a write error, by the client leaving or by shutdown).
type conn struct {
	*net.TCPConn
	srv  *Server
	port *listen.Port
	once sync.Once
}

func (c *conn) Close() error {
	var err error
	c.once.Do(func() {
		err = c.TCPConn.Close()
		c.port.Conns.Add(-1)
		c.srv.mu.Lock()
		delete(c.srv.conns, c)
		c.srv.mu.Unlock()
	})
	return err
}

// Serve accepts on p until the listener is closed.
func (s *Server) Serve(p *listen.Port) error {
	var delay time.Duration
	for {
		nc, err := p.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return nil
			}
			// EMFILE and friends: back off rather than spin, keep serving those already connected.
			delay = min(max(2*delay, 5*time.Millisecond), time.Second)
			s.log.Warn("accept", "port", p.Number(), "err", err, "retry_in", delay)
			time.Sleep(delay)
			continue
		}
		delay = 0
		tc, ok := nc.(*net.TCPConn)
		if !ok {
			nc.Close()
			continue
		}
		c := &conn{TCPConn: tc, srv: s, port: p}
		p.Conns.Add(1)
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			c.Close()
			continue
		}
		s.conns[c] = struct{}{}
		s.wg.Add(1)
		s.mu.Unlock()
		go s.handle(c)
	}
}

func (s *Server) handle(c *conn) {
	defer s.wg.Done()
	c.SetNoDelay(true)
	if s.cfg.SendBuffer > 0 {
		c.SetWriteBuffer(s.cfg.SendBuffer)
	}
	if s.cfg.KeepAlive > 0 {
		c.SetKeepAliveConfig(net.KeepAliveConfig{Enable: true, Idle: s.cfg.KeepAlive, Interval: s.cfg.KeepAlive / 3, Count: 3})
	}
	c.SetReadDeadline(time.Now().Add(s.cfg.HandshakeTimeout))
	line, err := protocol.ReadLine(c, s.cfg.MaxLine)
	if err == nil {
		var req protocol.Request
		if req, err = protocol.ParseConnect(line); err == nil {
			c.SetReadDeadline(time.Time{})
			sub, serr := s.reg.Subscribe(c, req, time.Now())
			if serr == nil {
				if s.watch(c) {
					sub.Leave()
				}
				return
			}
			err = serr
		}
	}
	if errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed) {
		c.Close() // went away before saying anything
		return
	}
	pe := protocol.ErrorFor(err, s.cfg.MaxLine)
	s.log.Debug("handshake refused", "remote", c.RemoteAddr().String(), "code", pe.Code, "detail", pe.Detail)
	c.SetWriteDeadline(time.Now().Add(time.Second))
	c.Write(pe.Frame())
	c.Close()
}

// watch blocks until the client goes away and reports whether it did. Whatever a client sends after
// its connect line is ignored, as the original did. A half-close (EOF) is not leaving: `nc -q` and
// shell pipes close their sending side and still read, so such a connection stays subscribed, with no
// goroutine, until a write to it fails, its match ends or the daemon stops.
func (s *Server) watch(c *conn) (gone bool) {
	var buf [64]byte
	for {
		_, err := c.Read(buf[:])
		if err == nil {
			continue
		}
		return !errors.Is(err, io.EOF)
	}
}

// Shutdown closes every client connection and waits for their goroutines.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.closed = true
	conns := make([]*conn, 0, len(s.conns))
	for c := range s.conns {
		conns = append(conns, c)
	}
	s.mu.Unlock()
	for _, c := range conns {
		c.Close()
	}
	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
