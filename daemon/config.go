package daemon

import (
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"matchstream/daemon/api"
	"matchstream/daemon/hub"
	"matchstream/daemon/listen"
	"matchstream/daemon/store"
	"matchstream/daemon/stream"
)

// Config is the whole daemon configuration: one struct, built once by the CLI from flags,
// MATCHSTREAM_* environment and the config file, then validated and passed down section by section.
type Config struct {
	StateDir         string // holds the bolt store and the generated watcher token
	Store            string // bolt:///path or redis://host:port/db; empty = bolt under StateDir
	WatcherTokenFile string // read (or created with a random token) when WatcherToken is empty
	// WatcherTokenGrace: after a reload replaced the watcher token, the old one is accepted this
	// much longer, so watchers can be moved to the new one without a refused post.
	WatcherTokenGrace time.Duration
	ShutdownTimeout   time.Duration
	// TargetConnections is what the host is tuned and checked for (install, doctor, STATUS=).
	TargetConnections int
	// NodeID names this daemon among the nodes sharing a store; AdvertiseHost is the host other
	// nodes' /connect sends clients to (default: the stream address, or this host's name when the
	// stream ports listen on every address).
	NodeID        string
	AdvertiseHost string
	// KeepClients: on SIGTERM under systemd, hand the client connections to the fd store so the
	// next start of the service goes on serving them (the unit needs FileDescriptorStoreMax=).
	// Without it, or outside systemd, SIGTERM tells every client the server stops. SIGUSR2 hands
	// them to a successor process whatever this says (outside systemd).
	KeepClients bool
	// SSEHeartbeat is how often Server-Sent Events clients get a comment line, so proxies and NATs
	// do not time an idle stream out.
	SSEHeartbeat time.Duration
	// KeepEnded is how long a finished match without subscribers keeps its history and rendered
	// events in memory; after that they are read from the store when asked for.
	KeepEnded time.Duration
	// MaxClockSkew is how far ahead of this server's clock a posted event may be stamped.
	MaxClockSkew time.Duration
	// StoreMinReplicas: a Redis store acknowledges a post once that many replicas have it (WAIT);
	// -1: 1 when the primary has a replica at start, else 0.
	StoreMinReplicas int
	// GCPercent is the Go garbage collector's target (GOGC) for the daemon process, applied by the
	// CLI unless GOGC is set: the heap may grow this far past what is live before a collection.
	// An idle connection is a few hundred bytes that live for hours, so the headroom is much of
	// what a connection costs: 50 holds 19,000 at 0.49-0.53 KB each where 100 took 0.61-0.66 KB,
	// for a fan-out perhaps 5% slower, within this VM's noise (docs/performance.md).
	GCPercent int

	// Systemd is what the service manager passed this process, read from the environment once by
	// the CLI; zero outside systemd.
	Systemd Systemd

	// TLS is the certificate the TLS stream ports and the HTTPS API present.
	TLS TLS

	Listen listen.Config
	Stream stream.Config
	Hub    hub.Config
	API    api.Config
}

// TLS is where the daemon's certificate is, and whether the API speaks HTTPS with it.
type TLS struct {
	Cert, Key string // PEM certificate chain and private key; "" for none
	// API: the API port speaks HTTPS when a certificate is set (false: plain HTTP, e.g. behind a
	// TLS-terminating proxy on this host).
	API bool
}

// Enabled reports whether a certificate is configured.
func (t TLS) Enabled() bool { return t.Cert != "" }

// Systemd is this process's side of sd_notify(3) and the watchdog.
type Systemd struct {
	NotifySocket string        // NOTIFY_SOCKET: "" outside systemd
	Watchdog     time.Duration // WatchdogSec= for this process; 0: no watchdog
	// Successor: started by a predecessor's SIGUSR2 hand-over, whose socket NotifySocket is; it
	// waits for READY=1 only and is forgotten after it.
	Successor bool
}

// Default is the configuration of a single node out of the box (DESIGN.md §6).
func Default() Config {
	streams, _ := listen.ParseRange(DefaultStream)
	return Config{
		StateDir:          DefaultStateDir,
		TargetConnections: 1_000_000,
		ShutdownTimeout:   10 * time.Second,
		WatcherTokenGrace: DefaultWatcherTokenGrace,
		SSEHeartbeat:      15 * time.Second,
		KeepEnded:         10 * time.Minute,
		MaxClockSkew:      5 * time.Minute,
		StoreMinReplicas:  -1,
		GCPercent:         50,
		TLS:               TLS{API: true},
		Listen: listen.Config{API: "127.0.0.1:8888", Stream: streams, Backlog: 65535,
			SomaxconnPath: "/proc/sys/net/core/somaxconn"},
		Stream: stream.Config{HandshakeTimeout: 10 * time.Second, MaxLine: 1024, KeepAlive: 60 * time.Second, ConnBurst: 20,
			SendBuffer: stream.DefaultSendBuffer},
		Hub: hub.Config{QueueLimit: 64, WriteTimeout: 30 * time.Second},
		API: api.Config{MaxBodySize: 1 << 20},
	}
}

