package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// sseEvent is one parsed Server-Sent Event.
type sseEvent struct{ id, event, data string }

// parseSSE splits an event-stream response into its head and events; comments (heartbeats) are
// counted apart.
func parseSSE(t *testing.T, raw []byte) (head string, events []sseEvent, comments int) {
	t.Helper()
	h, body, ok := bytes.Cut(raw, []byte("\r\n\r\n"))
	if !ok {
		t.Fatalf("no HTTP head in %q", raw)
	}
	for _, block := range strings.Split(string(body), "\n\n") {
		var e sseEvent
		for _, line := range strings.Split(block, "\n") {
			k, v, _ := strings.Cut(line, ": ")
			switch {
			case line == "":
			case strings.HasPrefix(line, ":"):
				comments++
			case k == "id":
				e.id = v
			case k == "event":
				e.event = v
			case k == "data":
				e.data = v
			case k == "retry":
			default:
				t.Fatalf("unexpected SSE line %q", line)
			}
		}
		if e.event != "" {
			events = append(events, e)
		}
	}
	return string(h), events, comments
}

// checkSSE asserts events are exactly the match's events with seq > after, as SSE: id = seq,
// event = kind, data = the v3 line.
func checkSSE(t *testing.T, name string, events []sseEvent, v3 [][]byte, after int) {
	t.Helper()
	want := v3[after:]
	if len(events) != len(want) {
		t.Fatalf("%s: %d events, want %d: %+v", name, len(events), len(want), events)
	}
	for i, e := range events {
		seq := after + i + 1
		if e.id != strconv.Itoa(seq) || e.data != strings.TrimSuffix(string(want[i]), "\n") ||
			!strings.Contains(e.data, `"kind":"`+e.event+`"`) {
			t.Fatalf("%s: event %d is %+v, want id %d and data %s", name, i, e, seq, want[i])
		}
	}
}

