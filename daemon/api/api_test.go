package api_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/valyala/fasthttp"
	"github.com/valyala/fasthttp/fasthttputil"

	"matchstream/daemon/api"
	"matchstream/daemon/hub"
	"matchstream/daemon/listen"
	"matchstream/daemon/live"
	"matchstream/daemon/match"
	"matchstream/daemon/store"
	"matchstream/daemon/store/bolt"
)

var update = flag.Bool("update", false, "rewrite golden files")

const token = "s3cret"

// fixture is an API over a real registry and bolt store, served on an in-memory listener.
type fixture struct {
	t      testing.TB
	client *fasthttp.Client
	reg    *live.Registry
	st     *failingStore
	ports  []*listen.Port
	dial   func() (net.Conn, error)
	h      *api.Handler
}

// failingStore wraps a store and can be made to fail appends, like a store that is down.
type failingStore struct {
	store.Store
	down, unknown bool
}

func (f *failingStore) Append(ctx context.Context, id string, recs []match.Record) error {
	if f.down {
		return errors.New("disk on fire")
	}
	if f.unknown {
		return fmt.Errorf("redis read timeout: %w", store.ErrOutcomeUnknown)
	}
	return f.Store.Append(ctx, id, recs)
}

// memStore is an in-memory store.Store for the fuzzer, which cannot afford an fsync per input.
type memStore struct {
	mu   sync.Mutex
	recs map[string][]match.Record
}

func (m *memStore) Append(_ context.Context, id string, recs []match.Record) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := store.CheckAppend(id, uint64(len(m.recs[id])), recs); err != nil {
		return err
	}
	m.recs[id] = append(m.recs[id], recs...)
	return nil
}
func (m *memStore) Matches(context.Context) ([]string, error) { return nil, nil }
func (m *memStore) Events(context.Context, string, uint64) ([]match.Record, error) {
	return nil, nil
}
func (m *memStore) Ping(context.Context) error { return nil }
func (m *memStore) Close() error               { return nil }

func newFixture(t testing.TB) *fixture {
	t.Helper()
	b, err := bolt.Open(filepath.Join(t.TempDir(), "m.db"), time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	return newFixtureOn(t, b)
}

func newFixtureOn(t testing.TB, backing store.Store) *fixture {
	st := &failingStore{Store: backing}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	reg, err := live.Open(context.Background(), st, live.Config{Hub: hub.Config{QueueLimit: 64}, MaxAhead: 5 * time.Minute}, log)
	if err != nil {
		t.Fatal(err)
	}
	var ports []*listen.Port
	for range 3 {
		ln, err := listen.Bind("127.0.0.1:0", 128)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { ln.Close() })
		ports = append(ports, &listen.Port{Listener: ln})
	}
	ports[0].Conns.Store(5)
	ports[1].Conns.Store(2)
	ports[2].Conns.Store(9)
	lns := &listen.Set{Stream: ports}
	h := api.New(api.Config{WatcherToken: token, MaxBodySize: 64 << 10}, reg, lns, log, func() bool { return true })
	mem := fasthttputil.NewInmemoryListener()
	srv := h.Server()
	go srv.Serve(mem)
	t.Cleanup(func() { srv.Shutdown(); mem.Close() })
	// The fixture's requests come from this host, as a local watcher's would (posts need it or TLS).
	local := func() (net.Conn, error) {
		return mem.DialWithLocalAddr(&net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 40000})
	}
	return &fixture{t: t, reg: reg, st: st, client: &fasthttp.Client{DisableHeaderNamesNormalizing: true,
		Dial: func(string) (net.Conn, error) { return local() }}, ports: ports, dial: local, h: h}
}

func (f *fixture) do(method, path, auth, body string) (int, []byte, *fasthttp.ResponseHeader) {
	f.t.Helper()
	req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
	req.Header.SetMethod(method)
	req.SetRequestURI("http://matchstream" + path)
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	req.SetBodyString(body)
	if err := f.client.Do(req, resp); err != nil {
		f.t.Fatal(err)
	}
	var hdr fasthttp.ResponseHeader
	resp.Header.CopyTo(&hdr)
	return resp.StatusCode(), append([]byte(nil), resp.Body()...), &hdr
}

