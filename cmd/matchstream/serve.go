package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/debug"
	"slices"
	"syscall"

	sdaemon "github.com/coreos/go-systemd/v22/daemon"
	"github.com/urfave/cli/v2"
	"github.com/urfave/cli/v2/altsrc"

	"matchstream/daemon"
	"matchstream/daemon/certs"
	"matchstream/daemon/handover"
	"matchstream/daemon/listen"
)

const defaultConfigFile = "/etc/matchstream/matchstream.toml"

// defaultStateDir is systemd's StateDirectory= when running under it, else the packaged path.
func defaultStateDir() string {
	if d := os.Getenv("STATE_DIRECTORY"); d != "" {
		return filepath.SplitList(d)[0]
	}
	return daemon.DefaultStateDir
}

// daemonFlags are the configuration every command that acts for the daemon reads (serve, doctor,
// install): the same flags, environment and config file, so they always agree on ports and target.
func daemonFlags() []cli.Flag {
	d := daemon.Default()
	return append([]cli.Flag{
		&cli.StringFlag{Name: "config", Value: defaultConfigFile, EnvVars: env("config"),
			Usage: "TOML config file (keys are these flags' names); the default file may be absent"},
		altsrc.NewIntFlag(&cli.IntFlag{Name: "target-connections", Value: d.TargetConnections, EnvVars: env("target-connections"),
			Usage: "connections this host must carry: sizes the host tuning, LimitNOFILE and doctor's checks"}),
		altsrc.NewStringFlag(&cli.StringFlag{Name: "api", Value: d.Listen.API, EnvVars: env("api"),
			Usage: "host:port of the HTTP API"}),
		altsrc.NewStringFlag(&cli.StringFlag{Name: "admin", Value: d.Listen.Admin, EnvVars: env("admin"),
			Usage: "host:port of the admin listener, which serves /metrics, /debug/queues and /healthz; once it is set, the API shows " +
				"/metrics and /debug/* to this host only. Empty: none (install configures " + daemon.DefaultAdmin + ")"}),
		altsrc.NewStringFlag(&cli.StringFlag{Name: "stream", Value: daemon.DefaultStream, EnvVars: env("stream"),
			Usage: "stream listeners as host:first-last, one listener per port"}),
		altsrc.NewStringFlag(&cli.StringFlag{Name: "stream-tls", EnvVars: env("stream-tls"),
			Usage: "TLS 1.3 stream listeners as host:first-last (needs --tls-cert); the plain --stream ports stay for the original's clients. Empty: none"}),
		altsrc.NewStringFlag(&cli.StringFlag{Name: "tls-cert", EnvVars: env("tls-cert"),
			Usage: "PEM certificate chain the TLS stream ports and the HTTPS API present (certbot's fullchain.pem, say); a reload (SIGHUP) reads it again"}),
		altsrc.NewStringFlag(&cli.StringFlag{Name: "tls-key", EnvVars: env("tls-key"),
			Usage: "PEM private key of --tls-cert (certbot's privkey.pem)"}),
		altsrc.NewBoolFlag(&cli.BoolFlag{Name: "api-tls", Value: d.TLS.API, EnvVars: env("api-tls"),
			Usage: "with --tls-cert, the API port speaks HTTPS (false: plain HTTP, e.g. behind a TLS-terminating proxy on this host)"}),
		altsrc.NewBoolFlag(&cli.BoolFlag{Name: "clear-posts", EnvVars: env("clear-posts"),
			Usage: "accept watcher posts over plain HTTP from other hosts; without it a post comes over HTTPS or from this host, so the watcher token never crosses a network in clear text"}),
		altsrc.NewIntFlag(&cli.IntFlag{Name: "backlog", Value: d.Listen.Backlog, EnvVars: env("backlog"),
			Usage: "listen(2) backlog of self-bound sockets; the kernel caps it at net.core.somaxconn"}),
		altsrc.NewStringFlag(&cli.StringFlag{Name: "state-dir", Value: defaultStateDir(), EnvVars: env("state-dir"),
			Usage: "directory for the embedded store and the generated watcher token"}),
		altsrc.NewStringFlag(&cli.StringFlag{Name: "store", EnvVars: env("store"), DefaultText: "bolt://<state-dir>/matchstream.db",
			Usage: "store URL: bolt:///path/file.db (embedded, single node), or shared by nodes: redis://[user:pass@]host:port/db, rediss:// (TLS), redis+sentinel://host:port/db?master_name=NAME, redis+cluster://host:port"}),
		altsrc.NewIntFlag(&cli.IntFlag{Name: "store-min-replicas", Value: d.StoreMinReplicas, EnvVars: env("store-min-replicas"),
			DefaultText: "-1: 1 when the Redis primary has a replica, else 0",
			Usage:       "a post is acknowledged (201) only once this many Redis replicas have it (WAIT, up to 2 s; else 504), so a failover loses nothing acknowledged"}),
		altsrc.NewStringFlag(&cli.StringFlag{Name: "node-id", EnvVars: env("node-id"), DefaultText: "this host's name",
			Usage: "this daemon's name among the nodes sharing a Redis store"}),
		altsrc.NewStringFlag(&cli.StringFlag{Name: "advertise-host", EnvVars: env("advertise-host"),
			DefaultText: "the stream address, or this host's name", Usage: "the host other nodes' /connect sends clients to"}),
		altsrc.NewStringFlag(&cli.StringFlag{Name: "watcher-token", EnvVars: env("watcher-token"),
			Usage: "bearer token watchers must send to post events (prefer --watcher-token-file)"}),
		altsrc.NewStringFlag(&cli.StringFlag{Name: "watcher-token-file", EnvVars: env("watcher-token-file"),
			DefaultText: "<state-dir>/watcher.token",
			Usage:       "file holding the watcher token; created with a random token if absent. A reload (SIGHUP) reads it again"}),
		altsrc.NewDurationFlag(&cli.DurationFlag{Name: "watcher-token-grace", Value: d.WatcherTokenGrace, EnvVars: env("watcher-token-grace"),
			Usage: "after a reload replaced the watcher token, the old one is still accepted this long"}),
		altsrc.NewDurationFlag(&cli.DurationFlag{Name: "handshake-timeout", Value: d.Stream.HandshakeTimeout, EnvVars: env("handshake-timeout"),
			Usage: "a client that sends no connect line within this gets ERROR: timeout"}),
		altsrc.NewIntFlag(&cli.IntFlag{Name: "max-line", Value: d.Stream.MaxLine, EnvVars: env("max-line"),
			Usage: "longest connect line in bytes; longer gets ERROR: line_too_long"}),
		altsrc.NewIntFlag(&cli.IntFlag{Name: "client-queue", Value: d.Hub.QueueLimit, EnvVars: env("client-queue"),
			Usage: "frames queued per client before it is cut as a slow consumer"}),
		altsrc.NewDurationFlag(&cli.DurationFlag{Name: "write-timeout", Value: d.Hub.WriteTimeout, EnvVars: env("write-timeout"),
			Usage: "a client whose socket accepts nothing for this long is cut"}),
		altsrc.NewDurationFlag(&cli.DurationFlag{Name: "keepalive", Value: d.Stream.KeepAlive, EnvVars: env("keepalive"),
			Usage: "TCP keepalive idle time, to find half-open client connections (0 = off)"}),
		altsrc.NewFloat64Flag(&cli.Float64Flag{Name: "conn-rate", EnvVars: env("conn-rate"),
			Usage: "new connections per second allowed from one source address (0 = no limit); over it: ERROR: rate_limited"}),
		altsrc.NewIntFlag(&cli.IntFlag{Name: "conn-burst", Value: 20, EnvVars: env("conn-burst"),
			Usage: "with --conn-rate: connections one address may open at once"}),
		altsrc.NewBoolFlag(&cli.BoolFlag{Name: "welcome", EnvVars: env("welcome"),
			Usage: "greet each stream client with the original's banner (\"Welcome to Match Stream. ...\") before its connect line; off because the original's own client reads its first line as a frame"}),
		altsrc.NewBoolFlag(&cli.BoolFlag{Name: "keep-clients", EnvVars: env("keep-clients"),
			Usage: "under systemd, SIGTERM leaves the clients in the fd store for the next start (needs FileDescriptorStoreMax= in the unit, as shipped) instead of telling them the server stops"}),
		altsrc.NewDurationFlag(&cli.DurationFlag{Name: "sse-heartbeat", Value: d.SSEHeartbeat, EnvVars: env("sse-heartbeat"),
			Usage: "how often Server-Sent Events clients get a comment line, so proxies do not time idle streams out (0 = never)"}),
		altsrc.NewDurationFlag(&cli.DurationFlag{Name: "keep-ended", Value: d.KeepEnded, EnvVars: env("keep-ended"),
			Usage: "how long a finished match without subscribers keeps its events in memory; after that they are read from the store"}),
		altsrc.NewDurationFlag(&cli.DurationFlag{Name: "max-clock-skew", Value: d.MaxClockSkew, EnvVars: env("max-clock-skew"),
			Usage: "how far ahead of this server's clock a posted event's \"at\" may be; later ones are refused (400), since events never go back in time"}),
		altsrc.NewIntFlag(&cli.IntFlag{Name: "send-buffer", Value: d.Stream.SendBuffer, EnvVars: env("send-buffer"),
			Usage: "fixed SO_SNDBUF per client socket in bytes, the kernel doubles it; bounds what a client that stops reading pins before it is cut (0 = kernel autotuning up to tcp_wmem, which let stalled clients absorb megabytes)"}),
		altsrc.NewIntFlag(&cli.IntFlag{Name: "gc-percent", Value: d.GCPercent, EnvVars: env("gc-percent"),
			Usage: "the Go collector's target (as GOGC, which wins when set): heap growth past what is live before a collection; lower holds idle connections in less memory for a little more CPU"}),
		altsrc.NewIntFlag(&cli.IntFlag{Name: "max-body", Value: d.API.MaxBodySize, EnvVars: env("max-body"),
			Usage: "largest API request body in bytes"}),
	}, logFlags()...)
}

