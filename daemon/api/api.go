// Package api is the HTTP API of DESIGN.md §4 on fasthttp: the original sample's read API under /1/
// (same paths, JSON and headers, so its clients and its ApacheBench script work unchanged) and ours
// on unversioned paths, including the watcher's POST of events.
package api

import (
	"bytes"
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"regexp"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/valyala/fasthttp"

	"matchstream/daemon/listen"
	"matchstream/daemon/live"
	"matchstream/daemon/match"
	"matchstream/daemon/store"
)

// Version is sent in the Match-Stream-API-Version header, as the original did.
const Version = "1"

// Config is the API section of the daemon configuration.
type Config struct {
	WatcherToken string // bearer token for POST /matches/{id}/events; empty disables posting
	MaxBodySize  int    // largest request body accepted
	// ClearPosts accepts watcher posts over plain HTTP from other hosts. Off: a post must come
	// over HTTPS or from this host (a local watcher, or a TLS-terminating proxy here), so the
	// watcher token never crosses a network in clear text more than once.
	ClearPosts bool
}

// PostResult is the reply to an accepted POST of events.
type PostResult struct {
	Match string   `json:"match"`
	Seq   uint64   `json:"seq"`  // seq of the last event accepted
	Seqs  []uint64 `json:"seqs"` // seq of each event posted, in order
}

// ErrorBody is every error reply on the unversioned paths.
type ErrorBody struct {
	Error string `json:"error"`
	Index *int   `json:"index,omitempty"` // for a refused event: its place in the posted array
}

// Connect is the reply of /connect.
type Connect struct {
	Host string `json:"host"`
	Port int    `json:"port"`
	TLS  bool   `json:"tls,omitempty"` // the port speaks TLS 1.3 (asked for with ?tls=1)
}

// Handler serves the API.
type Handler struct {
	cfg   Config
	reg   *live.Registry
	lns   *listen.Set
	log   *slog.Logger
	ready func() bool
	// AdminElsewhere: an admin listener serves /metrics and /debug/*, so this API shows them only
	// to loopback peers (local tools, and DESIGN.md's GET /metrics on the API port, keep working).
	AdminElsewhere bool
	// Metrics serves GET /metrics (Prometheus text format); nil answers 404.
	Metrics fasthttp.RequestHandler
	// Cluster, when set (a shared store), lists the other live nodes: /connect then picks the
	// least-loaded stream port across all of them.
	Cluster func() []store.NodeLoad
	// Streams takes over Server-Sent Events connections; nil answers 503.
	Streams AttachSSE

	life context.Context // ends on Stop: long-polls return
	stop context.CancelFunc
	// tokens are the watcher tokens a post may carry (SetWatcherToken); cfg.WatcherToken is the first.
	tokens atomic.Pointer[tokens]
}

// tokens is the current watcher token and, after a reload replaced it, the one before until
// its grace ends: a watcher mid-match keeps posting while its operator rolls the new one out.
type tokens struct {
	current, previous string
	until             time.Time
}

// SetWatcherToken makes tok the watcher token (a reload); the one it replaces is accepted for
// grace more. "" disables posting.
func (h *Handler) SetWatcherToken(tok string, grace time.Duration) {
	old := h.tokens.Load()
	if old.current == tok {
		return
	}
	h.tokens.Store(&tokens{current: tok, previous: old.current, until: time.Now().Add(grace)})
}

// WatcherTokens are the tokens a post may carry now: the current one, and the previous one while
// its grace lasts ("" otherwise).
func (h *Handler) WatcherTokens() (current, previous string) {
	t := h.tokens.Load()
	if time.Now().Before(t.until) {
		return t.current, t.previous
	}
	return t.current, ""
}

// New returns the API handler. ready reports whether the daemon is serving (for /healthz).
func New(cfg Config, reg *live.Registry, lns *listen.Set, log *slog.Logger, ready func() bool) *Handler {
	life, stop := context.WithCancel(context.Background())
	h := &Handler{cfg: cfg, reg: reg, lns: lns, log: log, ready: ready, life: life, stop: stop}
	h.tokens.Store(&tokens{current: cfg.WatcherToken})
	return h
}