func sampleLines(t testing.TB) []string {
	b, err := os.ReadFile("../../testdata/matches/elp-tig-2011-09-10.jsonl")
	if err != nil {
		t.Fatal(err)
	}
	return strings.Split(strings.TrimSpace(string(b)), "\n")
}

const id = "elp-tig-2011-09-10"

func (f *fixture) postSample(n int) { f.postSampleAs(id, n) }

func (f *fixture) postSampleAs(matchID string, n int) {
	f.t.Helper()
	lines := sampleLines(f.t)[:n]
	code, body, _ := f.do("POST", "/matches/"+matchID+"/events", "Bearer "+token, "["+strings.Join(lines, ",")+"]")
	if code != 201 {
		f.t.Fatalf("post sample: %d %s", code, body)
	}
}

func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		os.WriteFile(path, got, 0o644)
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (go test -update)", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s:\ngot  %s\nwant %s", name, got, want)
	}
}

// The original's read API: same paths, same JSON, same headers.
func TestOriginalAPI(t *testing.T) {
	f := newFixture(t)
	f.postSample(31)
	for _, tc := range []struct {
		path, golden string
		code         int
	}{
		{"/1/matches", "v1_matches.json", 200},
		{"/1/match/" + id, "v1_match.json", 200},
		{"/1/match/" + id + "/history", "v1_history.json", 200},
		{"/1/match/nope", "", 404},
		{"/1/match/nope/history", "", 404},
		{"/1/other", "", 404},
	} {
		t.Run(tc.path, func(t *testing.T) {
			code, body, hdr := f.do("GET", tc.path, "", "")
			if code != tc.code {
				t.Fatalf("status %d, want %d: %s", code, tc.code, body)
			}
			var raw bytes.Buffer
			for k, v := range hdr.All() {
				raw.WriteString(string(k) + ": " + string(v) + "\n")
			}
			for _, h := range []string{"Access-Control-Allow-Origin: *\n", "Match-Stream-API-Version: 1\n"} {
				if !strings.Contains(raw.String(), h) {
					t.Errorf("header %q missing in\n%s", h, raw.String())
				}
			}
			if tc.golden != "" {
				golden(t, tc.golden, body)
			}
		})
	}
}

// checkin and connect answer with the least-loaded stream port (the fixture's second, 2 connections).
func TestLeastLoadedPort(t *testing.T) {
	f := newFixture(t)
	f.postSample(1)
	want := f.ports[1].Number()
	var v1 struct{ Port int }
	_, body, _ := f.do("GET", "/1/checkin", "", "")
	if json.Unmarshal(body, &v1) != nil || v1.Port != want {
		t.Errorf("/1/checkin = %s, want port %d", body, want)
	}
	var c api.Connect
	_, body, _ = f.do("GET", "/connect?match="+id, "", "")
	if json.Unmarshal(body, &c) != nil || c.Port != want || c.Host != "127.0.0.1" {
		t.Errorf("/connect = %s, want 127.0.0.1:%d", body, want)
	}
	f.ports[1].Conns.Store(50)
	_, body, _ = f.do("GET", "/connect", "", "")
	if json.Unmarshal(body, &c) != nil || c.Port != f.ports[0].Number() {
		t.Errorf("/connect after load moved = %s, want port %d", body, f.ports[0].Number())
	}
}

func TestOursAPI(t *testing.T) {
	f := newFixture(t)
	f.postSample(10)
	for _, tc := range []struct {
		path, golden string
		code         int
	}{
		{"/matches", "matches.json", 200},
		{"/matches/" + id, "match.json", 200},
		{"/matches/" + id + "/events?from=8", "events_from_8.json", 200},
		{"/matches/" + id + "/events?from=99", "events_from_99.json", 400},
		{"/matches/" + id + "/events?from=x", "events_bad_from.json", 400},
		{"/matches/nope", "match_unknown.json", 404},
		{"/connect?match=nope", "connect_unknown.json", 404},
		{"/healthz", "healthz.json", 200},
		{"/nope", "nope.json", 404},
	} {
		t.Run(tc.path, func(t *testing.T) {
			code, body, _ := f.do("GET", tc.path, "", "")
			if code != tc.code {
				t.Fatalf("status %d, want %d: %s", code, tc.code, body)
			}
			// The pid differs per run: the golden file has 0.
			body = bytes.Replace(body, []byte(fmt.Sprintf(`"pid":%d`, os.Getpid())), []byte(`"pid":0`), 1)
			golden(t, tc.golden, body)
		})
	}
}

