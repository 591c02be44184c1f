package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/urfave/cli/v2"

	"matchstream/cmd/matchstream/bench"
	"matchstream/daemon/listen"
)

func benchCommand() *cli.Command {
	return &cli.Command{
		Name:  "bench",
		Usage: "find the boundaries: N users, C connecting at once, events fanned out, beside baselines",
		Description: "Opens N clients (protocol 3) with at most C connecting at once, posts stamped events and\n" +
			"measures connect times, refused/timed-out connects, time for an event to reach the last\n" +
			"client, delivery latency (stamp inside the event to arrival), deliveries/s, the server's RSS\n" +
			"per connection, and whether every client got every event. --baseline floor,naive measures\n" +
			"the same load against a raw write(2) loop and a goroutine-per-connection server in the same\n" +
			"run. --find-limit doubles N (and C) until a client fails or --max-latency is crossed.\n" +
			"Above --per-process clients (default: the open-files limit, 20,000 here, less 256) the\n" +
			"clients are spread over several worker processes.",
		Flags: append([]cli.Flag{
			apiFlag(),
			&cli.StringFlag{Name: "token", EnvVars: env("watcher-token"), Usage: "watcher bearer token"},
			&cli.StringFlag{Name: "token-file", EnvVars: env("watcher-token-file"), Usage: "file holding the watcher token"},
			&cli.StringFlag{Name: "stream", Value: "127.0.0.1:9000-9007", Usage: "the daemon's stream ports; comma-separated ranges for several nodes"},
			&cli.StringSliceFlag{Name: "node-api", Usage: "multi-node: another node's API URL, to count its subscribers (repeat)"},
			&cli.IntSliceFlag{Name: "node-pid", Usage: "multi-node: another node's pid, to add its RSS (repeat)"},
			&cli.IntFlag{Name: "daemon-pid", Usage: "the daemon's pid, to read its RSS (known with --spawn)"},
			&cli.BoolFlag{Name: "spawn", Usage: "start a daemon for the run on free loopback ports"},
			&cli.IntFlag{Name: "n", Value: 1000, Usage: "users"},
			&cli.IntFlag{Name: "c", Value: 1000, Usage: "at most this many connecting at once"},
			&cli.IntFlag{Name: "events", Value: 10, Usage: "events posted once all are connected"},
			&cli.DurationFlag{Name: "interval", Value: 200 * time.Millisecond, Usage: "pause between events"},
			&cli.StringFlag{Name: "baseline", Usage: "comma-separated: floor (raw write(2) from one goroutine per CPU), naive (goroutine per connection), nats (nats-server: make nats-server), mosquitto (when installed)"},
			&cli.DurationFlag{Name: "timeout", Value: 30 * time.Second, Usage: "for every client to get an event"},
			&cli.IntFlag{Name: "matches", Value: 1, Usage: "mixed load: spread clients over this many matches (baseline: naive only)"},
			&cli.Float64Flag{Name: "rate", Value: 20, Usage: "mixed load: events per second over all matches, posted without waiting"},
			&cli.BoolFlag{Name: "find-limit", Usage: "double N from 16 until a client fails or --max-latency is crossed"},
			&cli.DurationFlag{Name: "max-latency", Value: time.Second, Usage: "with --find-limit: p99 delivery latency bound"},
			&cli.IntFlag{Name: "per-process", Usage: "clients per client process (default: the open-files limit less 256)"},
			&cli.StringFlag{Name: "transport", Value: "tcp", Usage: "how clients watch, comma-separated, each measured in turn: tcp (protocol v3 on the stream ports), tls (the same on the TLS stream ports), v1 (the original's protocol on the stream ports), sse (Server-Sent Events on the API port, as browsers)"},
			&cli.BoolFlag{Name: "tls", Usage: "TLS beside plain in the same run: adds the tls transport after the others, and nats-tls after a nats baseline; the report sets TLS against plain (RSS per client, time to the last client, handshakes/s)"},
			&cli.StringFlag{Name: "stream-tls", Usage: "without --spawn: the daemon's TLS stream ports (host:first-last), for the tls transport (with --ca or --insecure)"},
			&cli.DurationFlag{Name: "settle", Usage: "wait this long after the last connect before reading RSS (3m shows what held connections cost, once the connect burst's garbage is collected)"},
			&cli.BoolFlag{Name: "json", Usage: "print the results as JSON"},
			&cli.StringFlag{Name: "report", Usage: "also write a self-contained HTML report to this file"},
		}, tlsFlags()...),
		Action: runBench,
	}
}

