package daemon

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/valyala/fasthttp"
	"github.com/valyala/fasthttp/fasthttpadaptor"

	"matchstream/daemon/api"
	"matchstream/daemon/certs"
	"matchstream/daemon/handover"
	"matchstream/daemon/hub"
	"matchstream/daemon/listen"
	"matchstream/daemon/live"
	"matchstream/daemon/metrics"
	"matchstream/daemon/store"
	"matchstream/daemon/stream"
	"matchstream/daemon/tlsrecord"
)

// Server is one `matchstream serve`: its listeners, store, live matches, stream connection layer
// and API. Its life: New opens everything (a port another process holds fails here, before the
// store or the token is touched); Start serves and says READY; HandOver gives the clients to a
// successor process (SIGUSR2); Shutdown stops, handing the clients to systemd's fd store first
// when configured; Wait returns once it has stopped, with the error that stopped it, if any. It
// owns every goroutine it starts and waits for them all. Signals are the CLI's business: it maps
// them to these methods.
type Server struct {
	cfg Config
	log *slog.Logger

	lns     *listen.Set
	st      store.Store
	rel     *handover.Releasable // a bolt store, released for a successor; nil for Redis
	reg     *live.Registry
	streams *stream.Server
	handler *api.Handler
	http    *fasthttp.Server
	admin   *fasthttp.Server // nil: no admin listener
	hub     hub.Config       // the client limits in force: the configuration's, or a reload's
	stream  stream.Config    // the stream limits in force, likewise
	cert    *certs.Cert      // nil: no certificate configured
	cluster atomic.Pointer[[]store.NodeLoad]

	// notify is the service manager's socket; a successor's points at its predecessor until READY.
	notifyMu sync.Mutex
	notify   handover.Notifier

	ready     atomic.Bool
	readyC    chan struct{}
	serving   sync.WaitGroup // accept loops and the HTTP server
	loops     sync.WaitGroup // the periodic loops
	stopLoops context.CancelFunc
	errc      chan error

	stopOnce sync.Once
	stopped  chan struct{}
	err      error // why it stopped; read after stopped is closed
	// handing is held by a hand-over to a successor; stopping, set under it, refuses new ones, so
	// a shutdown and a hand-over never overlap.
	handing  sync.Mutex
	stopping bool
}

// New opens the listeners, the watcher token, the store and the live matches; it serves nothing
// yet. On error everything it opened is closed.
func New(cfg Config, log *slog.Logger) (_ *Server, err error) {
	s := &Server{cfg: cfg, hub: cfg.Hub, stream: cfg.Stream, log: log, notify: handover.Notifier{Socket: cfg.Systemd.NotifySocket},
		readyC: make(chan struct{}), stopped: make(chan struct{}), errc: make(chan error, 1)}
	defer func() {
		if err != nil {
			s.close()
		}
	}()
	if s.lns, err = listen.Open(cfg.Listen, log); err != nil {
		return nil, err
	}
	if s.cfg.API.WatcherToken == "" {
		if s.cfg.API.WatcherToken, err = WatcherToken(cfg.TokenFile(), log); err != nil {
			return nil, err
		}
	}
	st, err := OpenStoreWith(cfg.StoreURL(), cfg.StoreMinReplicas)
	if err != nil {
		return nil, err // st may be a typed nil: not kept for close
	}
	s.st = st
	// bolt allows one process at a time: a SIGUSR2 hand-over releases it to the successor.
	if r, ok := st.(interface{ MinReplicas() int }); ok {
		log.Info("store: an append is acknowledged once replicated", "min_replicas", r.MinReplicas())
	}
	if u, _ := store.ParseURL(cfg.StoreURL()); u != nil && u.Scheme == "bolt" {
		s.rel = handover.NewReleasable(s.st, func() (store.Store, error) { return OpenStore(cfg.StoreURL()) })
		s.st = s.rel
	}
	if s.reg, err = live.Open(context.Background(), s.st, live.Config{Hub: cfg.Hub, MaxAhead: cfg.MaxClockSkew}, log); err != nil {
		return nil, err
	}
	if s.streams, err = stream.New(cfg.Stream, s.reg, log); err != nil {
		return nil, err
	}
	if cfg.TLS.Enabled() {
		c, err := certs.Load(cfg.TLS.Cert, cfg.TLS.Key)
		if err != nil {
			return nil, err
		}
		s.cert = certs.New(c)
		s.streams.SetTLS(tlsrecord.ServerConfig(s.cert.Config()))
	}
	s.handler = api.New(s.cfg.API, s.reg, s.lns, log, s.ready.Load)
	// Server-Sent Events connections arrive on the API port and are served by the stream layer;
	// this counts them.
	s.lns.Events = &listen.Port{Listener: s.lns.API}
	s.handler.Streams = func(fd int, id string, after uint64, resume bool, head []byte) error {
		return s.streams.AttachSSE(fd, s.lns.Events, id, after, resume, head)
	}
	if _, shared := s.st.(store.Presence); shared {
		s.handler.Cluster = func() []store.NodeLoad {
			if p := s.cluster.Load(); p != nil {
				return *p
			}
			return nil
		}
	}
	s.handler.Metrics = fasthttpadaptor.NewFastHTTPHandler(promhttp.HandlerFor(metrics.New(s.reg, s.lns, s.streams, s.certExpiry()), promhttp.HandlerOpts{}))
	s.http = s.handler.Server()
	if s.lns.Admin != nil {
		s.handler.AdminElsewhere = true
		s.admin = s.handler.Server()
		s.admin.Handler = s.handler.ServeAdmin
	}
	return s, nil
}