// Browsers over Server-Sent Events and long-poll: the framing, the status first, a resume with
// Last-Event-ID that gets exactly what was missed, heartbeats, 204 once everything was seen, CORS,
// the metrics that count them, and a long-poll that waits for the next event or its timeout.
func TestServerSentEventsAndLongPoll(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	d := startDaemon(t, filepath.Join(dir, "state"), "--sse-heartbeat", "200ms")
	lines, v3 := sampleLines(t)
	run(t, 0, "watcher", "--api", d.apiURL(), "--token", d.token(), "--speed", "0", "-q",
		writeFile(t, dir, "first.jsonl", lines[:10]))
	path := "/matches/" + sampleID + "/stream"
	get := func(extra string) *rawClient {
		return dial(t, d.apiPort, "GET "+path+" HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n"+extra+"\r\n", true)
	}
	fresh := get("")
	resumed := get("Last-Event-ID: 5\r\n")
	query := dial(t, d.apiPort, "GET "+path+"?last_event_id=0 HTTP/1.1\r\nHost: x\r\n\r\n", true)
	waitUntil(t, "3 SSE subscribers", 20*time.Second, func() bool {
		return d.metrics()[`matchstream_subscribers_by_protocol{protocol="sse"}`] == 3
	})
	// head 8 lines, retry 2, status 4: a heartbeat makes 16.
	waitUntil(t, "a heartbeat", 20*time.Second, func() bool { return fresh.Lines.Load() >= 16 })

	// A long-poll with nothing new waits for its timeout and returns no event.
	t0 := time.Now()
	var p struct {
		Seq    int               `json:"seq"`
		Ended  bool              `json:"ended"`
		Events []json.RawMessage `json:"events"`
	}
	if code := d.getJSON("/matches/"+sampleID+"/poll?after=10&timeout=1", &p); code != 200 || len(p.Events) != 0 || p.Seq != 10 {
		t.Fatalf("idle long-poll: %d %+v", code, p)
	}
	if el := time.Since(t0); el < 900*time.Millisecond || el > 10*time.Second {
		t.Fatalf("idle long-poll with timeout=1 returned after %s", el)
	}
	// One behind: at once.
	if d.getJSON("/matches/"+sampleID+"/poll?after=9", &p); len(p.Events) != 1 || p.Seq != 10 {
		t.Fatalf("long-poll after 9: %+v", p)
	}
	// Waiting: it returns with the next event as soon as it is posted, long before its timeout.
	type result struct {
		body []byte
		took time.Duration
	}
	waiting := make(chan result, 1)
	go func() {
		t0 := time.Now()
		resp, err := http.Get(d.url("/matches/" + sampleID + "/poll?after=10&timeout=50"))
		if err != nil {
			waiting <- result{[]byte(err.Error()), 0}
			return
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		waiting <- result{b, time.Since(t0)}
	}()
	waitUntil(t, "a waiting long-poll", 20*time.Second, func() bool { return d.metrics()["matchstream_longpoll_waiting"] == 1 })
	run(t, 0, "watcher", "--api", d.apiURL(), "--token", d.token(), "--speed", "0", "-q", "--match", sampleID,
		writeFile(t, dir, "rest.jsonl", lines[10:]))
	r := <-waiting
	if r.took == 0 || r.took > 20*time.Second || !bytes.Contains(r.body, []byte(`"seq":11,`)) {
		t.Fatalf("waiting long-poll: after %s got %s", r.took, r.body)
	}

	// The streams end with the match; check them whole.
	head, events, comments := parseSSE(t, fresh.Wait(t))
	for _, h := range []string{"HTTP/1.1 200 OK", "Content-Type: text/event-stream", "Access-Control-Allow-Origin: *", "Cache-Control: no-cache"} {
		if !strings.Contains(head, h) {
			t.Fatalf("SSE head lacks %q:\n%s", h, head)
		}
	}
	if comments == 0 {
		t.Fatal("no heartbeat comment while the stream was idle")
	}
	if events[0].event != "status" || events[0].id != "10" || !strings.Contains(events[0].data, `"seq":10`) {
		t.Fatalf("first event is not the status at seq 10: %+v", events[0])
	}
	checkSSE(t, "fresh", events[1:], v3, 10)
	_, events, _ = parseSSE(t, resumed.Wait(t))
	checkSSE(t, "Last-Event-ID: 5", events, v3, 5)
	_, events, _ = parseSSE(t, query.Wait(t))
	checkSSE(t, "?last_event_id=0", events, v3, 0)

	// A browser that has the last event of a finished match is told to stop reconnecting.
	req, _ := http.NewRequest("GET", d.url(path), nil)
	req.Header.Set("Last-Event-ID", strconv.Itoa(len(v3)))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 204 {
		t.Fatalf("reconnect after the end: %d, want 204", resp.StatusCode)
	}
	// A finished match long-polled from its end answers at once, ended.
	if d.getJSON(fmt.Sprintf("/matches/%s/poll?after=%d&timeout=30", sampleID, len(v3)), &p); !p.Ended || len(p.Events) != 0 {
		t.Fatalf("long-poll of a finished match: %+v", p)
	}
	if code := d.getJSON("/matches/nope/stream", nil); code != 404 {
		t.Fatalf("stream of an unknown match: %d", code)
	}

	// CORS preflight, for a page elsewhere following the stream (Last-Event-ID needs one).
	req, _ = http.NewRequest("OPTIONS", d.url(path), nil)
	req.Header.Set("Origin", "https://example.org")
	req.Header.Set("Access-Control-Request-Headers", "last-event-id")
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 204 || resp.Header.Get("Access-Control-Allow-Origin") != "*" ||
		!strings.Contains(resp.Header.Get("Access-Control-Allow-Headers"), "Last-Event-ID") {
		t.Fatalf("preflight: %d %v", resp.StatusCode, resp.Header)
	}

	// The live match page and its files.
	for p, typ := range map[string]string{"/": "text/html", "/app.js": "text/javascript", "/style.css": "text/css"} {
		resp, err := http.Get(d.url(p))
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), typ) || len(b) < 100 {
			t.Fatalf("GET %s: %d %s, %d bytes", p, resp.StatusCode, resp.Header.Get("Content-Type"), len(b))
		}
	}
}