func TestPostEvents(t *testing.T) {
	f := newFixture(t)
	lines := sampleLines(t)
	post := func(auth, body string) (int, string) {
		code, b, _ := f.do("POST", "/matches/"+id+"/events", auth, body)
		return code, string(b)
	}
	for _, tc := range []struct {
		name, auth, body string
		code             int
		want             string
	}{
		{"no token", "", lines[0], 401, "watcher token"},
		{"wrong token", "Bearer nope", lines[0], 401, "watcher token"},
		{"basic auth", "Basic " + token, lines[0], 401, "watcher token"},
		{"not started", "Bearer " + token, lines[1], 400, "first event must be start"},
		{"garbage", "Bearer " + token, "{{{", 400, "invalid event JSON"},
		{"empty", "Bearer " + token, "", 400, "empty body"},
		{"start", "Bearer " + token, lines[0], 201, `{"match":"elp-tig-2011-09-10","seq":1,"seqs":[1]}`},
		{"batch with a bad event is refused whole", "Bearer " + token,
			"[" + lines[1] + `,{"kind":"goal","team":"tig","player":{"number":99},"at":"2011-09-10T21:01:00Z"}]`, 400,
			`{"error":"event 1: player 99 is not on the pitch for tig","index":1}`},
		{"unknown field", "Bearer " + token, `{"kind":"stop","colour":"red"}`, 400, "unknown field"},
		{"batch", "Bearer " + token, "[" + lines[1] + "," + lines[2] + "]", 201, `"seqs":[2,3]`},
		{"time goes back", "Bearer " + token, lines[1], 400, "goes back in time"},
		{"no at: server time", "Bearer " + token, `{"kind":"comment","comment":"live"}`, 201, `"seq":4`},
		{"duplicate key", "Bearer " + token, `[{"kind":"comment","comment":"x"},{"kind":"comment","comment":"x","kind":"stop"}]`, 400,
			`{"error":"event 1: invalid event JSON: duplicate key \"kind\"","index":1}`},
		{"far future", "Bearer " + token, `{"kind":"comment","comment":"x","at":"9999-12-31T23:59:59Z"}`, 400, "ahead of the server clock"},
		{"frame injection", "Bearer " + token, `{"kind":"comment","comment":"a\r\nERROR: fake\r\n"}`, 400, "control character U+000D"},
		{"NUL", "Bearer " + token, `{"kind":"comment","comment":"a\u0000b"}`, 400, "control character U+0000"},
		{"the match still takes events", "Bearer " + token, `{"kind":"comment","comment":"still live"}`, 201, `"seq":5`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, body := post(tc.auth, tc.body)
			if code != tc.code || !strings.Contains(body, tc.want) {
				t.Fatalf("POST = %d %s; want %d containing %q", code, body, tc.code, tc.want)
			}
		})
	}
	if recs, _, _ := f.reg.Events(context.Background(), id, 0); len(recs) != 5 {
		t.Fatalf("%d events stored, want 5", len(recs))
	}
	if code, body, _ := f.do("POST", "/matches/a%0D%0Ab/events", "Bearer "+token, sampleLines(t)[0]); code != 400 || !strings.Contains(string(body), "match id") {
		t.Fatalf("a match id with CR LF: %d %s", code, body)
	}
	// A body over --max-body is refused from its Content-Length, before it is read.
	c, err := f.dial()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	io.WriteString(c, "POST /matches/"+id+"/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "+token+
		"\r\nContent-Length: 1000000\r\n\r\n{")
	resp, _ := io.ReadAll(c)
	if !bytes.HasPrefix(resp, []byte("HTTP/1.1 413 ")) || !bytes.Contains(resp, []byte("over the limit")) {
		t.Fatalf("huge body: %s", resp)
	}
	f.st.down = true
	code, body, hdr := f.do("POST", "/matches/"+id+"/events", "Bearer "+token, `{"kind":"comment","comment":"x"}`)
	if code != 503 || string(hdr.Peek("Retry-After")) == "" || !strings.Contains(string(body), "retry") {
		t.Fatalf("store down: %d %s", code, body)
	}
	f.st.down = false
	// A store that took the command and never answered: 504, and no invitation to retry.
	f.st.unknown = true
	code, body, _ = f.do("POST", "/matches/"+id+"/events", "Bearer "+token, `{"kind":"comment","comment":"x"}`)
	if code != 504 || !strings.Contains(string(body), "may or may not be stored") {
		t.Fatalf("outcome unknown: %d %s", code, body)
	}
	f.st.unknown = false
	if recs, _, _ := f.reg.Events(context.Background(), id, 0); len(recs) != 5 {
		t.Fatalf("a refused post changed the history: %d events", len(recs))
	}
	if code, body, _ := f.do("DELETE", "/matches/"+id+"/events", "Bearer "+token, ""); code != 405 {
		t.Fatalf("DELETE = %d %s", code, body)
	}
}