func benchBaselineCommand() *cli.Command {
	return &cli.Command{
		Name:   "bench-baseline",
		Hidden: true,
		Usage:  "a baseline server for bench (floor or naive), driven on stdin",
		Flags: []cli.Flag{&cli.StringFlag{Name: "kind", Value: "floor"}, &cli.StringFlag{Name: "listen", Value: "127.0.0.1:0"},
			&cli.IntFlag{Name: "ports", Value: 1, Usage: "listen on this many ports (each at --listen's host, port chosen by the kernel unless --listen names one and ports is 1)"}},
		Action: func(c *cli.Context) error {
			return bench.ServeBaseline(c.String("kind"), c.String("listen"), c.Int("ports"), os.Stdin, os.Stdout)
		},
	}
}

func benchClientsCommand() *cli.Command {
	return &cli.Command{
		Name:   "bench-clients",
		Hidden: true,
		Usage:  "a bench worker: holds a share of the clients, driven on stdin",
		Flags: []cli.Flag{&cli.StringFlag{Name: "addrs"}, &cli.StringFlag{Name: "matches"}, &cli.StringFlag{Name: "transport", Value: "tcp"}, &cli.IntFlag{Name: "offset"},
			&cli.StringFlag{Name: "ca", Usage: "TLS: the daemon's CA file (empty: plain TCP)"}, &cli.BoolFlag{Name: "insecure"},
			&cli.IntFlag{Name: "n"}, &cli.IntFlag{Name: "c", Value: 100}},
		Action: func(c *cli.Context) error {
			return bench.ServeClients(c.Context, strings.Split(c.String("addrs"), ","), strings.Split(c.String("matches"), ","),
				c.String("transport"), c.String("ca"), c.Bool("insecure"), c.Int("offset"), c.Int("n"), c.Int("c"), os.Stdin, os.Stdout)
		},
	}
}