// Stop makes waiting long-polls return now (before the server shuts down).
func (h *Handler) Stop() { h.stop() }

// Server returns a fasthttp server with the limits an appliance needs: a body cap so a hostile
// watcher cannot make the daemon buffer megabytes, and timeouts so idle API clients go away.
func (h *Handler) Server() *fasthttp.Server {
	return &fasthttp.Server{
		Handler:            h.Serve,
		Name:               "matchstream",
		MaxRequestBodySize: h.cfg.MaxBodySize,
		ReadTimeout:        30 * time.Second,
		WriteTimeout:       30 * time.Second,
		IdleTimeout:        60 * time.Second,
		Logger:             fasthttpLogger{h.log, h.WatcherTokens},
		ErrorHandler:       requestError,
	}
}

// requestError answers a request fasthttp could not read, in our JSON, with the status that says why.
func requestError(ctx *fasthttp.RequestCtx, err error) {
	var small *fasthttp.ErrSmallBuffer
	var ne net.Error
	switch {
	case errors.Is(err, fasthttp.ErrBodyTooLarge):
		writeError(ctx, fasthttp.StatusRequestEntityTooLarge, "request body over the limit (--max-body)")
	case errors.As(err, &small):
		writeError(ctx, fasthttp.StatusRequestHeaderFieldsTooLarge, "request headers too large")
	case errors.As(err, &ne) && ne.Timeout():
		writeError(ctx, fasthttp.StatusRequestTimeout, "request timeout")
	default:
		writeError(ctx, fasthttp.StatusBadRequest, "malformed HTTP request")
	}
}

// fasthttpLogger takes fasthttp's own messages, at debug level. Those about a request it could
// not read quote the raw request, headers and all, so the watcher's bearer token would reach the
// journal: what they say is cut before the quoted request and scrubbed of credentials.
type fasthttpLogger struct {
	log    *slog.Logger
	tokens func() (current, previous string)
}

func (l fasthttpLogger) Printf(format string, args ...any) {
	if !l.log.Enabled(context.Background(), slog.LevelDebug) {
		return // no formatting and no regexps for a line nobody keeps (a flood of bad requests)
	}
	current, previous := l.tokens()
	l.log.Debug("http", "msg", redact(fmt.Sprintf(format, args...), current, previous))
}

var (
	credential = regexp.MustCompile(`(?i)(authorization:\s*(?:(?:bearer|basic)\s+)?|\b(?:bearer|basic)\s+)[^\s"\\]+`)
	// quoted is fasthttp's copy of what it read: `buffer size=N, contents: "..."`, or the request
	// line and more in `... in "..."`.
	quoted = regexp.MustCompile(`(?s)(: buffer size=\d+, contents: |\bin )".*`)
)

// redact removes credentials from a message: the token itself wherever it is, any
// Authorization/Bearer/Basic value, and every quoted copy of the raw request.
func redact(msg string, tokens ...string) string {
	for _, t := range tokens {
		if t != "" {
			msg = strings.ReplaceAll(msg, t, "[redacted]")
		}
	}
	msg = quoted.ReplaceAllString(msg, "${1}[request not logged]")
	return credential.ReplaceAllString(msg, "${1}[redacted]")
}

