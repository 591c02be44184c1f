// Package simulate is the user simulator of the original sample, grown up: N simulated users, at
// most C connecting at once, each asking the API where to connect, speaking a protocol version,
// reading until the server closes, and checking what it got — the whole match, in order, nothing
// missed. It speaks the protocol through daemon/protocol and the API through its own types, so it
// and the daemon cannot disagree.
package simulate

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"matchstream/daemon/api"
	"matchstream/daemon/match"
	"matchstream/daemon/protocol"
)

// Config says what to simulate.
type Config struct {
	API         string // base URL of the daemon's API, e.g. http://127.0.0.1:8888
	Match       string // match id (ignored by protocol 2, which watches the current live match)
	Protocol    int    // 1, 2 or 3
	Users       int
	Concurrency int           // at most this many connecting at once
	From        int64         // protocol 3: resume after this seq; -1 = from the status
	Timeout     time.Duration // per user, from connect to close; 0 = none
	DialTimeout time.Duration
	// TLS is the client side of HTTPS and of TLS stream ports (trusted CAs); nil: the defaults.
	TLS *tls.Config
	// StreamTLS: users connect to a TLS stream port (/connect?tls=1) and speak TLS 1.3 on it.
	StreamTLS bool
}

// Result is what the simulation saw.
type Result struct {
	Users      int
	OK         int
	Failures   []Failure
	Events     []int           // events received per user (after the status)
	Connect    []time.Duration // time to connect per user that connected
	Elapsed    time.Duration
	Match      string
	EndedFirst int // users that found the match already over (status, then close)
}

// Failure is one user that did not watch the match cleanly.
type Failure struct {
	User   int
	Reason string
}

// user is what one simulated user received.
type user struct {
	id        int
	raw       []byte
	connected time.Duration
	err       error
}

// Validate reports a configuration the simulation cannot run with.
func (cfg Config) Validate() error {
	if cfg.Users < 1 || cfg.Concurrency < 1 {
		return fmt.Errorf("users and concurrency must be at least 1")
	}
	if cfg.Protocol < 1 || cfg.Protocol > 3 {
		return fmt.Errorf("protocol must be 1, 2 or 3")
	}
	if cfg.Protocol != 2 && cfg.Match == "" {
		return fmt.Errorf("a match id is needed for protocol %d", cfg.Protocol)
	}
	if cfg.From >= 0 && cfg.Protocol != 3 {
		return fmt.Errorf("FROM needs protocol 3")
	}
	if u, err := url.Parse(cfg.API); err != nil || u.Host == "" {
		return fmt.Errorf("api URL %q: want http://host:port or https://host:port", cfg.API)
	}
	if cfg.StreamTLS && cfg.Protocol == 2 {
		return fmt.Errorf("TLS stream ports need protocol 1 or 3: protocol 2 finds its port with /1/checkin, which names plain ports only")
	}
	return nil
}

