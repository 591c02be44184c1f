package daemon

import (
	"crypto/tls"
	"fmt"
	"os"
	"reflect"
	"time"

	"golang.org/x/sys/unix"

	"matchstream/daemon/certs"
)

// Reload applies a new configuration without dropping a client (SIGHUP, `systemctl reload`). The
// watcher token is read again, from the configuration or its file, and the token it replaces is
// accepted for WatcherTokenGrace more. The TLS certificate is read again: new handshakes present
// it, established connections keep theirs. The stream limits (handshake-timeout, max-line,
// conn-rate, conn-burst, keepalive, send-buffer, welcome) apply to new connections, the client
// limits (client-queue, write-timeout) to the running hubs too. The settings that need new
// listeners or a new store, and the HTTP server's (max-body), keep their running values until the
// next restart, and the log says which. A configuration that does not load or validate is refused
// whole, with the reason, and the running one stays.
// systemd is told RELOADING=1, then READY=1 whatever the outcome: the service still serves.
func (s *Server) Reload(load func() (Config, error)) error {
	var ts unix.Timespec
	unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts)
	s.notifier().Notify(fmt.Sprintf("RELOADING=1\nMONOTONIC_USEC=%d", ts.Nano()/1000))
	defer func() { s.notifier().Notify("READY=1\n" + status(s.lns, s.reg, s.cfg)) }()
	next, err := load()
	if err == nil {
		err = next.Validate()
	}
	tok := next.API.WatcherToken
	if err == nil && tok == "" {
		// At start a missing file is made with a new token; here that would lock every watcher out
		// once the grace ends, so a file that went away refuses the reload instead.
		if _, serr := os.Stat(next.TokenFile()); serr != nil {
			err = fmt.Errorf("watcher token file: %w (the running token stays; write one to change it)", serr)
		} else {
			tok, err = WatcherToken(next.TokenFile(), s.log)
		}
	}
	var cert *tls.Certificate
	if err == nil && s.cert != nil && next.TLS.Enabled() {
		cert, err = certs.Load(next.TLS.Cert, next.TLS.Key) // a renewed certificate, or a new pair
	}
	if err != nil {
		s.log.Error("reload refused: the running configuration stays", "err", err)
		return fmt.Errorf("reload refused: %w", err)
	}
	if later := s.cfg.needRestart(next); len(later) > 0 {
		s.log.Warn("reload: these settings take effect at the next restart", "settings", later)
	}
	if next.Hub != s.hub {
		s.reg.SetHubLimits(next.Hub)
		s.log.Info("reload: client limits changed", "client_queue", next.Hub.QueueLimit, "write_timeout", next.Hub.WriteTimeout)
		s.hub = next.Hub
	}
	if next.Stream != s.stream {
		s.streams.SetLimits(next.Stream)
		s.log.Info("reload: stream limits changed", "handshake_timeout", next.Stream.HandshakeTimeout, "max_line", next.Stream.MaxLine,
			"conn_rate", next.Stream.ConnRate, "conn_burst", next.Stream.ConnBurst, "keepalive", next.Stream.KeepAlive,
			"send_buffer", next.Stream.SendBuffer, "welcome", next.Stream.Welcome)
		s.stream = next.Stream
	}
	if cert != nil {
		s.cert.Replace(cert)
		s.log.Info("reload: tls certificate read", "subject", cert.Leaf.Subject.String(),
			"not_after", cert.Leaf.NotAfter.UTC().Format(time.RFC3339))
	}
	if current, _ := s.handler.WatcherTokens(); tok != current {
		s.handler.SetWatcherToken(tok, next.WatcherTokenGrace)
		s.log.Info("reload: watcher token replaced", "old_token_accepted_for", next.WatcherTokenGrace)
	}
	s.log.Info("configuration reloaded")
	return nil
}

// needRestart names the settings of next that differ from c and that a reload does not apply
// (all but the watcher token, its grace, the client and stream limits, the certificate's files
// and the log level, which the CLI applies).
func (c Config) needRestart(next Config) []string {
	var out []string
	for _, f := range []struct {
		name      string
		was, will any
	}{
		{"api", c.Listen.API, next.Listen.API},
		{"admin", c.Listen.Admin, next.Listen.Admin},
		{"stream", c.Listen.Stream, next.Listen.Stream},
		{"stream-tls", c.Listen.StreamTLS, next.Listen.StreamTLS},
		{"api-tls", c.TLS.API && c.TLS.Enabled(), next.TLS.API && next.TLS.Enabled()},
		{"tls-cert (on a daemon started without one)", c.TLS.Enabled(), next.TLS.Enabled()},
		{"clear-posts", c.API.ClearPosts, next.API.ClearPosts},
		{"backlog", c.Listen.Backlog, next.Listen.Backlog},
		{"store", c.StoreURL(), next.StoreURL()},
		{"state-dir", c.StateDir, next.StateDir},
		{"node-id", c.NodeID, next.NodeID},
		{"advertise-host", c.AdvertiseHost, next.AdvertiseHost},
		{"store-min-replicas", c.StoreMinReplicas, next.StoreMinReplicas},
		{"target-connections", c.TargetConnections, next.TargetConnections},
		{"keep-clients", c.KeepClients, next.KeepClients},
		{"gc-percent", c.GCPercent, next.GCPercent},
		{"shutdown-timeout", c.ShutdownTimeout, next.ShutdownTimeout},
		{"sse-heartbeat", c.SSEHeartbeat, next.SSEHeartbeat},
		{"keep-ended", c.KeepEnded, next.KeepEnded},
		{"max-clock-skew", c.MaxClockSkew, next.MaxClockSkew},
		{"max-body", c.API.MaxBodySize, next.API.MaxBodySize},
	} {
		if !reflect.DeepEqual(f.was, f.will) {
			out = append(out, f.name)
		}
	}
	return out
}

// DefaultWatcherTokenGrace is how long a reload keeps accepting the watcher token it replaced.
const DefaultWatcherTokenGrace = 10 * time.Minute