// Serve routes one request.
func (h *Handler) Serve(ctx *fasthttp.RequestCtx) {
	// Send header names as written: the original sent Match-Stream-API-Version, not fasthttp's
	// normalised Match-Stream-Api-Version. Request headers stay normalised for lookups.
	ctx.Response.Header.DisableNormalizing()
	ctx.Response.Header.Set("Access-Control-Allow-Origin", "*")
	ctx.Response.Header.Set("Match-Stream-API-Version", Version)
	path := string(ctx.Path())
	get := ctx.IsGet() || ctx.IsHead()
	if ctx.IsOptions() {
		preflight(ctx)
		return
	}
	if strings.HasPrefix(path, "/1/") {
		if !get {
			ctx.SetStatusCode(fasthttp.StatusMethodNotAllowed)
			return
		}
		h.serveV1(ctx, strings.TrimPrefix(path, "/1/"))
		return
	}
	switch {
	case path == "/healthz" && get:
		h.healthz(ctx)
	case path == "/connect" && get:
		h.connect(ctx)
	case path == "/matches" && get:
		h.discoverAll(ctx)
		writeJSON(ctx, fasthttp.StatusOK, Summaries(h.reg))
	case (path == "/metrics" || strings.HasPrefix(path, "/debug/")) && get:
		if h.AdminElsewhere && !ctx.RemoteIP().IsLoopback() {
			writeError(ctx, fasthttp.StatusNotFound, path+" is served on the admin listener (--admin), and here to this host only")
			return
		}
		h.ServeAdmin(ctx)
	case strings.HasPrefix(path, "/matches/"):
		id, rest, _ := strings.Cut(strings.TrimPrefix(path, "/matches/"), "/")
		h.discover(ctx, id)
		switch {
		case id == "":
			writeError(ctx, fasthttp.StatusNotFound, "no match id in the path")
		case rest == "" && get:
			h.match(ctx, id)
		case rest == "events" && get:
			h.events(ctx, id)
		case rest == "events" && ctx.IsPost():
			h.post(ctx, id)
		case rest == "stream" && get:
			h.sse(ctx, id)
		case rest == "poll" && get:
			h.poll(ctx, id)
		case rest == "" || rest == "events":
			ctx.Response.Header.Set("Allow", allow(rest))
			writeError(ctx, fasthttp.StatusMethodNotAllowed, "method "+string(ctx.Method())+" not allowed on "+path)
		default:
			writeError(ctx, fasthttp.StatusNotFound, "no such path: "+path)
		}
	default:
		if !get || !h.page(ctx, path) {
			writeError(ctx, fasthttp.StatusNotFound, "no such path: "+path)
		}
	}
}

// ServeAdmin serves the admin listener: the daemon's metrics and state for its operator, which the
// public API shows only to this host once an admin listener exists (AdminElsewhere).
func (h *Handler) ServeAdmin(ctx *fasthttp.RequestCtx) {
	path := string(ctx.Path())
	get := ctx.IsGet() || ctx.IsHead()
	switch {
	case !get:
		ctx.Response.Header.Set("Allow", "GET, HEAD")
		writeError(ctx, fasthttp.StatusMethodNotAllowed, "the admin listener only reads")
	case path == "/metrics" && h.Metrics != nil:
		h.Metrics(ctx)
	case path == "/debug/queues":
		k := ctx.QueryArgs().GetUintOrZero("top")
		if k <= 0 || k > 1000 {
			k = 10
		}
		writeJSON(ctx, fasthttp.StatusOK, queuesOf(h.reg.Longest(k)))
	case path == "/healthz":
		h.healthz(ctx)
	default:
		writeError(ctx, fasthttp.StatusNotFound, "no such path: "+path+" (the admin listener serves /metrics, /debug/queues and /healthz)")
	}
}

// discover reports whether match id exists, reading it from a shared store when this node does
// not know it yet: no node answers 404 for a match another node has acknowledged. A store that
// fails leaves the answer to what this node knows.
func (h *Handler) discover(ctx *fasthttp.RequestCtx, id string) bool {
	if id == "" {
		return false
	}
	ok, err := h.reg.Discover(ctx, id)
	if err != nil {
		h.log.Debug("discovering a match in the store", "match", id, "err", err)
	}
	return ok
}

// discoverAll is discover for the listings: every match the shared store has.
func (h *Handler) discoverAll(ctx *fasthttp.RequestCtx) {
	if err := h.reg.DiscoverAll(ctx); err != nil {
		h.log.Debug("discovering the matches in the store", "err", err)
	}
}