// Run simulates cfg.Users users and verifies what each received. Users that fail are in the
// Result; an error means the simulation itself could not run.
func Run(ctx context.Context, cfg Config) (*Result, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.DialTimeout == 0 {
		cfg.DialTimeout = 10 * time.Second
	}
	base, err := url.Parse(strings.TrimRight(cfg.API, "/"))
	if err != nil {
		return nil, err
	}
	if cfg.TLS == nil {
		cfg.TLS = &tls.Config{MinVersion: tls.VersionTLS13}
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = cfg.TLS
	hc := &http.Client{Timeout: 10 * time.Second, Transport: tr}
	start := time.Now()
	users := make([]*user, cfg.Users)
	sem := make(chan struct{}, cfg.Concurrency)
	var wg sync.WaitGroup
	for i := range users {
		users[i] = &user{id: i}
		sem <- struct{}{}
		wg.Add(1)
		go func(u *user) {
			defer wg.Done()
			released := false
			release := func() {
				if !released {
					released = true
					<-sem
				}
			}
			defer release()
			u.run(ctx, cfg, base, hc, release)
		}(users[i])
		if ctx.Err() != nil {
			break
		}
	}
	wg.Wait()
	res := &Result{Users: cfg.Users, Elapsed: time.Since(start), Match: cfg.Match}
	// Versions 1 and 2 carry no seq: what users got is checked against the match's history.
	var history []match.Record
	var historyErr error
	if cfg.Protocol != 3 && slices.ContainsFunc(users, func(u *user) bool { return u.err == nil }) {
		id := cfg.Match
		if id == "" {
			id, historyErr = v2Match(hc, base, users)
		}
		res.Match = id
		if historyErr == nil && id != "" {
			history, historyErr = fetchHistory(hc, base, id)
		}
	}
	for _, u := range users {
		if u.err == nil && historyErr != nil {
			u.err = fmt.Errorf("cannot check what was received: %w", historyErr)
		}
		n, ended, err := u.verify(cfg, history)
		if u.connected > 0 {
			res.Connect = append(res.Connect, u.connected)
		}
		if err != nil {
			res.Failures = append(res.Failures, Failure{User: u.id, Reason: err.Error()})
			continue
		}
		res.OK++
		res.Events = append(res.Events, n)
		if ended {
			res.EndedFirst++
		}
	}
	return res, nil
}

func (u *user) run(ctx context.Context, cfg Config, base *url.URL, hc *http.Client, connected func()) {
	t0 := time.Now()
	addr, err := where(hc, base, cfg)
	if err != nil {
		u.err = err
		return
	}
	d := net.Dialer{Timeout: cfg.DialTimeout}
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		u.err = fmt.Errorf("cannot connect to %s: %w", addr, err)
		return
	}
	defer c.Close()
	if cfg.StreamTLS {
		tc := tls.Client(c, tlsFor(cfg.TLS, addr))
		hctx, cancel := context.WithTimeout(ctx, cfg.DialTimeout)
		err := tc.HandshakeContext(hctx)
		cancel()
		if err != nil {
			u.err = fmt.Errorf("tls handshake with %s: %w", addr, err)
			return
		}
		defer tc.Close()
		c = tc
	}
	u.connected = time.Since(t0)
	connected()
	stop := context.AfterFunc(ctx, func() { c.Close() })
	defer stop()
	if cfg.Timeout > 0 {
		c.SetDeadline(time.Now().Add(cfg.Timeout))
	}
	if _, err := io.WriteString(c, connectLine(cfg, u.id)); err != nil {
		u.err = fmt.Errorf("send connect line: %w", err)
		return
	}
	u.raw, err = io.ReadAll(c)
	if err != nil {
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			u.err = fmt.Errorf("still open after %s (timeout)", cfg.Timeout)
		} else if ctx.Err() != nil {
			u.err = fmt.Errorf("interrupted")
		} else {
			u.err = fmt.Errorf("connection dropped: %w", err)
		}
	}
}

func connectLine(cfg Config, id int) string {
	user := "sim" + strconv.Itoa(id)
	switch cfg.Protocol {
	case 2:
		return "V:2:" + user + "\r\n"
	case 3:
		if cfg.From >= 0 {
			return fmt.Sprintf("VERSION:3:CONNECT:%s:MATCH:%s:FROM:%d\r\n", user, cfg.Match, cfg.From)
		}
		return "VERSION:3:CONNECT:" + user + ":MATCH:" + cfg.Match + "\r\n"
	}
	return "VERSION:1:CONNECT:" + user + ":MATCH:" + cfg.Match + "\r\n"
}

// where asks the API which stream port to use: /connect (ours) or, for protocol 2, /1/checkin
// (the original's), whose reply has only a port: the host is the API's.
func where(hc *http.Client, base *url.URL, cfg Config) (string, error) {
	if cfg.Protocol == 2 {
		var r struct {
			Port int `json:"port"`
		}
		if err := getJSON(hc, base.String()+"/1/checkin", &r); err != nil {
			return "", err
		}
		return net.JoinHostPort(base.Hostname(), strconv.Itoa(r.Port)), nil
	}
	var r api.Connect
	q := "/connect?match=" + url.QueryEscape(cfg.Match)
	if cfg.StreamTLS {
		q += "&tls=1"
	}
	if err := getJSON(hc, base.String()+q, &r); err != nil {
		return "", err
	}
	return net.JoinHostPort(r.Host, strconv.Itoa(r.Port)), nil
}