func serveCommand() *cli.Command {
	flags := append(daemonFlags(), &cli.BoolFlag{Name: "check", Usage: "validate the configuration, print it and exit"})
	return &cli.Command{
		Name:  "serve",
		Usage: "run the daemon: stream ports, HTTP API, embedded store",
		Description: "Holds client TCP connections on the stream ports and fans match events out to them.\n" +
			"Under systemd socket activation the listeners come from matchstream.socket (fds named\n" +
			"\"stream\") and matchstream-api.socket (\"api\"); otherwise serve binds them itself.\n" +
			"SIGINT/SIGTERM shut it down cleanly: every client is told the server stops. With --keep-clients\n" +
			"under systemd, SIGTERM instead leaves the clients in systemd's fd store and the next start goes on\n" +
			"serving them (systemctl restart drops nobody). Outside systemd, SIGUSR2 starts a successor (the\n" +
			"binary now at the same path, same arguments), hands it the listeners and every client, and exits\n" +
			"once it is ready; if the successor fails, this process goes on serving.",
		Flags:  flags,
		Before: withConfigFile(flags),
		Action: func(c *cli.Context) error {
			cfg, err := configFrom(c)
			if err != nil {
				return err
			}
			if c.Bool("check") {
				if cfg.TLS.Enabled() {
					if _, err := certs.Load(cfg.TLS.Cert, cfg.TLS.Key); err != nil {
						return failure(err, "--tls-cert and --tls-key: a PEM chain and its key, readable by this user")
					}
				}
				admin := cfg.Listen.Admin
				if admin == "" {
					admin = "none"
				}
				fmt.Fprintf(c.App.Writer, "configuration OK\napi %s\nadmin %s\nstream %d ports %s..%s\nbacklog %d\nstore %s\nwatcher token file %s\n",
					cfg.Listen.API, admin, len(cfg.Listen.Stream), cfg.Listen.Stream[0], cfg.Listen.Stream[len(cfg.Listen.Stream)-1],
					cfg.Listen.Backlog, cfg.StoreShown(), cfg.TokenFile())
				if n := len(cfg.Listen.StreamTLS); n > 0 {
					fmt.Fprintf(c.App.Writer, "stream-tls %d ports %s..%s\n", n, cfg.Listen.StreamTLS[0], cfg.Listen.StreamTLS[n-1])
				}
				if cfg.TLS.Enabled() {
					fmt.Fprintf(c.App.Writer, "tls certificate %s, key %s, api https %v\n", cfg.TLS.Cert, cfg.TLS.Key, cfg.TLS.API)
				}
				return nil
			}
			level := new(slog.LevelVar)
			log, err := newLogger(c, c.App.ErrWriter, level)
			if err != nil {
				return err
			}
			cfg.Systemd, cfg.Listen.Inherited, cfg.Listen.Activated = systemdFromEnv()
			args := slices.Clone(os.Args)
			var nextLevel slog.Level
			reload := func() (daemon.Config, error) {
				next, l, err := reparse(args)
				nextLevel = l
				return next, err
			}
			if err := serve(cfg, log, reload, func() { level.Set(nextLevel) }); err != nil {
				return failure(err, "")
			}
			return nil
		},
	}
}