// FuzzPostEvents: no body makes the handler fail with anything but a 201, 400 or 413, and an
// accepted body leaves a history that the v1 history endpoint still renders.
func FuzzPostEvents(f *testing.F) {
	f.Add(`{"kind":"comment","comment":"x"}`)
	f.Add(`[{"kind":"stop"}]`)
	f.Add(`[{"kind":"goal","team":"tig","player":{"number":7}}]`)
	f.Add(`{"kind":"card","team":"elp","card":"red","player":{"number":25}}`)
	fx := newFixtureOn(f, &memStore{recs: map[string][]match.Record{}})
	n := 0
	f.Fuzz(func(t *testing.T, body string) {
		n++
		fx.t = t                          // inputs run one at a time in a worker: report on this one
		m := fmt.Sprintf("elp-tig-%d", n) // a fresh match per input
		fx.postSampleAs(m, 1)
		code, _, _ := fx.do("POST", "/matches/"+m+"/events", "Bearer "+token, body)
		if code != 201 && code != 400 && code != 413 {
			t.Fatalf("POST %q = %d", body, code)
		}
		for _, p := range []string{"/1/match/" + m + "/history", "/matches/" + m, "/1/match/" + m} {
			if code, b, _ := fx.do("GET", p, "", ""); code != 200 || !json.Valid(b) {
				t.Fatalf("GET %s after POST %q: %d %s", p, body, code, b)
			}
		}
	})
}

// FuzzReadRequests sends arbitrary paths and queries under a match (event streams, long-polls with
// any after and timeout, Last-Event-ID as a query, events?from=): never a panic, only the statuses
// the API documents, and JSON wherever JSON is promised.
func FuzzReadRequests(f *testing.F) {
	for _, s := range []string{"stream", "stream?last_event_id=3", "stream?last_event_id=99999999999999999999",
		"poll?after=2&timeout=0.01", "poll?after=-1", "poll?timeout=1e308", "poll?timeout=NaN", "events?from=2", "x/y", ""} {
		f.Add(s)
	}
	fx := newFixtureOn(f, &memStore{recs: map[string][]match.Record{}})
	fx.postSample(5)
	fx.h.Stop() // long-polls answer at once: the fuzzer must not wait for their timeouts
	f.Fuzz(func(t *testing.T, rest string) {
		if strings.ContainsFunc(rest, func(r rune) bool { return r <= ' ' || r >= 0x7f || r == '#' }) {
			return // not a request line a client can send: the fixture's client refuses it
		}
		fx.t = t
		code, b, hdr := fx.do("GET", "/matches/"+id+"/"+rest, "", "")
		switch code {
		case 200, 204, 400, 404, 405, 431, 503: // 431: a request line over fasthttp's buffer
		default:
			t.Fatalf("GET %q = %d %s", rest, code, b)
		}
		if strings.HasPrefix(string(hdr.ContentType()), "application/json") && !json.Valid(b) {
			t.Fatalf("GET %q: invalid JSON %s", rest, b)
		}
	})
}

