// Package bench is `matchstream bench`: the original's boundary search as one command. It opens N
// clients with at most C connecting at once, has a watcher post stamped events, and measures connect
// times, refused and timed-out connects, delivery latency (from the stamp inside each event to its
// arrival), the time for one event to reach the last client, deliveries per second, server RSS per
// connection, and whether every client got every event. Each figure can be set beside baselines
// measured in the same run: the raw write(2) loop (the floor) and a goroutine-per-connection server.
package bench

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"matchstream/daemon/certs"
	"matchstream/daemon/match"
)

// Config is one bench run.
type Config struct {
	API       string   // daemon API base URL (ignored with Spawn)
	Token     string   // watcher token (ignored with Spawn)
	Stream    []string // stream addresses clients connect to (round-robin)
	DaemonPID int      // for RSS; 0 = unknown (Spawn knows it)
	// Nodes are the other nodes of a multi-node run (their API URLs and pids): clients spread over
	// every node's stream ports (Stream), subscribers are counted and RSS summed over all.
	NodeAPIs    []string
	NodePIDs    []int
	Spawn       bool // start a daemon for the run
	Users       int
	Concurrency int
	Events      int
	Interval    time.Duration // between posted events
	Baselines   []string      // "floor", "naive"
	Timeout     time.Duration // per event, for every client to get it
	Progress    io.Writer     // progress lines (a terminal), or nil
	// Matches > 1 is the mixed load: clients spread over that many matches, events posted to them
	// in turn at Rate per second without waiting for delivery; no baselines then.
	Matches int
	Rate    float64
	// PerProcess caps the clients one process holds; above it they are spread over worker processes.
	PerProcess int
	// Transports are how the clients watch, each measured in turn: "tcp" (protocol v3 on the stream
	// ports; the default), "tls" (the same on the TLS stream ports), "v1" (the original's protocol
	// on the stream ports) and "sse" (Server-Sent Events on the API port, as browsers do).
	Transports []string
	// StreamTLS are the daemon's TLS stream ports, for the "tls" transport; TLS is the clients'
	// side of it (the daemon's CA), and CAFile its file, for worker processes.
	StreamTLS []string
	TLS       *tls.Config
	CAFile    string
	Insecure  bool // the tls transport does not verify the daemon's certificate (--insecure)
	// HTTP is the client for the daemon's API (one that trusts its certificate, for HTTPS); nil:
	// http.DefaultClient.
	HTTP *http.Client
	// Settle is a pause between the last connect and the RSS reading: what the connect burst
	// allocated (HTTP request state, fasthttp's idle workers' stacks) is then collected and
	// returned, and the reading shows what the held connections cost.
	Settle time.Duration
}

// connectLine is what client i sends to watch match id over a transport: the v3 connect line, or
// the HTTP request of an event stream. Either way the events arrive as lines carrying their stamp.
func connectLine(transport string, i int, id string) string {
	if transport == "sse" {
		return "GET /matches/" + id + "/stream HTTP/1.1\r\nHost: bench\r\nAccept: text/event-stream\r\n\r\n"
	}
	version := 3
	if transport == "v1" {
		version = 1 // the original's protocol: Erlang-term frames, the stamp inside the comment binary
	}
	return fmt.Sprintf("VERSION:%d:CONNECT:b%d:MATCH:%s\r\n", version, i, id)
}