func allow(rest string) string {
	if rest == "events" {
		return "GET, HEAD, POST"
	}
	return "GET, HEAD"
}

func writeJSON(ctx *fasthttp.RequestCtx, code int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		code, b = fasthttp.StatusInternalServerError, []byte(`{"error":"encoding reply"}`)
	}
	ctx.SetStatusCode(code)
	ctx.SetContentType("application/json")
	ctx.SetBody(append(b, '\n'))
}

func writeError(ctx *fasthttp.RequestCtx, code int, msg string) {
	writeJSON(ctx, code, ErrorBody{Error: msg})
}

func (h *Handler) healthz(ctx *fasthttp.RequestCtx) {
	if !h.ready() {
		writeError(ctx, fasthttp.StatusServiceUnavailable, "starting")
		return
	}
	c, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := h.reg.Ping(c); err != nil {
		writeError(ctx, fasthttp.StatusServiceUnavailable, "store: "+err.Error())
		return
	}
	// The pid tells an operator (and the hand-over test) which process answers.
	if at, err := h.reg.WriteFailure(); err != nil {
		// Degraded, not down: clients are served, reads work, only posts fail. 503 so a monitor
		// or a load balancer in front of the watcher's API sees it; the systemd watchdog does not
		// look at this (it probes the match locks), so the daemon and its clients are left alone.
		writeJSON(ctx, fasthttp.StatusServiceUnavailable, map[string]any{"status": "degraded", "pid": os.Getpid(),
			"reason": "the store refuses writes (posts get 503); the last failed at " + at.UTC().Format(time.RFC3339) + ": " + err.Error() +
				"; this clears with the next accepted post"})
		return
	}
	writeJSON(ctx, fasthttp.StatusOK, map[string]any{"status": "ok", "pid": os.Getpid()})
}

// pick is the least-loaded stream port (of the TLS ports if tls), the host a client should dial
// for it (the listener's own address, or, when it listens on every address, the host the client
// reached the API by) and its load; ok is false when there is no such port.
func (h *Handler) pick(ctx *fasthttp.RequestCtx, tls bool) (c Connect, load int64, ok bool) {
	p := h.lns.LeastLoaded(tls)
	if p == nil {
		return Connect{}, 0, false
	}
	load = p.Conns.Load()
	host := "127.0.0.1"
	if a, ok := p.Addr().(*net.TCPAddr); ok {
		host = a.IP.String()
		if a.IP.IsUnspecified() {
			host = string(ctx.Host())
			if hh, _, err := net.SplitHostPort(host); err == nil {
				host = hh
			}
		}
	}
	return Connect{Host: host, Port: p.Number(), TLS: tls}, load, true
}

func (h *Handler) connect(ctx *fasthttp.RequestCtx) {
	if id := string(ctx.QueryArgs().Peek("match")); id != "" {
		if ok := h.discover(ctx, id); !ok {
			writeError(ctx, fasthttp.StatusNotFound, "match "+id+" not found")
			return
		}
	}
	tls := ctx.QueryArgs().GetBool("tls") // 1, true, yes and their spellings
	best, bestLoad, ok := h.pick(ctx, tls)
	if !ok {
		msg := "this daemon has no TLS stream port (--stream-tls)"
		if !tls {
			msg = "this daemon has TLS stream ports only: ask with ?tls=1"
		}
		writeError(ctx, fasthttp.StatusNotFound, msg)
		return
	}
	if h.Cluster != nil && !tls { // nodes announce their plain ports only
		for _, n := range h.Cluster() {
			for port, conns := range n.Ports {
				if conns < bestLoad { // another node only when strictly less loaded than this one

					best, bestLoad = Connect{Host: n.Host, Port: port}, conns
				}
			}
		}
	}
	writeJSON(ctx, fasthttp.StatusOK, best)
}