func runBench(c *cli.Context) error {
	cfg := bench.Config{API: c.String("api"), DaemonPID: c.Int("daemon-pid"), Spawn: c.Bool("spawn"),
		Users: c.Int("n"), Concurrency: c.Int("c"), Events: c.Int("events"), Interval: c.Duration("interval"),
		Timeout: c.Duration("timeout"), Matches: c.Int("matches"), Rate: c.Float64("rate"), Settle: c.Duration("settle")}
	if cfg.Matches > 1 {
		if b := c.String("baseline"); b != "" && b != "naive" {
			return usageErr(errors.New("with --matches, only --baseline naive (the goroutine-per-subscriber design) is available"), "")
		}
		cfg.Events = max(cfg.Events, cfg.Matches) / cfg.Matches * cfg.Matches // an equal share per match
	}
	if !c.Bool("spawn") {
		tok, err := readToken(c)
		if err != nil {
			return err
		}
		cfg.Token = tok
		for _, r := range strings.Split(c.String("stream"), ",") {
			addrs, err := listen.ParseRange(strings.TrimSpace(r))
			if err != nil {
				return usageErr(err, "")
			}
			cfg.Stream = append(cfg.Stream, addrs...)
		}
		cfg.NodeAPIs, cfg.NodePIDs = c.StringSlice("node-api"), c.IntSlice("node-pid")
	}
	for _, tr := range strings.Split(c.String("transport"), ",") {
		switch tr = strings.TrimSpace(tr); tr {
		case "tcp", "tls", "v1", "sse":
			cfg.Transports = append(cfg.Transports, tr)
		default:
			return usageErr(fmt.Errorf("unknown transport %q: want tcp, tls, v1 or sse", tr), "")
		}
	}
	if c.Bool("tls") && !slices.Contains(cfg.Transports, "tls") {
		cfg.Transports = append(cfg.Transports, "tls")
	}
	for _, b := range strings.Split(c.String("baseline"), ",") {
		switch b = strings.TrimSpace(b); b {
		case "":
		case "floor", "naive", "nats", "nats-tls", "mosquitto":
			if !bench.Baselines {
				return usageErr(fmt.Errorf("--baseline %s: %w", b, bench.ErrNoBaselines), "")
			}
			if !slices.Contains(cfg.Baselines, b) {
				cfg.Baselines = append(cfg.Baselines, b)
			}
			if b == "nats" && c.Bool("tls") && !slices.Contains(cfg.Baselines, "nats-tls") {
				cfg.Baselines = append(cfg.Baselines, "nats-tls")
			}
		default:
			return usageErr(fmt.Errorf("unknown baseline %q: want floor, naive, nats, nats-tls or mosquitto", b), "")
		}
	}
	if !cfg.Spawn {
		hc, err := httpClient(c, 30*time.Second) // an https:// --api, with --ca or --insecure
		if err != nil {
			return err
		}
		cfg.HTTP = hc
	}
	if slices.Contains(cfg.Transports, "tls") && !cfg.Spawn {
		if c.String("stream-tls") == "" || (c.String("ca") == "" && !c.Bool("insecure")) {
			return usageErr(errors.New("the tls transport without --spawn needs --stream-tls, and --ca or --insecure"), "")
		}
		addrs, err := listen.ParseRange(c.String("stream-tls"))
		if err != nil {
			return usageErr(err, "")
		}
		cfg.StreamTLS, cfg.CAFile, cfg.Insecure = addrs, c.String("ca"), c.Bool("insecure")
		if cfg.TLS, err = clientTLS(c); err != nil {
			return err
		}
		cfg.TLS.ServerName, _, _ = net.SplitHostPort(addrs[0])
	}
	var lim syscall.Rlimit
	syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim)
	cfg.PerProcess = c.Int("per-process")
	if cfg.PerProcess <= 0 {
		cfg.PerProcess = int(lim.Cur) - 256 // the open-files cap, less room for the rest
	}
	if cfg.Users < 1 || cfg.Concurrency < 1 || cfg.Events < 1 || cfg.PerProcess < 1 {
		return usageErr(errors.New("-n, -c, --events and --per-process must be at least 1"), "")
	}
	if len(cfg.Baselines) > 0 && cfg.Users > cfg.PerProcess {
		return usageErr(fmt.Errorf("--baseline with -n %d: a baseline server is one process, which holds at most %d connections here", cfg.Users, cfg.PerProcess), "")
	}
	if st, err := os.Stderr.Stat(); err == nil && st.Mode()&os.ModeCharDevice != 0 && !c.Bool("json") {
		cfg.Progress = os.Stderr
	}
	var steps []bench.Limit
	var res *bench.Result
	var err error
	if c.Bool("find-limit") {
		steps, res, err = findLimit(c, cfg)
	} else {
		res, err = bench.Run(c.Context, cfg)
	}
	if err != nil {
		return failure(err, "")
	}
	if cfg.Progress != nil {
		fmt.Fprint(os.Stderr, "\r\033[K")
	}
	if c.Bool("json") {
		enc := json.NewEncoder(c.App.Writer)
		enc.SetIndent("", "  ")
		enc.Encode(struct {
			*bench.Result
			Limit []bench.Limit `json:"limit,omitempty"`
		}{res, steps})
	} else {
		bench.Print(c.App.Writer, res)
		for _, s := range steps {
			fmt.Fprintf(c.App.Writer, "limit: %6d users: ok=%v %s\n", s.Users, s.OK, s.Reason)
		}
	}
	if p := c.String("report"); p != "" {
		f, err := os.Create(p)
		if err != nil {
			return failure(err, "")
		}
		defer f.Close()
		if err := bench.WriteHTML(f, res, steps); err != nil {
			return failure(err, "")
		}
	}
	if f := res.Runs[0]; !f.AllDelivered || f.Refused+f.TimedOut+f.OtherErrors > 0 {
		return failure(fmt.Errorf("not every client got every event (connected %d of %d, refused %d, timed out %d)",
			f.Connected, f.Users, f.Refused, f.TimedOut), "")
	}
	return nil
}

// findLimit is the original's 16 → 2N loop: the last N at which every client got every event within
// the latency bound.
func findLimit(c *cli.Context, cfg bench.Config) ([]bench.Limit, *bench.Result, error) {
	var steps []bench.Limit
	var good *bench.Result
	top := cfg.Users
	for n := 16; n <= top; n *= 2 {
		step := cfg
		step.Users, step.Concurrency, step.Baselines = n, n, nil
		res, err := bench.Run(c.Context, step)
		if err != nil {
			return steps, good, err
		}
		f := res.Runs[0]
		l := bench.Limit{Users: n, OK: true, Figures: f}
		switch {
		case f.Refused+f.TimedOut+f.OtherErrors > 0 || !f.AllDelivered:
			l.OK, l.Reason = false, fmt.Sprintf("clients failed: refused %d, timed out %d, all delivered %v", f.Refused, f.TimedOut, f.AllDelivered)
		case time.Duration(f.LatencyP99*float64(time.Millisecond)) > c.Duration("max-latency"):
			l.OK, l.Reason = false, fmt.Sprintf("p99 latency %.1f ms over %s", f.LatencyP99, c.Duration("max-latency"))
		}
		steps = append(steps, l)
		if !l.OK {
			break
		}
		good = res
	}
	if good == nil {
		return steps, nil, errors.New("no load passed: even 16 users failed")
	}
	return steps, good, nil
}