// Figures are the measurements of one server under one load.
type Figures struct {
	Server      string  `json:"server"` // matchstream, floor, naive
	Users       int     `json:"users"`
	Connected   int     `json:"connected"`
	Refused     int64   `json:"refused"`
	TimedOut    int64   `json:"timed_out"`
	OtherErrors int64   `json:"other_errors"`
	ConnectP50  float64 `json:"connect_p50_ms"`
	ConnectP99  float64 `json:"connect_p99_ms"`
	ConnectMax  float64 `json:"connect_max_ms"`
	// FirstP50/FirstP99: from the dial to the server's first bytes (for us the status line after
	// the connect line; the floor answers the connect line with one too): what a user waits for.
	// ConnectSec is the connect phase's wall time (every client dialled, handshaken for TLS, and
	// its connect line sent), and ConnectsPerSec what it comes to: with TLS, handshakes a second.
	ConnectSec     float64 `json:"connect_seconds"`
	ConnectsPerSec float64 `json:"connects_per_second"`
	FirstP50       float64 `json:"first_bytes_p50_ms"`
	FirstP99       float64 `json:"first_bytes_p99_ms"`
	RSSPerConnKB   float64 `json:"rss_per_connection_kb"`
	RSSBaseMB      float64 `json:"rss_before_mb"`
	RSSLoadedMB    float64 `json:"rss_loaded_mb"`
	// RSSPerProcessMB is each server process's RSS under load (one per node in a multi-node run).
	RSSPerProcessMB []float64 `json:"rss_per_process_mb,omitempty"`
	Events          int       `json:"events"`
	AllDelivered    bool      `json:"all_delivered"`
	LastClientMs    float64   `json:"time_to_last_client_ms"` // median over events, post to last arrival
	LatencyP50      float64   `json:"latency_p50_ms"`
	LatencyP99      float64   `json:"latency_p99_ms"`
	LatencyMax      float64   `json:"latency_max_ms"`
	DeliveriesSec   float64   `json:"deliveries_per_second"`
	// PostP50Ms/PostP99Ms: how long the watcher's post (the baselines: the control command) took
	// to be answered; CPUPerEventMs: the server's CPU time (user+system, every thread) over the
	// events, per event: what one fan-out costs, beside how long it takes.
	PostP50Ms float64 `json:"post_p50_ms"`
	PostP99Ms float64 `json:"post_p99_ms"`
	// ServerPostP50Ms/P99Ms: the daemon's own time for the same posts, from the Server-Timing of
	// its answers (0 for the baselines). On one loaded host the bench's wake-up to read the answer
	// is most of the watcher's figure; a watcher on a host of its own sees this plus its network.
	ServerPostP50Ms float64 `json:"server_post_p50_ms,omitempty"`
	ServerPostP99Ms float64 `json:"server_post_p99_ms,omitempty"`
	CPUPerEventMs   float64 `json:"cpu_per_event_ms"`
}

// Result is a whole run.
type Result struct {
	Machine string    `json:"machine"`
	When    time.Time `json:"when"`
	Runs    []Figures `json:"runs"`
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

func pct(ds []time.Duration, q float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[min(len(s)-1, int(q*float64(len(s))))]
}

func rssSum(pids []int) float64 {
	var t float64
	for _, p := range pids {
		t += rssKB(p)
	}
	return t
}

// cpuSum is the CPU time (user and system) the processes have used so far.
func cpuSum(pids []int) time.Duration {
	var t time.Duration
	for _, p := range pids {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p))
		if err != nil {
			continue
		}
		// The fields after the command name, which is in parentheses and may hold spaces: utime
		// and stime are the 12th and 13th of them, in clock ticks (100 a second on Linux).
		_, rest, _ := strings.Cut(string(b), ") ")
		f := strings.Fields(rest)
		if len(f) < 13 {
			continue
		}
		u, _ := strconv.ParseInt(f[11], 10, 64)
		s, _ := strconv.ParseInt(f[12], 10, 64)
		t += time.Duration(u+s) * 10 * time.Millisecond
	}
	return t
}

// rssKB reads a process's resident set size.
func rssKB(pid int) float64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "VmRSS:"); ok {
			n, _ := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 64)
			return n
		}
	}
	return 0
}

func (c *Config) progress(format string, a ...any) {
	if c.Progress != nil {
		fmt.Fprintf(c.Progress, "\r\033[K"+format, a...)
	}
}