// tlsFor is cfg for a connection to addr: the server name is addr's host unless cfg names one.
func tlsFor(cfg *tls.Config, addr string) *tls.Config {
	if cfg.ServerName != "" {
		return cfg
	}
	c := cfg.Clone()
	c.ServerName, _, _ = net.SplitHostPort(addr)
	return c
}

func getJSON(hc *http.Client, u string, v any) error {
	resp, err := hc.Get(u)
	if err != nil {
		return fmt.Errorf("cannot reach the API: %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return fmt.Errorf("GET %s: %w", u, err)
	}
	if resp.StatusCode != http.StatusOK {
		var e api.ErrorBody
		if json.Unmarshal(body, &e) == nil && e.Error != "" {
			return fmt.Errorf("GET %s: %s: %s", u, resp.Status, e.Error)
		}
		return fmt.Errorf("GET %s: %s", u, resp.Status)
	}
	if err := json.Unmarshal(body, v); err != nil {
		return fmt.Errorf("GET %s: %w", u, err)
	}
	return nil
}

func fetchHistory(hc *http.Client, base *url.URL, id string) ([]match.Record, error) {
	var recs []match.Record
	err := getJSON(hc, base.String()+"/matches/"+url.PathEscape(id)+"/events", &recs)
	return recs, err
}

// v2Match finds the match V:2 users were given: its home and visit from their status frame, then
// the id from the API's list (the latest start date of those teams).
func v2Match(hc *http.Client, base *url.URL, users []*user) (string, error) {
	for _, u := range users {
		fr := splitV1(u.raw)
		if len(fr) == 0 || v1Kind(fr[0]) != "status" {
			continue
		}
		home, visit := v1Field(fr[0], "home"), v1Field(fr[0], "visit")
		var list []api.Summary
		if err := getJSON(hc, base.String()+"/matches", &list); err != nil {
			return "", err
		}
		best := ""
		for _, m := range list {
			if m.Home == home && m.Visit == visit && m.ID > best {
				best = m.ID
			}
		}
		return best, nil
	}
	return "", nil
}

// splitV1 cuts the original's stream into frames, each ending with a line holding only \r\n.
func splitV1(raw []byte) [][]byte {
	var out [][]byte
	for len(raw) > 0 {
		i := bytes.Index(raw, []byte("\n\r\n"))
		if i < 0 {
			out = append(out, raw)
			break
		}
		out = append(out, raw[:i+3])
		raw = raw[i+3:]
	}
	return out
}

func v1Kind(frame []byte) string {
	line, _, _ := bytes.Cut(frame, []byte("\n"))
	if len(line) < 22 {
		return ""
	}
	return strings.TrimSuffix(string(line[21:]), ":")
}

func v1Field(frame []byte, key string) string {
	for _, l := range strings.Split(string(frame), "\n") {
		if v, ok := strings.CutPrefix(l, "\t"+key+": "); ok {
			v = strings.TrimSuffix(strings.TrimPrefix(v, `<<"`), `">>`)
			return v
		}
	}
	return ""
}

// verify checks one user's stream and returns how many events it got after the status.
func (u *user) verify(cfg Config, history []match.Record) (int, bool, error) {
	if u.err != nil {
		return 0, false, u.err
	}
	if bytes.HasPrefix(u.raw, []byte("ERROR: ")) {
		line, _, _ := bytes.Cut(u.raw, []byte("\n"))
		return 0, false, fmt.Errorf("server refused: %s", line)
	}
	if cfg.Protocol == 3 {
		return verifyV3(u.raw, cfg.From)
	}
	return verifyV1(u.raw, history)
}

func verifyV3(raw []byte, from int64) (int, bool, error) {
	sc := bufio.NewScanner(bytes.NewReader(raw))
	sc.Buffer(nil, 1<<20)
	var last uint64
	n := 0
	ended := false
	lastKind := ""
	first := true
	for sc.Scan() {
		var obj struct {
			Kind   string       `json:"kind"`
			Seq    uint64       `json:"seq"`
			Period match.Period `json:"period"`
		}
		if err := json.Unmarshal(sc.Bytes(), &obj); err != nil {
			return n, false, fmt.Errorf("bad line %q: %w", sc.Bytes(), err)
		}
		if first && from < 0 {
			if obj.Kind != "status" {
				return n, false, fmt.Errorf("first line is %s, want status", obj.Kind)
			}
			last, first, ended = obj.Seq, false, obj.Period == match.Ended
			continue
		}
		if first {
			last, first = uint64(from), false
		}
		if obj.Seq != last+1 {
			return n, false, fmt.Errorf("missed events: seq %d after %d", obj.Seq, last)
		}
		last, lastKind = obj.Seq, obj.Kind
		n++
	}
	if ended && n == 0 {
		return 0, true, nil
	}
	if lastKind != string(match.KindStop) {
		return n, false, fmt.Errorf("dropped before stop after %d events (last seq %d)", n, last)
	}
	return n, false, nil
}

func verifyV1(raw []byte, history []match.Record) (int, bool, error) {
	frames := splitV1(raw)
	if len(frames) == 0 || v1Kind(frames[0]) != "status" {
		return 0, false, fmt.Errorf("no status frame first")
	}
	events := frames[1:]
	if len(events) == 0 && v1Field(frames[0], "period") == string(match.Ended) {
		return 0, true, nil
	}
	if len(events) == 0 || v1Kind(events[len(events)-1]) != string(match.KindStop) {
		return len(events), false, fmt.Errorf("dropped before stop after %d events", len(events))
	}
	if len(events) > len(history) {
		return len(events), false, fmt.Errorf("got %d events, the match has %d", len(events), len(history))
	}
	// What a user got after its status must be exactly the end of the match, in order.
	tail := history[len(history)-len(events):]
	for i, r := range tail {
		if want := protocol.RenderV1(&r.Event); !bytes.Equal(events[i], want) {
			return len(events), false, fmt.Errorf("event %d of %d is %q, want %q (missed or reordered)",
				i+1, len(events), firstLine(events[i]), firstLine(want))
		}
	}
	return len(events), false, nil
}

func firstLine(b []byte) string {
	l, _, _ := bytes.Cut(b, []byte("\n"))
	return string(l)
}

// Summary is the one-line report of a run.
func (r *Result) Summary(protocolVersion int) string {
	if len(r.Failures) > 0 {
		return fmt.Sprintf("FAIL: %d of %d users did not watch %s cleanly (protocol %d); first: user %d: %s",
			len(r.Failures), r.Users, r.Match, protocolVersion, r.Failures[0].User, r.Failures[0].Reason)
	}
	lo, hi := 0, 0
	if len(r.Events) > 0 {
		lo, hi = slices.Min(r.Events), slices.Max(r.Events)
	}
	conn := slices.Clone(r.Connect)
	slices.Sort(conn)
	p := func(q float64) time.Duration {
		if len(conn) == 0 {
			return 0
		}
		return conn[min(len(conn)-1, int(q*float64(len(conn))))]
	}
	ev := fmt.Sprintf("%d events each", lo)
	if lo != hi {
		ev = fmt.Sprintf("%d-%d events each", lo, hi)
	}
	return fmt.Sprintf("ok: %d users watched %s to the end (protocol %d): %s, connect p50 %s p99 %s, %s in all",
		r.OK, r.Match, protocolVersion, ev, p(0.5).Round(time.Microsecond), p(0.99).Round(time.Microsecond), r.Elapsed.Round(time.Millisecond))
}
