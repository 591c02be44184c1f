// Package daemon wires the parts of `matchstream serve`: store, live matches, listeners, the stream
// connection layer and the API. It owns every goroutine it starts and stops them on shutdown. The
// subpackages each do one thing; nothing here reads flags, env or files except the watcher token
// and store path the Config names.
package daemon

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/valyala/fasthttp/fasthttpadaptor"

	"matchstream/daemon/api"
	"matchstream/daemon/handover"
	"matchstream/daemon/listen"
	"matchstream/daemon/live"
	"matchstream/daemon/metrics"
	"matchstream/daemon/store"
	"matchstream/daemon/store/bolt"
	"matchstream/daemon/store/redis"
	"matchstream/daemon/stream"
)

// OpenStore opens the store a URL names.
func OpenStore(raw string) (store.Store, error) {
	u, err := store.ParseURL(raw)
	if err != nil {
		return nil, err
	}
	switch u.Scheme {
	case "bolt":
		return bolt.Open(boltPath(u), 5*time.Second)
	case "redis", "rediss":
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		return redis.Open(ctx, raw)
	default:
		return nil, fmt.Errorf("store %s: the %s backend is not in this build yet (use bolt:// or redis://)", store.Shown(raw), u.Scheme)
	}
}

// ProbeStore checks the store a URL names without changing it (for doctor).
func ProbeStore(raw string) (string, error) {
	u, err := store.ParseURL(raw)
	if err != nil {
		return "", err
	}
	if u.Scheme == "bolt" {
		return bolt.Probe(boltPath(u), time.Second)
	}
	s, err := OpenStore(raw)
	if err != nil {
		return "", err
	}
	defer s.Close()
	return "answers", nil
}

func boltPath(u *url.URL) string {
	if u.Host != "" { // bolt://relative/path.db
		return filepath.Join(u.Host, u.Path)
	}
	return u.Path
}

// WatcherToken returns the token in path, creating the file with a random token when it does not
// exist, so a fresh install can post events without a manual step and the token never sits in a
// unit file or a process list.
func WatcherToken(path string, log *slog.Logger) (string, error) {
	b, err := os.ReadFile(path)
	if err == nil {
		tok := strings.TrimSpace(string(b))
		if tok == "" {
			return "", fmt.Errorf("watcher token file %s is empty", path)
		}
		return tok, nil
	}
	if !errors.Is(err, os.ErrNotExist) {
		return "", fmt.Errorf("read watcher token: %w", err)
	}
	raw := make([]byte, 24)
	rand.Read(raw)
	tok := hex.EncodeToString(raw)
	if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
		return "", fmt.Errorf("create watcher token: %w", err)
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o640)
	if err != nil {
		return "", fmt.Errorf("create watcher token: %w", err)
	}
	_, err = f.WriteString(tok + "\n")
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return "", fmt.Errorf("create watcher token: %w", err)
	}
	log.Info("generated a watcher token", "file", path)
	return tok, nil
}