// Run runs the bench against matchstream and then each baseline.
func Run(ctx context.Context, cfg Config) (*Result, error) {
	res := &Result{Machine: machine(), When: time.Now().UTC()}
	transports := cfg.Transports
	if len(transports) == 0 {
		transports = []string{"tcp"}
	}
	for _, tr := range transports {
		// With --spawn each transport gets a fresh daemon: a second run in the same process
		// reuses the heap the first one grew, and its memory per connection would read too low.
		f, err := func() (*Figures, error) {
			c := cfg
			if c.Spawn {
				d, err := spawnDaemon(ctx, tr == "tls")
				if err != nil {
					return nil, err
				}
				defer d.stop()
				c.API, c.Token, c.Stream, c.DaemonPID = d.api, d.token, d.stream, d.pid
				if tr == "tls" {
					c.StreamTLS, c.CAFile = d.streamTLS, d.caFile
					if c.TLS, err = ClientTLS(d.caFile); err != nil {
						return nil, err
					}
				}
			}
			return runMatchstream(ctx, &c, tr)
		}()
		if err != nil {
			return nil, err
		}
		res.Runs = append(res.Runs, *f)
	}
	for _, kind := range cfg.Baselines {
		run := runBaseline
		switch kind {
		case "mosquitto":
			run = func(ctx context.Context, cfg *Config, _ string) (*Figures, error) { return runMosquitto(ctx, cfg) }
		case "nats", "nats-tls":
			run = func(ctx context.Context, cfg *Config, kind string) (*Figures, error) {
				return runNATS(ctx, cfg, kind == "nats-tls")
			}
		}
		f, err := run(ctx, &cfg, kind)
		if err != nil {
			return nil, fmt.Errorf("baseline %s: %w", kind, err)
		}
		res.Runs = append(res.Runs, *f)
	}
	cfg.progress("")
	return res, nil
}

func runMatchstream(ctx context.Context, cfg *Config, transport string) (*Figures, error) {
	m := max(1, cfg.Matches)
	ids := make([]string, m)
	for j := range ids {
		ids[j] = fmt.Sprintf("bench-%d-%d", time.Now().UnixNano(), j)
		start := match.Event{At: time.Now().UTC(), Kind: match.KindStart, Home: "home", Visit: "away",
			StartDate:   time.Now().UTC().Format(time.DateOnly),
			HomePlayers: []match.Player{{Number: 1, Name: "Home"}}, VisitPlayers: []match.Player{{Number: 1, Name: "Away"}}}
		if _, err := post(cfg, ids[j], start); err != nil {
			return nil, err
		}
	}
	var next atomic.Int64
	server, addrs := "matchstream", cfg.Stream
	if transport == "sse" {
		u, err := url.Parse(cfg.API)
		if err != nil || u.Host == "" {
			return nil, fmt.Errorf("--transport sse: the API URL %q has no host:port", cfg.API)
		}
		server, addrs = "matchstream-sse", []string{u.Host}
	}
	if transport == "v1" {
		server = "matchstream-v1"
	}
	if transport == "tls" {
		if len(cfg.StreamTLS) == 0 || cfg.TLS == nil {
			return nil, fmt.Errorf("--transport tls: the daemon's TLS stream ports (--stream-tls) and its CA (--ca) are needed, or --spawn")
		}
		server, addrs = "matchstream-tls", cfg.StreamTLS
	}
	c := *cfg
	c.Transports = []string{transport} // what workers, if any, speak
	return measure(ctx, &c, server, addrs, cfg.DaemonPID, ids,
		func(expect int) error { return waitSubscribers(cfg, ids, expect) },
		func() (time.Duration, error) {
			id := ids[int(next.Add(1)-1)%m]
			return post(cfg, id, match.Event{Kind: match.KindComment, Comment: stampPrefix + strconv.FormatInt(time.Now().UnixNano(), 10)})
		},
		func() {
			for _, id := range ids {
				post(cfg, id, match.Event{Kind: match.KindStop})
			}
		})
}

func runBaseline(ctx context.Context, cfg *Config, kind string) (*Figures, error) {
	exe, err := selfExe()
	if err != nil {
		return nil, err
	}
	ports := len(cfg.Stream)
	if cfg.Spawn {
		ports = spawnedPorts
	}
	cmd := exec.CommandContext(ctx, exe, "bench-baseline", "--kind", kind, "--ports", strconv.Itoa(max(1, ports)))
	in, _ := cmd.StdinPipe()
	outPipe, _ := cmd.StdoutPipe()
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	b := &baselineProc{kind: kind, pid: cmd.Process.Pid, in: in, out: bufio.NewScanner(outPipe), wait: cmd.Wait}
	defer b.stop()
	if !b.out.Scan() || !strings.HasPrefix(b.out.Text(), "LISTEN ") {
		return nil, fmt.Errorf("baseline %s did not start", kind)
	}
	b.addrs = strings.Split(strings.TrimPrefix(b.out.Text(), "LISTEN "), ",")
	ids := []string{"x"}
	if cfg.Matches > 1 {
		ids = make([]string, cfg.Matches)
		for j := range ids {
			ids[j] = "m" + strconv.Itoa(j)
		}
	}
	var next atomic.Int64
	event := func() (time.Duration, error) {
		if cfg.Matches > 1 {
			return 0, b.event(ids[int(next.Add(1)-1)%len(ids)])
		}
		return 0, b.event("")
	}
	return measure(ctx, cfg, kind, b.addrs, b.pid, ids, b.waitAccepted, event, func() {})
}