// A position past the match's last event is refused on every read path that takes one, as the v3
// FROM is: it cannot be a client's real position, and it must never read as "from the start".
func TestReadPastTheEnd(t *testing.T) {
	f := newFixture(t)
	f.postSample(31) // over: a long-poll answers at once
	huge := "18446744073709551615"
	for _, tc := range []struct {
		path string
		code int
		want string
	}{
		{"/matches/" + id + "/poll?from=" + huge, 400, "past the last event"},
		{"/matches/" + id + "/poll?after=" + huge, 400, "past the last event"},
		{"/matches/" + id + "/poll?after=32", 400, "past the last event"},
		{"/matches/" + id + "/poll?after=2&from=3", 400, "after and from differ"},
		{"/matches/" + id + "/events?from=" + huge, 400, "past the last event"},
		{"/matches/" + id + "/events?from=32", 400, "past the last event"},
		{"/matches/" + id + "/events?from=31", 200, "[]"},
		{"/matches/" + id + "/poll?from=31", 200, `"events":[]`},
		{"/matches/" + id + "/poll?from=30", 200, `"seq":31`},
	} {
		code, body, _ := f.do("GET", tc.path, "", "")
		if code != tc.code || !strings.Contains(string(body), tc.want) {
			t.Errorf("GET %s = %d %s; want %d with %q", tc.path, code, body, tc.code, tc.want)
		}
	}
}

// syncWriter collects log output from the server's goroutines.
type syncWriter struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (w *syncWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.Write(p)
}
func (w *syncWriter) String() string { w.mu.Lock(); defer w.mu.Unlock(); return w.b.String() }

// The watcher token never reaches the log, at any level, however broken the request it came in.
func TestTokenNeverLogged(t *testing.T) {
	out := &syncWriter{}
	log := slog.New(slog.NewTextHandler(out, &slog.HandlerOptions{Level: slog.LevelDebug}))
	b, err := bolt.Open(filepath.Join(t.TempDir(), "m.db"), time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	reg, err := live.Open(context.Background(), b, live.Config{Hub: hub.Config{QueueLimit: 64}}, log)
	if err != nil {
		t.Fatal(err)
	}
	h := api.New(api.Config{WatcherToken: token, MaxBodySize: 64 << 10}, reg, &listen.Set{}, log, func() bool { return true })
	mem := fasthttputil.NewInmemoryListener()
	srv := h.Server()
	go srv.Serve(mem)
	t.Cleanup(func() { srv.Shutdown(); mem.Close() })
	for _, req := range []string{
		"POST /matches/x/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + token + "\r\nContent-Length: zz\r\n\r\n",
		"POST /matches/x/events HTTP/1.1\r\nAuthorization: Bearer " + token + "\r\nHost x\r\n\r\n",
		"GARBAGE\x00 / HTTP/1.1\r\nAuthorization: Bearer " + token + "\r\n\r\n",
		"POST /matches/x/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + token + "\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
		"POST /matches/x/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer wrong-" + token + "\r\nContent-Length: 2\r\n\r\n{}",
	} {
		c, err := mem.Dial()
		if err != nil {
			t.Fatal(err)
		}
		io.WriteString(c, strings.Replace(req, "\r\n", "\r\nConnection: close\r\n", 1))
		io.ReadAll(c)
		c.Close()
	}
	deadline := time.Now().Add(5 * time.Second)
	for !strings.Contains(out.String(), "http") && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	logged := out.String()
	if !strings.Contains(logged, "http") {
		t.Fatalf("nothing logged about the malformed requests: the test proves nothing\n%s", logged)
	}
	if strings.Contains(logged, token) {
		t.Fatalf("the token is in the log:\n%s", logged)
	}
}

// /healthz says when the store stops taking writes (a full disk: every post 503), with the reason,
// and recovers with the next accepted post; reads and streams are not affected by it.
func TestHealthShowsFailingWrites(t *testing.T) {
	f := newFixture(t)
	f.postSample(5)
	health := func() (int, map[string]any) {
		code, body, _ := f.do("GET", "/healthz", "", "")
		var v map[string]any
		if err := json.Unmarshal(body, &v); err != nil {
			t.Fatalf("healthz %d: %s", code, body)
		}
		return code, v
	}
	if code, v := health(); code != 200 || v["status"] != "ok" {
		t.Fatalf("healthy store: %d %v", code, v)
	}
	f.st.down = true
	if code, _, _ := f.do("POST", "/matches/"+id+"/events", "Bearer "+token, `{"kind":"comment","comment":"x"}`); code != 503 {
		t.Fatalf("post to a failing store: %d", code)
	}
	code, v := health()
	if code != 503 || v["status"] != "degraded" || !strings.Contains(fmt.Sprint(v["reason"]), "disk on fire") {
		t.Fatalf("after a failed write: %d %v; want 503 degraded with the store's error", code, v)
	}
	if code, _, _ := f.do("GET", "/matches/"+id+"/events", "", ""); code != 200 {
		t.Fatalf("reads while writes fail: %d", code)
	}
	f.st.down = false
	if code, _, _ := f.do("POST", "/matches/"+id+"/events", "Bearer "+token, `{"kind":"comment","comment":"x"}`); code != 201 {
		t.Fatalf("post after the store recovered: %d", code)
	}
	if code, v := health(); code != 200 || v["status"] != "ok" {
		t.Fatalf("after a write succeeded again: %d %v", code, v)
	}
}

// A watcher's post is answered with the daemon's own time for it (Server-Timing), so a watcher on a
// loaded host can tell the daemon's part from its own; an unauthorized request learns nothing.
func TestPostServerTiming(t *testing.T) {
	f := newFixture(t)
	lines := sampleLines(t)
	for _, tc := range []struct {
		name, auth, body string
		code             int
		timed            bool
	}{
		{"accepted", "Bearer " + token, lines[0], 201, true},
		{"refused event", "Bearer " + token, lines[0], 400, true},
		{"no token", "", lines[1], 401, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, body, hdr := f.do("POST", "/matches/"+id+"/events", tc.auth, tc.body)
			if code != tc.code {
				t.Fatalf("POST = %d %s, want %d", code, body, tc.code)
			}
			st := string(hdr.Peek("Server-Timing"))
			if !tc.timed {
				if st != "" {
					t.Fatalf("Server-Timing %q on a %d", st, code)
				}
				return
			}
			ms, ok := strings.CutPrefix(st, "post;dur=")
			if d, err := strconv.ParseFloat(ms, 64); !ok || err != nil || d < 0 || d > 10_000 {
				t.Fatalf("Server-Timing %q, want post;dur=<milliseconds>", st)
			}
		})
	}
}