// Run serves until ctx is cancelled, then shuts down in order: stop accepting, close clients, close
// the store. It returns an error only if the daemon could not start or failed while serving.
func Run(ctx context.Context, cfg Config, log *slog.Logger) error {
	// The listeners first: a daemon that cannot have its ports (another one holds them) stops
	// before it touches a store or writes a token.
	lns, err := listen.Open(cfg.Listen, log)
	if err != nil {
		return err
	}
	defer lns.Close()
	if cfg.API.WatcherToken == "" {
		tok, err := WatcherToken(cfg.TokenFile(), log)
		if err != nil {
			return err
		}
		cfg.API.WatcherToken = tok
	}
	st, err := OpenStore(cfg.StoreURL())
	if err != nil {
		return err
	}
	// bolt allows one process at a time: a SIGUSR2 hand-over releases it to the successor.
	var rel *releasable
	if u, _ := store.ParseURL(cfg.StoreURL()); u != nil && u.Scheme == "bolt" {
		rel = &releasable{url: cfg.StoreURL(), s: st}
		st = rel
	}
	defer st.Close()
	reg, err := live.Open(ctx, st, live.Config{Hub: cfg.Hub, MaxAhead: cfg.MaxClockSkew}, log)
	if err != nil {
		return err
	}

	var ready atomic.Bool
	streams, err := stream.New(cfg.Stream, reg, log)
	if err != nil {
		return err
	}
	handler := api.New(cfg.API, reg, lns, log, ready.Load)
	// Server-Sent Events connections arrive on the API port and are served by the stream layer;
	// this counts them.
	lns.Events = &listen.Port{Listener: lns.API}
	handler.Streams = func(fd int, id string, after uint64, resume bool, head []byte) error {
		return streams.AttachSSE(fd, lns.Events, id, after, resume, head)
	}
	var cluster atomic.Pointer[[]store.NodeLoad]
	presence, shared := st.(store.Presence)
	if shared {
		handler.Cluster = func() []store.NodeLoad {
			if p := cluster.Load(); p != nil {
				return *p
			}
			return nil
		}
	}
	handler.Metrics = fasthttpadaptor.NewFastHTTPHandler(promhttp.HandlerFor(metrics.New(reg, lns, streams), promhttp.HandlerOpts{}))
	httpSrv := handler.Server()

	if lns.Parcel != nil { // the previous process's clients: serve them before saying READY
		conns, err := handover.Unpack(lns.Parcel)
		lns.Parcel = nil
		if err != nil {
			log.Error("hand-over: the previous process's clients are lost", "err", err)
		} else {
			resumed, closed := streams.Adopt(conns, append(slices.Clone(lns.Stream), lns.Events))
			log.Info("hand-over: clients taken over", "resumed", resumed, "closed_at_once", closed)
		}
		daemon.SdNotify(false, handover.Unstored)
	}

	var wg sync.WaitGroup
	errc := make(chan error, 1)
	serveStreams := func() {
		for _, p := range lns.Stream {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if err := streams.Serve(p); err != nil {
					select {
					case errc <- err:
					default: // one error is enough to stop
					}
				}
			}()
		}
	}
	serveStreams()
	wg.Add(1)
	go func() {
		defer wg.Done()
		if err := httpSrv.Serve(lns.API); err != nil {
			select {
			case errc <- fmt.Errorf("api: %w", err):
			default:
			}
		}
	}()

	ports := make([]string, len(lns.Stream))
	for i, p := range lns.Stream {
		ports[i] = p.Addr().String()
	}
	ready.Store(true)
	log.Info("serving", "api", lns.API.Addr().String(), "stream", strings.Join(ports, ","),
		"store", cfg.StoreShown(), "matches", len(reg.List()), "socket_activated", lns.Activated)
	// READY=1 only now: listeners are up and the store has answered (live.Open read it).
	daemon.SdNotify(false, "READY=1\n"+status(lns, reg, cfg))
	if os.Getenv(envSuccessor) != "" {
		// NOTIFY_SOCKET was the predecessor's, which only waited for READY=1: forget it, so this
		// process is not taken for one run by systemd (and can hand over on SIGUSR2 in turn).
		os.Unsetenv("NOTIFY_SOCKET")
		os.Unsetenv(envSuccessor)
	}

	loops, stopLoops := context.WithCancel(ctx)
	var loopsWG sync.WaitGroup
	if f, ok := st.(store.Follower); ok { // a shared store: follow what the other nodes append
		loopsWG.Add(1)
		go func() { defer loopsWG.Done(); reg.Follow(loops, f, time.Second) }()
	}
	if shared {
		loopsWG.Add(1)
		go func() { defer loopsWG.Done(); announceLoop(loops, presence, &cluster, lns, cfg, log) }()
	}
	loopsWG.Add(3)
	go func() { // keeps `systemctl status` current
		defer loopsWG.Done()
		every(loops, 5*time.Second, func() { daemon.SdNotify(false, status(lns, reg, cfg)) })
	}()
	go func() { defer loopsWG.Done(); every(loops, cfg.SSEHeartbeat, reg.Heartbeat) }()
	loopsWG.Add(1)
	go func() { // finished matches leave memory; the store keeps them
		defer loopsWG.Done()
		every(loops, max(time.Second, min(time.Minute, cfg.KeepEnded/4)), func() {
			if n := reg.Evict(cfg.KeepEnded, time.Now()); n > 0 {
				log.Debug("finished matches left memory", "matches", n)
			}
		})
	}()
	go func() { defer loopsWG.Done(); watchdogLoop(loops, reg, log) }()

	usr2 := make(chan os.Signal, 1)
	signal.Notify(usr2, syscall.SIGUSR2)
	defer signal.Stop(usr2)
	drain := min(2*time.Second, cfg.ShutdownTimeout/2)