// measure connects the fleet, posts the events, and gathers the figures.
func measure(ctx context.Context, cfg *Config, server string, addrs []string, pid int, ids []string,
	settled func(expect int) error, event func() (server time.Duration, err error), end func()) (*Figures, error) {
	transport := "tcp"
	if len(cfg.Transports) == 1 {
		transport = cfg.Transports[0]
	}
	line := func(i int) string { return connectLine(transport, i, ids[i%len(ids)]) }
	var tlsCfg *tls.Config
	if transport == "tls" {
		tlsCfg = cfg.TLS
	}
	return measureLoad(ctx, cfg, server, addrs, pid, ids, line, tlsCfg, nil, settled, event, end)
}

// measureWith is measure for clients that speak another protocol (MQTT): always in this process,
// with the fleet handed to the caller for its readiness check.
func measureWith(ctx context.Context, cfg *Config, server string, addrs []string, pid int, line func(int) string,
	tlsCfg *tls.Config, fleetOut **fleet, settled func(expect int) error, event func() error) (*Figures, error) {
	c := *cfg
	c.PerProcess = 0
	untimed := func() (time.Duration, error) { return 0, event() }
	return measureLoad(ctx, &c, server, addrs, pid, nil, line, tlsCfg, fleetOut, settled, untimed, func() {})
}