// serveFrom runs one request through serve as if it came from remote.
func serveFrom(serve fasthttp.RequestHandler, remote, method, path string) (int, string) {
	var req fasthttp.Request
	req.Header.SetMethod(method)
	req.SetRequestURI("http://matchstream" + path)
	var ctx fasthttp.RequestCtx
	ctx.Init(&req, &net.TCPAddr{IP: net.ParseIP(remote), Port: 40000}, nil)
	serve(&ctx)
	return ctx.Response.StatusCode(), string(ctx.Response.Body())
}

// With an admin listener, the public API shows the metrics and debug state to this host only; the
// admin listener serves them, reads only, and nothing else.
func TestAdminListener(t *testing.T) {
	f := newFixture(t)
	f.h.Metrics = func(ctx *fasthttp.RequestCtx) { ctx.WriteString("matchstream_up 1\n") }
	for _, tc := range []struct {
		name           string
		admin, public  bool // serve with ServeAdmin / with Serve
		elsewhere      bool // an admin listener exists
		remote, method string
		path           string
		code           int
		want           string
	}{
		{"admin: metrics", true, false, true, "127.0.0.1", "GET", "/metrics", 200, "matchstream_up 1"},
		{"admin: queues", true, false, true, "127.0.0.1", "GET", "/debug/queues?top=3", 200, "["},
		{"admin: health", true, false, true, "127.0.0.1", "GET", "/healthz", 200, ""},
		{"admin: no matches", true, false, true, "127.0.0.1", "GET", "/matches", 404, "admin listener serves"},
		{"admin: no posts", true, false, true, "127.0.0.1", "POST", "/metrics", 405, "only reads"},
		{"public, remote: metrics elsewhere", false, true, true, "192.0.2.7", "GET", "/metrics", 404, "admin listener"},
		{"public, remote: queues elsewhere", false, true, true, "192.0.2.7", "GET", "/debug/queues", 404, "admin listener"},
		{"public, loopback: metrics", false, true, true, "127.0.0.1", "GET", "/metrics", 200, "matchstream_up 1"},
		{"public, IPv6 loopback: metrics", false, true, true, "::1", "GET", "/metrics", 200, "matchstream_up 1"},
		{"public, remote, no admin listener: metrics", false, true, false, "192.0.2.7", "GET", "/metrics", 200, "matchstream_up 1"},
		{"public, remote: reads stay", false, true, true, "192.0.2.7", "GET", "/matches", 200, "["},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f.h.AdminElsewhere = tc.elsewhere
			serve := f.h.Serve
			if tc.admin {
				serve = f.h.ServeAdmin
			}
			code, body := serveFrom(serve, tc.remote, tc.method, tc.path)
			if code != tc.code || !strings.Contains(body, tc.want) {
				t.Fatalf("%s %s from %s = %d %q; want %d containing %q", tc.method, tc.path, tc.remote, code, body, tc.code, tc.want)
			}
		})
	}
}