// close releases what New opened, for a Server that never started.
func (s *Server) close() {
	if s.streams != nil {
		s.streams.Shutdown(context.Background())
	}
	if s.st != nil {
		s.st.Close()
	}
	if s.lns != nil {
		s.lns.Close()
	}
}

// Start serves: the previous process's clients first (a hand-over), then the listeners and the
// periodic loops; it reports READY=1 once all of them run. The loops stop at Shutdown or when ctx
// ends (ctx does not stop the Server: Shutdown does).
func (s *Server) Start(ctx context.Context) error {
	if s.lns.Parcel != nil { // the previous process's clients: serve them before saying READY
		conns, err := handover.Unpack(s.lns.Parcel)
		s.lns.Parcel = nil
		if err != nil {
			s.log.Error("hand-over: the previous process's clients are lost", "err", err)
			s.streams.HandoverFailures.Add(1)
		} else {
			resumed, closed := s.streams.Adopt(conns, append(slices.Clone(s.lns.Stream), s.lns.Events))
			s.log.Info("hand-over: clients taken over", "resumed", resumed, "closed_at_once", closed)
		}
		s.notifier().Notify(handover.Unstored)
	}
	// The loops first: once anything serves, a failure may call stop, which cancels them.
	s.startLoops(ctx)
	s.serveStreams()
	s.serving.Add(1)
	go func() {
		defer s.serving.Done()
		if err := s.http.Serve(s.apiListener()); err != nil {
			s.failed(fmt.Errorf("api: %w", err))
		}
	}()
	if s.admin != nil {
		s.serving.Add(1)
		go func() {
			defer s.serving.Done()
			if err := s.admin.Serve(s.lns.Admin); err != nil {
				s.failed(fmt.Errorf("admin: %w", err))
			}
		}()
	}
	go func() { // a listener that fails stops the daemon
		select {
		case err := <-s.errc:
			s.stop(context.Background(), fmt.Errorf("serve: %w", err), false)
		case <-s.stopped:
		}
	}()

	ports := make([]string, len(s.lns.Stream))
	for i, p := range s.lns.Stream {
		ports[i] = p.Addr().String()
	}
	s.ready.Store(true)
	close(s.readyC)
	s.log.Info("serving", "api", s.lns.API.Addr().String(), "stream", strings.Join(ports, ","),
		"store", s.cfg.StoreShown(), "matches", len(s.reg.List()), "socket_activated", s.lns.Activated)
	// READY=1 only now: listeners are up and the store has answered (live.Open read it).
	s.notifier().Notify("READY=1\n" + status(s.lns, s.reg, s.cfg))
	if s.cfg.Systemd.Successor {
		// The socket was the predecessor's, which only waited for READY=1: forget it, so this
		// process is not taken for one run by systemd (and can hand over on SIGUSR2 in turn).
		s.notifyMu.Lock()
		s.notify = handover.Notifier{}
		s.notifyMu.Unlock()
	}
	return nil
}

// certExpiry is when the certificate in use expires, for the metrics; nil without one.
func (s *Server) certExpiry() func() time.Time {
	if s.cert == nil {
		return nil
	}
	return s.cert.NotAfter
}

// apiListener is the API's listener, in TLS when the API speaks HTTPS. Only the server's view is
// wrapped: the socket handed to a successor is the plain one.
func (s *Server) apiListener() net.Listener {
	if s.cert == nil || !s.cfg.TLS.API {
		return s.lns.API
	}
	cfg := s.cert.Config()
	cfg.NextProtos = []string{"http/1.1"}
	return tls.NewListener(s.lns.API, cfg)
}

func (s *Server) notifier() handover.Notifier {
	s.notifyMu.Lock()
	defer s.notifyMu.Unlock()
	return s.notify
}

func (s *Server) failed(err error) {
	select {
	case s.errc <- err:
	default: // one error is enough to stop
	}
}