// Defaults a few flags need as text.
const (
	DefaultStream = "127.0.0.1:9000-9007"
	// DefaultAdmin is the admin listener `install` configures; a bare `serve` has none, so two
	// daemons on one host (tests, several nodes) do not fight over it.
	DefaultAdmin    = "127.0.0.1:8889"
	DefaultStateDir = "/var/lib/matchstream"
)

// StoreURL is the store to open: Store, or the bolt file under StateDir.
func (c *Config) StoreURL() string {
	if c.Store != "" {
		return c.Store
	}
	return "bolt://" + filepath.Join(c.StateDir, "matchstream.db")
}

// StoreShown is the store URL with any password hidden, for logs and printed configuration.
func (c *Config) StoreShown() string { return store.Shown(c.StoreURL()) }

// TokenFile is where the watcher token is read from (or generated into).
func (c *Config) TokenFile() string {
	if c.WatcherTokenFile != "" {
		return c.WatcherTokenFile
	}
	return filepath.Join(c.StateDir, "watcher.token")
}

// Validate reports every problem at once.
func (c *Config) Validate() error {
	var errs []error
	bad := func(format string, a ...any) { errs = append(errs, fmt.Errorf(format, a...)) }
	if c.TargetConnections < 1 || c.TargetConnections > 100_000_000 {
		bad("target-connections: %d is outside 1-100000000", c.TargetConnections)
	}
	if c.WatcherTokenGrace < 0 || c.WatcherTokenGrace > 7*24*time.Hour {
		bad("watcher-token-grace: %s is outside 0-168h", c.WatcherTokenGrace)
	}
	if c.StateDir == "" {
		bad("state-dir: must not be empty")
	}
	if _, err := store.ParseURL(c.StoreURL()); err != nil {
		errs = append(errs, err)
	}
	if len(c.Listen.Stream)+len(c.Listen.StreamTLS) == 0 {
		bad("stream: at least one port is needed")
	}
	if (c.TLS.Cert == "") != (c.TLS.Key == "") {
		bad("tls-cert and tls-key go together: both or neither")
	}
	if len(c.Listen.StreamTLS) > 0 && !c.TLS.Enabled() {
		bad("stream-tls: TLS ports need a certificate (--tls-cert and --tls-key)")
	}
	if c.Listen.API == "" {
		bad("api: must not be empty")
	}
	seen := map[string]bool{c.Listen.API: true}
	for _, a := range append(slices.Clone(c.Listen.Stream), c.Listen.StreamTLS...) {
		if seen[a] {
			bad("stream: %s is used twice (or is also the API address)", a)
		}
		seen[a] = true
	}
	if a := c.Listen.Admin; a != "" {
		if _, _, err := net.SplitHostPort(a); err != nil {
			bad("admin: %q is not host:port (or \"\" for no admin listener)", a)
		} else if seen[a] && !strings.HasSuffix(a, ":0") {
			bad("admin: %s is also the API or a stream address", a)
		}
	}
	if c.Listen.Backlog < 1 || c.Listen.Backlog > 1<<20 {
		bad("backlog: %d is outside 1-1048576", c.Listen.Backlog)
	}
	if c.Stream.HandshakeTimeout < 100*time.Millisecond {
		bad("handshake-timeout: %s is below 100ms", c.Stream.HandshakeTimeout)
	}
	if c.Stream.MaxLine < 64 || c.Stream.MaxLine > 64<<10 {
		bad("max-line: %d is outside 64-65536 bytes", c.Stream.MaxLine)
	}
	if c.Hub.QueueLimit < 2 || c.Hub.QueueLimit > 1<<16 {
		bad("client-queue: %d is outside 2-65536 frames", c.Hub.QueueLimit)
	}
	if c.Stream.ConnRate < 0 || c.Stream.ConnBurst < 1 {
		bad("conn-rate must be 0 or more and conn-burst at least 1")
	}
	if c.Stream.SendBuffer < 0 || c.Stream.SendBuffer > 64<<20 {
		bad("send-buffer: %d is outside 0-67108864 bytes", c.Stream.SendBuffer)
	}
	if c.MaxClockSkew < time.Second || c.MaxClockSkew > 24*time.Hour {
		bad("max-clock-skew: %s is outside 1s-24h", c.MaxClockSkew)
	}
	if c.GCPercent != -1 && (c.GCPercent < 10 || c.GCPercent > 1000) {
		bad("gc-percent: %d is outside 10 to 1000 (or -1: no collection)", c.GCPercent)
	}
	if c.StoreMinReplicas < -1 || c.StoreMinReplicas > 16 {
		bad("store-min-replicas: %d is outside -1 (automatic) to 16", c.StoreMinReplicas)
	}
	if c.API.MaxBodySize < 4096 {
		bad("max-body: %d is below 4096 bytes", c.API.MaxBodySize)
	}
	return errors.Join(errs...)
}