wait:
	for {
		select {
		case <-ctx.Done():
			if cfg.KeepClients && os.Getenv("NOTIFY_SOCKET") != "" {
				handOverToSystemd(streams, drain, log)
			}
		case err = <-errc:
			err = fmt.Errorf("serve: %w", err)
		case <-usr2:
			if os.Getenv("NOTIFY_SOCKET") != "" {
				log.Warn("SIGUSR2 ignored: under systemd, `systemctl restart matchstream` hands the clients over (--keep-clients)")
				continue
			}
			if err := handOverToSuccessor(streams, lns, rel, drain, log); err != nil {
				log.Error("hand-over failed: this process goes on serving", "err", err)
				streams.ResumeAccepting()
				serveStreams()
				continue
			}
		}
		break wait
	}
	stopLoops()
	loopsWG.Wait()
	daemon.SdNotify(false, "STOPPING=1")
	log.Info("shutting down", "connections", connections(lns))
	ready.Store(false)
	// Drain: stop accepting, tell every client, let the notices go out, then close what is left.
	streams.StopAccepting()
	lns.Close()
	sctx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownTimeout)
	defer cancel()
	handler.Stop() // long-polls return now rather than hold the shutdown
	httpSrv.ShutdownWithContext(sctx)
	reg.Shutdown()
	drainUntil(sctx, lns, 2*time.Second)
	if serr := streams.Shutdown(sctx); serr != nil {
		log.Warn("client connections still open at shutdown timeout", "err", serr)
	}
	wg.Wait()
	return err
}

// connections counts the open client connections: the stream ports' and the event streams'.
func connections(lns *listen.Set) int64 {
	var n int64
	for _, p := range lns.Stream {
		n += p.Conns.Load()
	}
	if lns.Events != nil {
		n += lns.Events.Conns.Load()
	}
	return n
}

func status(lns *listen.Set, reg *live.Registry, cfg Config) string {
	return fmt.Sprintf("STATUS=%d connections on %d ports, %d live matches, target %d",
		connections(lns), len(lns.Stream), reg.LiveMatches(), cfg.TargetConnections)
}

// announceLoop tells the other nodes this node's load every 2 s (kept 6 s) and keeps their view for
// /connect; on the way out it removes this node at once.
func announceLoop(ctx context.Context, p store.Presence, view *atomic.Pointer[[]store.NodeLoad], lns *listen.Set, cfg Config, log *slog.Logger) {
	host := cfg.AdvertiseHost
	if host == "" && len(lns.Stream) > 0 {
		if a, ok := lns.Stream[0].Addr().(*net.TCPAddr); ok && !a.IP.IsUnspecified() {
			host = a.IP.String()
		} else {
			host, _ = os.Hostname()
		}
	}
	t := time.NewTicker(2 * time.Second)
	defer t.Stop()
	for {
		n := store.NodeLoad{ID: cfg.NodeID, Host: host, Ports: map[int]int64{}}
		for _, port := range lns.Stream {
			n.Ports[port.Number()] = port.Conns.Load()
		}
		if err := p.Announce(ctx, n, 6*time.Second); err != nil && ctx.Err() == nil {
			log.Warn("store: announcing this node", "err", err)
		}
		if nodes, err := p.Nodes(ctx); err == nil {
			others := nodes[:0]
			for _, o := range nodes {
				if o.ID != cfg.NodeID {
					others = append(others, o)
				}
			}
			view.Store(&others)
		}
		select {
		case <-ctx.Done():
			lctx, cancel := context.WithTimeout(context.Background(), time.Second)
			p.Leave(lctx, cfg.NodeID)
			cancel()
			return
		case <-t.C:
		}
	}
}

// every runs f every interval until ctx ends (never if interval is 0).
func every(ctx context.Context, interval time.Duration, f func()) {
	if interval <= 0 {
		return
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			f()
		}
	}
}

// watchdogLoop pings systemd's watchdog at half of WatchdogSec, but only while a probe of the real
// event loop (the match locks) passes: a wedged daemon stops pinging and systemd restarts it.
func watchdogLoop(ctx context.Context, reg *live.Registry, log *slog.Logger) {
	interval, err := daemon.SdWatchdogEnabled(false)
	if err != nil || interval <= 0 {
		return
	}
	t := time.NewTicker(interval / 2)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			pctx, cancel := context.WithTimeout(ctx, interval/4)
			err := reg.Probe(pctx)
			cancel()
			if err != nil {
				log.Error("health probe failed: not pinging the watchdog", "err", err)
				continue
			}
			daemon.SdNotify(false, "WATCHDOG=1")
		}
	}
}

// drainUntil waits, at most grace, for clients to read their shutdown notice and be closed.
func drainUntil(ctx context.Context, lns *listen.Set, grace time.Duration) {
	deadline := time.Now().Add(grace)
	for connections(lns) > 0 && time.Now().Before(deadline) && ctx.Err() == nil {
		time.Sleep(10 * time.Millisecond)
	}
}