// systemdFromEnv reads, once, what systemd (or a predecessor handing over) passed this process:
// the notify socket, the watchdog interval and the inherited descriptors. The activation variables
// are unset; nothing below the CLI reads the environment.
func systemdFromEnv() (daemon.Systemd, []*os.File, bool) {
	sd := daemon.Systemd{NotifySocket: os.Getenv("NOTIFY_SOCKET"), Successor: os.Getenv(handover.EnvSuccessor) != ""}
	if d, err := sdaemon.SdWatchdogEnabled(false); err == nil {
		sd.Watchdog = d
	}
	files, activated := listen.Activation()
	return sd, files, activated
}

// reparse builds the configuration again from args (this process's command line), the
// environment and the config file, as at start: what a reload applies. It also returns the log
// level they ask for.
func reparse(args []string) (cfg daemon.Config, level slog.Level, err error) {
	cmd := serveCommand()
	cmd.Action = func(c *cli.Context) error {
		if cfg, err = configFrom(c); err != nil {
			return err
		}
		level, err = logLevel(c)
		return err
	}
	app := &cli.App{Name: "matchstream", Commands: []*cli.Command{cmd}, Writer: io.Discard, ErrWriter: io.Discard,
		ExitErrHandler: func(*cli.Context, error) {}}
	if rerr := app.Run(args); err == nil {
		err = rerr
	}
	return cfg, level, err
}