func (h *Handler) match(ctx *fasthttp.RequestCtx, id string) {
	s, ok := h.reg.State(id)
	if !ok {
		writeError(ctx, fasthttp.StatusNotFound, "match "+id+" not found")
		return
	}
	writeJSON(ctx, fasthttp.StatusOK, s)
}

// position reads the seq a read path starts after, from the first of names the query has (all
// given must agree). It answers the request itself and returns false when the value is not a
// sequence number, or is past the match's last event: that cannot be a real client's position (a
// client resumes from a seq it was sent), and it must never read as "from the start". 0 without
// one; a match that does not exist is for the caller to refuse.
func (h *Handler) position(ctx *fasthttp.RequestCtx, id string, names ...string) (uint64, bool) {
	var pos uint64
	var from string
	for _, name := range names {
		v := ctx.QueryArgs().Peek(name)
		if len(v) == 0 {
			continue
		}
		n, err := strconv.ParseUint(string(v), 10, 64)
		if err != nil {
			writeError(ctx, fasthttp.StatusBadRequest, name+" must be a sequence number")
			return 0, false
		}
		if from != "" && n != pos {
			writeError(ctx, fasthttp.StatusBadRequest, strings.Join(names, " and ")+" differ: give one")
			return 0, false
		}
		pos, from = n, name
	}
	if last, ok := h.reg.Seq(id); ok && pos > last {
		writeError(ctx, fasthttp.StatusBadRequest,
			fmt.Sprintf("%s %d is past the last event of %s (%d)", from, pos, id, last))
		return 0, false
	}
	return pos, true
}

func (h *Handler) events(ctx *fasthttp.RequestCtx, id string) {
	// The history is read as the store has it, not as this node last followed it: a watcher told
	// 504 reads back here whether its event was stored, before it posts it again.
	if err := h.reg.Sync(ctx, id); err != nil {
		writeError(ctx, fasthttp.StatusServiceUnavailable, "cannot read the store: "+err.Error())
		return
	}
	from, ok := h.position(ctx, id, "from")
	if !ok {
		return
	}
	recs, ok, err := h.reg.Events(ctx, id, from)
	switch {
	case !ok:
		writeError(ctx, fasthttp.StatusNotFound, "match "+id+" not found")
	case err != nil:
		writeError(ctx, fasthttp.StatusServiceUnavailable, err.Error())
	default:
		writeJSON(ctx, fasthttp.StatusOK, recs)
	}
}

func (h *Handler) authorized(ctx *fasthttp.RequestCtx) bool {
	tok, ok := bytes.CutPrefix(ctx.Request.Header.Peek("Authorization"), []byte("Bearer "))
	tok = bytes.TrimSpace(tok)
	current, previous := h.WatcherTokens()
	match := func(want string) bool { return want != "" && subtle.ConstantTimeCompare(tok, []byte(want)) == 1 }
	return ok && (match(current) || match(previous))
}

// serverTiming tells the watcher how long the daemon took over its post, from the request read to
// the answer (store commit included), in a Server-Timing header (W3C Server Timing): "post;dur="
// and milliseconds. A watcher's own clock also counts its network and its own scheduling; on a
// loaded host those can be most of it, and this says which part was the daemon's.
func serverTiming(ctx *fasthttp.RequestCtx) {
	ms := float64(time.Since(ctx.Time()).Microseconds()) / 1000
	ctx.Response.Header.Set("Server-Timing", "post;dur="+strconv.FormatFloat(ms, 'f', 3, 64))
}

// DecodeEvents parses a POST body: one event object or a JSON array of them.
func DecodeEvents(body []byte) ([]match.Event, error) {
	body = bytes.TrimSpace(body)
	if len(body) == 0 {
		return nil, &live.EventError{Err: errors.New("empty body: post one event or a JSON array of events")}
	}
	if body[0] != '[' {
		e, err := match.DecodeEvent(body)
		if err != nil {
			return nil, &live.EventError{Err: err}
		}
		return []match.Event{e}, nil
	}
	var raws []json.RawMessage
	if err := json.Unmarshal(body, &raws); err != nil {
		return nil, &live.EventError{Err: fmt.Errorf("invalid JSON array: %w", err)}
	}
	evs := make([]match.Event, 0, len(raws))
	for i, raw := range raws {
		e, err := match.DecodeEvent(raw)
		if err != nil {
			return nil, &live.EventError{Index: i, Err: err}
		}
		evs = append(evs, e)
	}
	return evs, nil
}