func measureLoad(ctx context.Context, cfg *Config, server string, addrs []string, pid int, ids []string,
	line func(int) string, tlsCfg *tls.Config, fleetOut **fleet, settled func(expect int) error, event func() (server time.Duration, err error), end func()) (*Figures, error) {
	fig := &Figures{Server: server, Users: cfg.Users, Events: cfg.Events}
	time.Sleep(200 * time.Millisecond) // let the server's heap settle before the baseline reading
	pids := []int{pid}
	if server == "matchstream" {
		pids = append(pids, cfg.NodePIDs...)
	}
	before := rssSum(pids)
	var fl clients
	connectStart := time.Now()
	if per := cfg.PerProcess; per > 0 && cfg.Users > per {
		cfg.progress("%s: connecting %d clients from %d processes", server, cfg.Users, (cfg.Users+per-1)/per)
		transport := "tcp"
		if len(cfg.Transports) == 1 {
			transport = cfg.Transports[0]
		}
		var tw *workerTLS
		if tlsCfg != nil {
			tw = &workerTLS{caFile: cfg.CAFile, insecure: cfg.Insecure}
		}
		w, err := spawnWorkers(ctx, cfg.Users, cfg.Concurrency, per, addrs, ids, transport, tw)
		if err != nil {
			return nil, err
		}
		fl = w
	} else {
		local := dialAll(ctx, cfg.Users, cfg.Concurrency, addrs, line, tlsCfg, func(done int) {
			if done%500 == 0 || done == cfg.Users {
				cfg.progress("%s: connected %d/%d", server, done, cfg.Users)
			}
		})
		if fleetOut != nil {
			*fleetOut = local
		}
		fl = local
	}
	finished := false
	var all []time.Duration
	finish := func() []time.Duration {
		if !finished {
			finished, all = true, fl.finish()
		}
		return all
	}
	defer finish()
	fig.Connected, fig.Refused, fig.TimedOut, fig.OtherErrors = fl.counts()
	if d := time.Since(connectStart); d > 0 {
		fig.ConnectSec = d.Seconds()
		fig.ConnectsPerSec = float64(fig.Connected) / d.Seconds()
	}
	if err := settled(fig.Connected); err != nil {
		return nil, err
	}
	if cfg.Settle > 0 {
		cfg.progress("%s: settling %s before reading RSS", server, cfg.Settle)
		time.Sleep(cfg.Settle)
	}
	after := rssSum(pids)
	fig.RSSPerProcessMB = nil
	for _, p := range pids {
		fig.RSSPerProcessMB = append(fig.RSSPerProcessMB, rssKB(p)/1024)
	}
	fig.RSSBaseMB, fig.RSSLoadedMB = before/1024, after/1024
	if fig.Connected > 0 && pid > 0 {
		fig.RSSPerConnKB = (after - before) / float64(fig.Connected)
	}
	var lasts []time.Duration
	fig.AllDelivered = true
	var postMu sync.Mutex
	var posts, servers []time.Duration
	timed := func() error {
		t := time.Now()
		server, err := event()
		postMu.Lock()
		posts = append(posts, time.Since(t))
		if server > 0 {
			servers = append(servers, server)
		}
		postMu.Unlock()
		return err
	}
	cpu0 := cpuSum(pids)
	cpuFigures := func() {
		postMu.Lock()
		defer postMu.Unlock()
		fig.PostP50Ms, fig.PostP99Ms = ms(pct(posts, 0.5)), ms(pct(posts, 0.99))
		fig.ServerPostP50Ms, fig.ServerPostP99Ms = ms(pct(servers, 0.5)), ms(pct(servers, 0.99))
		if pid > 0 && len(posts) > 0 {
			fig.CPUPerEventMs = ms(cpuSum(pids)-cpu0) / float64(len(posts))
		}
	}
	t0 := time.Now()
	if cfg.Matches > 1 {
		return mixed(cfg, fig, fl, timed, func() { cpuFigures(); end(); finish() })
	}
	for e := range cfg.Events {
		sent := time.Now()
		if err := timed(); err != nil {
			return nil, err
		}
		if !fl.waitReceived(int64(e+1), cfg.Timeout) {
			fig.AllDelivered = false
			break
		}
		lasts = append(lasts, fl.lastArrival().Sub(sent))
		cfg.progress("%s: event %d/%d reached %d clients", server, e+1, cfg.Events, fig.Connected)
		if e+1 < cfg.Events {
			time.Sleep(cfg.Interval)
		}
	}
	elapsed := time.Since(t0) - time.Duration(max(0, cfg.Events-1))*cfg.Interval
	cpuFigures()
	end()
	finish()
	cs := fl.connectTimes()
	fig.ConnectP50, fig.ConnectP99, fig.ConnectMax = ms(pct(cs, 0.5)), ms(pct(cs, 0.99)), ms(pct(cs, 1))
	fs := fl.firstTimes()
	fig.FirstP50, fig.FirstP99 = ms(pct(fs, 0.5)), ms(pct(fs, 0.99))
	fig.LastClientMs = ms(pct(lasts, 0.5))
	fig.LatencyP50, fig.LatencyP99, fig.LatencyMax = ms(pct(all, 0.5)), ms(pct(all, 0.99)), ms(pct(all, 1))
	if elapsed > 0 {
		fig.DeliveriesSec = float64(len(all)) / elapsed.Seconds()
	}
	if len(all) != fig.Connected*cfg.Events {
		fig.AllDelivered = false
	}
	return fig, nil
}

func (c *Config) httpClient() *http.Client {
	if c.HTTP != nil {
		return c.HTTP
	}
	return http.DefaultClient
}

// ClientTLS trusts the certificates in caFile (a spawned daemon's self-signed one), for 127.0.0.1.
func ClientTLS(caFile string) (*tls.Config, error) {
	pool, err := certs.Pool(caFile)
	if err != nil {
		return nil, err
	}
	return &tls.Config{RootCAs: pool, ServerName: "127.0.0.1", MinVersion: tls.VersionTLS13}, nil
}

