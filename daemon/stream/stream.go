// Package stream is the connection layer of the stream ports. It accepts client connections, reads
// the connect line within the handshake timeout and a length cap, answers protocol errors the way
// the original did, and hands each connection to its match's hub.
//
// It is driven by epoll (one poller per CPU, which also accepts: accept.go) rather than a
// goroutine per connection: an idle subscribed connection holds no goroutine and no buffer, only a
// small struct, so a process holds tens of thousands of clients in a few megabytes. The hub's
// fan-out writes with non-blocking write(2)/writev(2) calls (raw ones: sys.go); when a socket is
// full, a flush goroutine waits for the poller to report it writable again.
package stream

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"matchstream/daemon/listen"
	"matchstream/daemon/live"
	"matchstream/daemon/protocol"
)

// Config is the stream section of the daemon configuration.
type Config struct {
	HandshakeTimeout time.Duration // no connect line within this → ERROR: timeout
	MaxLine          int           // connect line longer than this → ERROR: line_too_long
	KeepAlive        time.Duration // TCP keepalive idle time, finds half-open connections
	// ConnRate, when set, limits new connections per second from one source address (ConnBurst at
	// once); connections over it get ERROR: rate_limited. Off by default: load tests and NATed
	// audiences come from few addresses.
	ConnRate  float64
	ConnBurst int
	// SendBuffer, when set, fixes each client socket's SO_SNDBUF (the kernel doubles it) instead of
	// letting it autotune up to tcp_wmem's maximum: it bounds the kernel memory a client that stops
	// reading can pin, and makes such a client reach the slow-consumer cut at all. The daemon's
	// default is DefaultSendBuffer.
	SendBuffer int
	// Welcome sends the original's banner (protocol.Welcome) on accept, before the connect line.
	Welcome bool
}

// DefaultSendBuffer is the daemon's SO_SNDBUF for client sockets (128 KiB once the kernel doubles
// it): room for a status and dozens of events, far more than a live match sends at once. Left to
// autotune, the kernel sized a loopback client's buffer from its 64 KiB segments and absorbed
// 430 KB for each client that had stopped reading, so the slow-consumer cut never came; with
// tcp_wmem's maximum a stalled client could pin 4 MiB of kernel memory.
const DefaultSendBuffer = 64 << 10

// Server serves the stream ports.
type Server struct {
	cfg     atomic.Pointer[Config] // SetLimits replaces it
	reg     *live.Registry
	log     *slog.Logger
	pollers []*poller
	next    atomic.Uint32 // round-robin over pollers

	// Connections still in their handshake, oldest first: with one timeout for all, arrival order
	// is deadline order, so the sweeper only ever looks at the head.
	hsMu      sync.Mutex
	hs        []pending
	mu        sync.Mutex
	accepting []*acceptor // one per Serve; nil once StopAccepting ran
	closed    atomic.Bool
	wg        sync.WaitGroup
	stop      chan struct{}
	// ctx ends at Shutdown: store reads made for clients (restoring an evicted match) give up.
	ctx    context.Context
	cancel context.CancelFunc

	// HandoverFailures counts hand-overs that failed: to a successor (this process went on
	// serving), or from a predecessor (the clients it handed on were lost). The daemon counts them.
	HandoverFailures atomic.Int64
	// Refused counts handshakes answered with ERROR:, by protocol error code (fixed keys).
	Refused map[string]*atomic.Int64
	limit   atomic.Pointer[limiter] // nil: no per-address connection rate limit

	tlsConfig atomic.Pointer[tls.Config] // what TLS ports handshake with (SetTLS)
	// TLSHandshakes counts TLS handshakes completed; TLSFailed those that failed and connections
	// cut for a record that did not open.
	TLSHandshakes, TLSFailed atomic.Int64
	release                  burstRelease // returns a TLS handshake burst's memory to the system
	tlsSlots                 int          // tests: handshakeSlots; 0 is the default
	sealBufs                 sync.Pool    // *[]byte: what TLS writes seal frames into
	hsQueue                  struct {
		sync.Mutex
		running int         // goroutines running handshakes (handshakeSlots at most)
		waiting []queuedTLS // accepted, waiting for a slot, oldest first
	}
}

// New returns a stream server feeding clients from reg; it starts its pollers and the handshake
// sweeper, which Shutdown stops.
func New(cfg Config, reg *live.Registry, log *slog.Logger) (*Server, error) {
	s := &Server{reg: reg, log: log, stop: make(chan struct{}), accepting: []*acceptor{},
		Refused: map[string]*atomic.Int64{}}
	s.cfg.Store(&cfg)
	s.limit.Store(newLimiter(cfg.ConnRate, cfg.ConnBurst))
	s.ctx, s.cancel = context.WithCancel(context.Background())
	for _, code := range []string{protocol.CodeNotFound, protocol.CodeBadRequest, protocol.CodeUnsupportedVersion,
		protocol.CodeLineTooLong, protocol.CodeTimeout, protocol.CodeRateLimited} {
		s.Refused[code] = new(atomic.Int64)
	}
	for range runtime.GOMAXPROCS(0) {
		p, err := newPoller(s)
		if err != nil {
			s.closePollers()
			return nil, err
		}
		s.pollers = append(s.pollers, p)
	}
	for _, p := range s.pollers {
		s.wg.Add(1)
		go func() { defer s.wg.Done(); p.run() }()
	}
	s.wg.Add(1)
	go func() { defer s.wg.Done(); s.sweep() }()
	return s, nil
}

// conf is the configuration in force.
func (s *Server) conf() *Config { return s.cfg.Load() }