// serve runs the daemon until a signal stops it. The signals are mapped here and nowhere else:
// SIGINT and SIGTERM shut it down (with --keep-clients under systemd, into the fd store), SIGUSR2
// hands the clients to a successor process, SIGHUP reloads the configuration (reload builds it;
// reloaded applies what is the CLI's, the log level, once the daemon has taken it).
func serve(cfg daemon.Config, log *slog.Logger, reload func() (daemon.Config, error), reloaded func()) error {
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM, syscall.SIGUSR2, syscall.SIGHUP)
	defer signal.Stop(sigs)
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(cfg.GCPercent) // process-wide, so here and not in the daemon package
	}
	srv, err := daemon.New(cfg, log)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if err := srv.Start(ctx); err != nil {
		srv.Shutdown(context.Background())
		return err
	}
	stopped := make(chan error, 1)
	go func() { stopped <- srv.Wait() }()
	for {
		select {
		case err := <-stopped:
			return err
		case sig := <-sigs:
			if sig == syscall.SIGHUP {
				if srv.Reload(reload) == nil { // refused, it has logged why; the service goes on
					reloaded()
				}
				continue
			}
			if sig != syscall.SIGUSR2 {
				return srv.Shutdown(context.Background())
			}
			if err := srv.HandOver(); errors.Is(err, daemon.ErrUnderSystemd) {
				log.Warn("SIGUSR2 ignored: " + err.Error())
			} else if err != nil {
				log.Error("hand-over failed: this process goes on serving", "err", err)
			}
		}
	}
}

