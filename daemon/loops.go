package daemon

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"sync/atomic"
	"time"

	"matchstream/daemon/handover"
	"matchstream/daemon/listen"
	"matchstream/daemon/live"
	"matchstream/daemon/store"
)

// startLoops starts the Server's periodic work, each loop on a goroutine in s.loops, all stopped by
// s.stopLoops.
func (s *Server) startLoops(ctx context.Context) {
	ctx, s.stopLoops = context.WithCancel(ctx)
	run := func(f func()) {
		s.loops.Add(1)
		go func() { defer s.loops.Done(); f() }()
	}
	if f, ok := s.st.(store.Follower); ok { // a shared store: follow what the other nodes append
		run(func() { s.reg.Follow(ctx, f, time.Second) })
	}
	if p, ok := s.st.(store.Presence); ok {
		run(func() { announceLoop(ctx, p, &s.cluster, s.lns, s.cfg, s.log) })
	}
	run(func() { // keeps `systemctl status` current
		every(ctx, 5*time.Second, func() { s.notifier().Notify(status(s.lns, s.reg, s.cfg)) })
	})
	run(func() { every(ctx, s.cfg.SSEHeartbeat, s.reg.Heartbeat) })
	run(func() { // finished matches leave memory; the store keeps them
		every(ctx, max(time.Second, min(time.Minute, s.cfg.KeepEnded/4)), func() {
			if n := s.reg.Evict(s.cfg.KeepEnded, time.Now()); n > 0 {
				s.log.Debug("finished matches left memory", "matches", n)
			}
		})
	})
	run(func() { watchdogLoop(ctx, s.cfg.Systemd.Watchdog, s.notifier, s.reg, s.log) })
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
			if port.TLS {
				continue // /connect balances plain clients over nodes; a TLS client is sent to a TLS port here
			}
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

// watchdogLoop pings systemd's watchdog at half of its interval (0: no watchdog), but only while a
// probe of the real event loop (the match locks) passes: a wedged daemon stops pinging and systemd
// restarts it.
func watchdogLoop(ctx context.Context, interval time.Duration, notifier func() handover.Notifier, reg *live.Registry, log *slog.Logger) {
	if interval <= 0 {
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
			notifier().Notify("WATCHDOG=1")
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