func (h *Handler) post(ctx *fasthttp.RequestCtx, id string) {
	if !ctx.IsTLS() && !ctx.RemoteIP().IsLoopback() && !h.cfg.ClearPosts {
		writeError(ctx, fasthttp.StatusForbidden, "watcher posts are accepted over HTTPS or from this host only: "+
			"the bearer token would cross the network in clear text (post to https://, or start the daemon with --clear-posts)")
		return
	}
	if !h.authorized(ctx) {
		ctx.Response.Header.Set("WWW-Authenticate", `Bearer realm="matchstream watcher"`)
		msg := "missing or wrong watcher token (Authorization: Bearer <token>)"
		if current, _ := h.WatcherTokens(); current == "" {
			msg = "posting is disabled: the daemon has no watcher token configured"
		}
		writeError(ctx, fasthttp.StatusUnauthorized, msg)
		return
	}
	defer serverTiming(ctx)
	if err := match.CheckID(id); err != nil {
		writeError(ctx, fasthttp.StatusBadRequest, err.Error())
		return
	}
	// Idempotency-Key: a batch posted again under the same key (after a 504) is not stored twice.
	key := string(ctx.Request.Header.Peek("Idempotency-Key"))
	if key != "" && match.CheckID(key) != nil {
		writeError(ctx, fasthttp.StatusBadRequest, "Idempotency-Key must be 1-200 printable characters without '/', ':' or spaces")
		return
	}
	evs, err := DecodeEvents(ctx.PostBody())
	if err == nil {
		now := time.Now().UTC()
		for i := range evs {
			if evs[i].At.IsZero() {
				evs[i].At = now // a live watcher may leave the time to the server
			}
		}
		var recs []match.Record
		c, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		recs, err = h.reg.PostOnce(c, id, key, evs)
		cancel()
		if err == nil {
			res := PostResult{Match: id, Seq: recs[len(recs)-1].Seq, Seqs: make([]uint64, len(recs))}
			for i, r := range recs {
				res.Seqs[i] = r.Seq
			}
			writeJSON(ctx, fasthttp.StatusCreated, res)
			return
		}
	}
	var ee *live.EventError
	switch {
	case errors.As(err, &ee):
		body := ErrorBody{Error: ee.Err.Error()}
		if bytes.HasPrefix(bytes.TrimSpace(ctx.PostBody()), []byte("[")) {
			body.Error, body.Index = ee.Error(), &ee.Index // say which event of the array
		}
		writeJSON(ctx, fasthttp.StatusBadRequest, body)
	case errors.Is(err, store.ErrOutcomeUnknown):
		h.log.Error("post events", "match", id, "err", err)
		writeError(ctx, fasthttp.StatusGatewayTimeout, "the store did not confirm: the events may or may not be stored; "+
			"GET /matches/"+id+"/events before posting them again")
	case errors.Is(err, live.ErrHandingOver):
		ctx.Response.Header.Set("Retry-After", "1")
		writeError(ctx, fasthttp.StatusServiceUnavailable, "restarting, nothing was accepted: retry")
	case errors.Is(err, live.ErrStore):
		h.log.Error("post events", "match", id, "err", err)
		ctx.Response.Header.Set("Retry-After", "1")
		writeError(ctx, fasthttp.StatusServiceUnavailable, "store unavailable, nothing was accepted: retry")
	default:
		h.log.Error("post events", "match", id, "err", err)
		writeError(ctx, fasthttp.StatusInternalServerError, err.Error())
	}
}