// configFrom builds the one daemon Config from the parsed flags (which already merged env and file).
func configFrom(c *cli.Context) (daemon.Config, error) {
	cfg := daemon.Default()
	cfg.StateDir = c.String("state-dir")
	cfg.TargetConnections = c.Int("target-connections")
	cfg.NodeID, cfg.AdvertiseHost = c.String("node-id"), c.String("advertise-host")
	if cfg.NodeID == "" {
		cfg.NodeID, _ = os.Hostname()
	}
	if abs, err := filepath.Abs(cfg.StateDir); err == nil && cfg.StateDir != "" {
		cfg.StateDir = abs // logs and the store URL then name the real place
	}
	cfg.Store = c.String("store")
	cfg.StoreMinReplicas = c.Int("store-min-replicas")
	cfg.WatcherTokenFile = c.String("watcher-token-file")
	cfg.WatcherTokenGrace = c.Duration("watcher-token-grace")
	cfg.API.WatcherToken = c.String("watcher-token")
	cfg.API.MaxBodySize = c.Int("max-body")
	cfg.Listen.API = c.String("api")
	cfg.Listen.Admin = c.String("admin")
	cfg.Listen.Backlog = c.Int("backlog")
	cfg.Stream.HandshakeTimeout = c.Duration("handshake-timeout")
	cfg.Stream.MaxLine = c.Int("max-line")
	cfg.Stream.KeepAlive = c.Duration("keepalive")
	cfg.Stream.SendBuffer = c.Int("send-buffer")
	cfg.GCPercent = c.Int("gc-percent")
	cfg.Stream.Welcome = c.Bool("welcome")
	cfg.Stream.ConnRate, cfg.Stream.ConnBurst = c.Float64("conn-rate"), c.Int("conn-burst")
	cfg.Hub.QueueLimit = c.Int("client-queue")
	cfg.Hub.WriteTimeout = c.Duration("write-timeout")
	cfg.KeepClients = c.Bool("keep-clients")
	cfg.SSEHeartbeat = c.Duration("sse-heartbeat")
	cfg.KeepEnded = c.Duration("keep-ended")
	cfg.MaxClockSkew = c.Duration("max-clock-skew")
	streams, err := listen.ParseRange(c.String("stream"))
	if err != nil {
		return cfg, usageErr(err, "")
	}
	cfg.Listen.Stream = streams
	if v := c.String("stream-tls"); v != "" {
		if cfg.Listen.StreamTLS, err = listen.ParseRange(v); err != nil {
			return cfg, usageErr(fmt.Errorf("stream-tls: %w", err), "")
		}
	}
	cfg.TLS = daemon.TLS{Cert: c.String("tls-cert"), Key: c.String("tls-key"), API: c.Bool("api-tls")}
	cfg.API.ClearPosts = c.Bool("clear-posts")
	if err := cfg.Validate(); err != nil {
		return cfg, usageErr(fmt.Errorf("invalid configuration: %w", err), "see 'matchstream serve --help'")
	}
	return cfg, nil
}