func (s *Server) serveStreams() {
	for _, p := range s.lns.Stream {
		s.serving.Add(1)
		go func() {
			defer s.serving.Done()
			if err := s.streams.Serve(p); err != nil {
				s.failed(err)
			}
		}()
	}
}

// Addrs are the addresses the API and the stream ports listen on (the ports chosen by the kernel
// when the configuration asked for port 0).
func (s *Server) Addrs() (apiAddr net.Addr, streams []net.Addr) {
	for _, p := range s.lns.Stream {
		streams = append(streams, p.Addr())
	}
	return s.lns.API.Addr(), streams
}

// AdminAddr is the admin listener's address; nil when there is none.
func (s *Server) AdminAddr() net.Addr {
	if s.lns.Admin == nil {
		return nil
	}
	return s.lns.Admin.Addr()
}

// Ready is closed once the Server serves.
func (s *Server) Ready() <-chan struct{} { return s.readyC }

// ErrUnderSystemd refuses HandOver in a service run by systemd: `systemctl restart` hands the
// clients over through the fd store (--keep-clients) and systemd must know the main pid.
var ErrUnderSystemd = errors.New("under systemd, `systemctl restart matchstream` hands the clients over (--keep-clients)")

// HandOver starts a successor process and gives it the listeners and every client; once the
// successor is ready this Server stops (Wait returns nil). If it fails, this Server goes on
// serving and the error says why.
func (s *Server) HandOver() error {
	if s.notifier().Enabled() {
		return ErrUnderSystemd
	}
	if err := s.toSuccessor(); err != nil {
		s.streams.HandoverFailures.Add(1)
		return err
	}
	s.stop(context.Background(), nil, false)
	return nil
}

// toSuccessor is HandOver's part that must not overlap a shutdown.
func (s *Server) toSuccessor() error {
	s.handing.Lock()
	defer s.handing.Unlock()
	if s.stopping {
		return errors.New("the server is stopping")
	}
	var fds []handover.Inherit
	for _, p := range s.lns.Stream {
		name := listen.FDNameStream
		if p.TLS {
			name = listen.FDNameStreamTLS
		}
		fds = append(fds, handover.Inherit{Conn: p.Listener.(syscall.Conn), Name: name})
	}
	fds = append(fds, handover.Inherit{Conn: s.lns.API.(syscall.Conn), Name: listen.FDNameAPI})
	if s.lns.Admin != nil {
		fds = append(fds, handover.Inherit{Conn: s.lns.Admin.(syscall.Conn), Name: listen.FDNameAdmin})
	}
	if err := handover.ToSuccessor(s.streams, fds, s.rel, s.drain(), s.log); err != nil {
		s.streams.ResumeAccepting()
		s.serveStreams()
		return err
	}
	return nil
}

func (s *Server) drain() time.Duration { return min(2*time.Second, s.cfg.ShutdownTimeout/2) }

// Shutdown stops the Server and waits until it has, at most until ctx ends and the configured
// shutdown timeout. Under systemd with KeepClients the clients go to the fd store for the next
// start; otherwise every client is told the server stops.
func (s *Server) Shutdown(ctx context.Context) error {
	s.stop(ctx, nil, s.cfg.KeepClients && s.notifier().Enabled())
	return s.Wait()
}

// Wait blocks until the Server has stopped and returns why, if it failed.
func (s *Server) Wait() error {
	<-s.stopped
	return s.err
}

// stop runs the shutdown once: stop the loops, stop accepting, tell every client, let the notices
// go out, then close what is left.
func (s *Server) stop(ctx context.Context, cause error, keep bool) {
	s.stopOnce.Do(func() {
		defer close(s.stopped)
		s.err = cause
		s.handing.Lock() // waits for a hand-over in progress to finish
		s.stopping = true
		s.handing.Unlock()
		if keep {
			handover.ToSystemd(s.streams, s.notifier(), s.drain(), s.log)
		}
		if s.stopLoops != nil {
			s.stopLoops()
		}
		s.loops.Wait()
		s.notifier().Notify("STOPPING=1")
		s.log.Info("shutting down", "connections", connections(s.lns))
		s.ready.Store(false)
		s.streams.StopAccepting()
		s.lns.Close()
		sctx, cancel := context.WithTimeout(ctx, s.cfg.ShutdownTimeout)
		defer cancel()
		s.handler.Stop() // long-polls return now rather than hold the shutdown
		s.http.ShutdownWithContext(sctx)
		if s.admin != nil {
			s.admin.ShutdownWithContext(sctx)
		}
		s.reg.Shutdown()
		drainUntil(sctx, s.lns, 2*time.Second)
		if err := s.streams.Shutdown(sctx); err != nil {
			s.log.Warn("client connections still open at shutdown timeout", "err", err)
		}
		s.serving.Wait()
		s.reg.Stats.WaitFlushes() // every connection is closed: their writers are finishing
		s.st.Close()
	})
}