// post posts one event as the watcher does, and returns the daemon's own time for it (its
// Server-Timing; 0 if it gave none).
func post(cfg *Config, id string, e match.Event) (time.Duration, error) {
	body, _ := json.Marshal(e)
	req, _ := http.NewRequest(http.MethodPost, strings.TrimRight(cfg.API, "/")+"/matches/"+id+"/events", bytes.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+cfg.Token)
	resp, err := cfg.httpClient().Do(req)
	if err != nil {
		return 0, fmt.Errorf("post event: %w", err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		return 0, fmt.Errorf("post event: %s: %s", resp.Status, bytes.TrimSpace(b))
	}
	return serverTiming(resp.Header.Values("Server-Timing"), "post"), nil
}

// serverTiming reads the duration of metric name from Server-Timing header values
// (`name;dur=1.25, other;desc="x"`: metrics separated by commas, parameters by semicolons, dur in
// milliseconds); 0 when it is absent or not a duration.
func serverTiming(values []string, name string) time.Duration {
	for _, v := range values {
		for metric := range strings.SplitSeq(v, ",") {
			params := strings.Split(metric, ";")
			if strings.TrimSpace(params[0]) != name {
				continue
			}
			for _, p := range params[1:] {
				k, val, _ := strings.Cut(strings.TrimSpace(p), "=")
				if !strings.EqualFold(strings.TrimSpace(k), "dur") {
					continue
				}
				f, err := strconv.ParseFloat(strings.Trim(strings.TrimSpace(val), `"`), 64)
				if err != nil || !(f >= 0 && f <= 1e9) { // NaN fails both
					return 0
				}
				return time.Duration(f * float64(time.Millisecond))
			}
		}
	}
	return 0
}

// mixed posts cfg.Events events round-robin over the matches at cfg.Rate per second, not waiting
// for deliveries, then waits for every client to have its share.
func mixed(cfg *Config, fig *Figures, fl clients, event func() error, end func()) (*Figures, error) {
	t0 := time.Now()
	tick := time.NewTicker(time.Duration(float64(time.Second) / max(cfg.Rate, 0.1)))
	defer tick.Stop()
	errc := make(chan error, cfg.Events)
	for e := range cfg.Events {
		if e > 0 {
			<-tick.C
		}
		go func() { errc <- event() }() // posts overlap when the daemon is slower than the rate
		cfg.progress("matchstream: posted %d/%d events over %d matches", e+1, cfg.Events, cfg.Matches)
	}
	for range cfg.Events {
		if err := <-errc; err != nil {
			return nil, err
		}
	}
	per := int64(cfg.Events / cfg.Matches)
	fig.AllDelivered = fl.waitReceived(per, cfg.Timeout)
	elapsed := time.Since(t0)
	end()
	all := fl.finish()
	cs := fl.connectTimes()
	fig.ConnectP50, fig.ConnectP99, fig.ConnectMax = ms(pct(cs, 0.5)), ms(pct(cs, 0.99)), ms(pct(cs, 1))
	fs := fl.firstTimes()
	fig.FirstP50, fig.FirstP99 = ms(pct(fs, 0.5)), ms(pct(fs, 0.99))
	fig.Server = fmt.Sprintf("%s (%d matches, %.0f events/s)", fig.Server, cfg.Matches, cfg.Rate)
	fig.LatencyP50, fig.LatencyP99, fig.LatencyMax = ms(pct(all, 0.5)), ms(pct(all, 0.99)), ms(pct(all, 1))
	fig.DeliveriesSec = float64(len(all)) / elapsed.Seconds()
	if int64(len(all)) != int64(fig.Connected)*per {
		fig.AllDelivered = false
	}
	return fig, nil
}

func waitSubscribers(cfg *Config, ids []string, expect int) error {
	deadline := time.Now().Add(30 * time.Second)
	for {
		got := 0
		for _, api := range append([]string{cfg.API}, cfg.NodeAPIs...) {
			var list []struct {
				ID          string `json:"id"`
				Subscribers int    `json:"subscribers"`
			}
			if r, err := cfg.httpClient().Get(strings.TrimRight(api, "/") + "/matches"); err == nil {
				json.NewDecoder(r.Body).Decode(&list)
				r.Body.Close()
			}
			for _, m := range list {
				if slices.Contains(ids, m.ID) {
					got += m.Subscribers
				}
			}
		}
		if got >= expect {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the daemon did not report %d subscribers within 30s", expect)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func machine() string {
	cpu := "unknown CPU"
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(l, "model name"); ok {
				cpu = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(v), ":"))
				break
			}
		}
	}
	host, _ := os.Hostname()
	b, _ := os.ReadFile("/proc/sys/kernel/osrelease")
	return fmt.Sprintf("%s, %d CPUs, %s, kernel %s, loopback", host, numCPU(), cpu, strings.TrimSpace(string(b)))
}