// A reload's new watcher token works at once; the one it replaced works for its grace, then not.
func TestWatcherTokenRotation(t *testing.T) {
	f := newFixture(t)
	lines := sampleLines(t)
	post := func(tok string) int {
		code, _, _ := f.do("POST", "/matches/"+id+"/events", "Bearer "+tok, lines[0])
		return code
	}
	if c := post(token); c != 201 {
		t.Fatalf("first token: %d", c)
	}
	f.h.SetWatcherToken("second-token", time.Hour)
	comment := func(tok string) int {
		code, _, _ := f.do("POST", "/matches/"+id+"/events", "Bearer "+tok, `{"kind":"comment","comment":"x"}`)
		return code
	}
	for _, tc := range []struct {
		tok  string
		want int
	}{{"second-token", 201}, {token, 201}, {"third-token", 401}, {"", 401}} {
		if c := comment(tc.tok); c != tc.want {
			t.Errorf("within the grace, token %q: %d, want %d", tc.tok, c, tc.want)
		}
	}
	f.h.SetWatcherToken("third-token", 0) // no grace: "second-token" ends now, the first ended before
	for _, tc := range []struct {
		tok  string
		want int
	}{{"third-token", 201}, {"second-token", 401}, {token, 401}} {
		if c := comment(tc.tok); c != tc.want {
			t.Errorf("after a reload without grace, token %q: %d, want %d", tc.tok, c, tc.want)
		}
	}
	f.h.SetWatcherToken("", 0)
	if code, body, _ := f.do("POST", "/matches/"+id+"/events", "Bearer third-token", `{"kind":"comment","comment":"x"}`); code != 401 || !strings.Contains(string(body), "posting is disabled") {
		t.Errorf("with no token: %d %s", code, body)
	}
}

// A watcher post from another host over plain HTTP is refused before its token is looked at,
// unless ClearPosts; from this host it goes on to the token check. (Over TLS: daemon's TestTLS.)
func TestPostsNeedTLSOrLoopback(t *testing.T) {
	f := newFixture(t)
	clear := api.New(api.Config{WatcherToken: token, MaxBodySize: 64 << 10, ClearPosts: true}, f.reg, &listen.Set{}, slog.New(slog.DiscardHandler), func() bool { return true })
	for _, tc := range []struct {
		name   string
		serve  fasthttp.RequestHandler
		remote string
		code   int
	}{
		{"remote, clear text", f.h.Serve, "192.0.2.7", 403},
		{"remote IPv6, clear text", f.h.Serve, "2001:db8::7", 403},
		{"loopback", f.h.Serve, "127.0.0.1", 401},
		{"IPv6 loopback", f.h.Serve, "::1", 401},
		{"remote, --clear-posts", clear.Serve, "192.0.2.7", 401},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, body := serveFrom(tc.serve, tc.remote, "POST", "/matches/"+id+"/events")
			if code != tc.code {
				t.Fatalf("POST from %s = %d %s, want %d", tc.remote, code, body, tc.code)
			}
		})
	}
}