// SetLimits applies a reloaded configuration to the connections from now on: the handshake
// timeout, the longest connect line, the banner, the per-address rate limit (its counts start
// afresh) and the socket options (set again on the listeners, which pass them to the sockets they
// accept). Connections already open keep what they had; one already waiting for its connect line
// may be cut as late as its old deadline, when the timeout was shortened (the sweeper looks at
// deadlines in arrival order).
func (s *Server) SetLimits(cfg Config) {
	s.cfg.Store(&cfg)
	s.limit.Store(newLimiter(cfg.ConnRate, cfg.ConnBurst))
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, a := range s.accepting {
		if a.listenerTuned {
			if err := s.tune(a.lfd); err != nil {
				s.log.Warn("reload: socket options on a listener", "port", a.port.Number(), "err", err)
			}
		}
	}
}

// tune sets a client socket's options, or a listening socket's for the sockets it accepts: no
// Nagle delay, keepalive to find half-open connections, and the configured send buffer.
func (s *Server) tune(fd int) error {
	opts := [][3]int{{unix.IPPROTO_TCP, unix.TCP_NODELAY, 1}}
	if ka := s.conf().KeepAlive; ka > 0 {
		secs := max(1, int(ka.Seconds()))
		opts = append(opts, [3]int{unix.SOL_SOCKET, unix.SO_KEEPALIVE, 1}, [3]int{unix.IPPROTO_TCP, unix.TCP_KEEPIDLE, secs},
			[3]int{unix.IPPROTO_TCP, unix.TCP_KEEPINTVL, max(1, secs/3)}, [3]int{unix.IPPROTO_TCP, unix.TCP_KEEPCNT, 3})
	}
	if s.conf().SendBuffer > 0 {
		opts = append(opts, [3]int{unix.SOL_SOCKET, unix.SO_SNDBUF, s.conf().SendBuffer})
	}
	var errs []error
	for _, o := range opts {
		if err := unix.SetsockoptInt(fd, o[0], o[1], o[2]); err != nil {
			errs = append(errs, fmt.Errorf("setsockopt %d/%d: %w", o[0], o[1], err))
		}
	}
	return errors.Join(errs...)
}

// sweep cuts connections that sent no connect line in time.
func (s *Server) sweep() {
	t := time.NewTicker(max(10*time.Millisecond, min(s.conf().HandshakeTimeout/10, 250*time.Millisecond)))
	defer t.Stop()
	for {
		select {
		case <-s.stop:
			return
		case now := <-t.C:
			if l := s.limit.Load(); l != nil && now.Second() == 0 {
				l.prune(now)
			}
			s.hsMu.Lock()
			i := 0
			for i < len(s.hs) && !s.hs[i].deadline.After(now) {
				i++
			}
			expired := s.hs[:i:i]
			s.hs = s.hs[i:]
			s.hsMu.Unlock()
			for _, p := range expired {
				p.c.handshakeTimeout()
			}
		}
	}
}

// pending is a connection in its handshake and the time it must have sent its line by.
type pending struct {
	c        *conn
	deadline time.Time
}

// Shutdown closes every client connection still open and stops the pollers. The daemon first
// closes the listeners and has the hubs send their shutdown notices.
func (s *Server) Shutdown(ctx context.Context) error {
	if s.closed.Swap(true) {
		return nil
	}
	close(s.stop)
	s.cancel()
	s.StopAccepting()
	for _, p := range s.pollers {
		for _, c := range p.all() {
			c.Close()
		}
	}
	s.closePollers()
	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("stream shutdown: %w", ctx.Err())
	}
}

func (s *Server) closePollers() {
	for _, p := range s.pollers {
		p.close()
	}
}

var errClosed = errors.New("use of closed connection")

// AttachSSE takes over an HTTP connection on which a Server-Sent Events request was read (fd, a
// descriptor of our own) and serves it like a stream client, from the same hub, with the same
// bounded queue and the same small per-connection cost: head is the HTTP response head, then the
// status or, if resume, the events after seq after. port counts these connections.
func (s *Server) AttachSSE(fd int, port *listen.Port, id string, after uint64, resume bool, head []byte) error {
	if s.closed.Load() {
		unix.Close(fd)
		return errClosed
	}
	if err := unix.SetNonblock(fd, true); err != nil {
		unix.Close(fd)
		return err
	}
	s.tune(fd)
	pl := s.nextPoller()
	c := &conn{fd: fd, srv: s, port: port, poller: pl}
	port.Conns.Add(1)
	// Called on an API goroutine, so an evicted match is restored here; a resume past the end
	// (a browser that has every event of a match still live) gets the status instead.
	ctx, cancel := context.WithTimeout(s.ctx, restoreTimeout)
	defer cancel()
	sub, err := s.reg.SubscribeRestoring(ctx, c, id, protocol.VersionSSE,
		live.Join{Head: head, Resume: resume, After: after, StatusPastEnd: true})
	if err != nil {
		if errors.Is(err, live.ErrHandingOver) {
			// A hand-over is under way: answer with the head alone, whose retry: field has the
			// browser reconnect (to the successor) in 2 s, rather than close without a byte. c was
			// never shared, so its fd is still ours alone.
			unix.Write(fd, head)
		}
		c.Close()
		return err
	}
	c.sub = sub
	if err := c.register(); err != errClosed {
		return err
	}
	return nil // served already and closed: a finished match
}

// nextPoller picks the poller of a new connection, round-robin.
func (s *Server) nextPoller() *poller { return s.pollers[int(s.next.Add(1))%len(s.pollers)] }
