package daemon

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"matchstream/daemon/daemontest"
)

// apiClient reads a Server's API the way the binary tests read a daemon's.
type apiClient struct {
	t *testing.T
	s *Server
}

func (d *apiClient) addr() string { a, _ := d.s.Addrs(); return a.String() }

func (d *apiClient) url(path string) string { return d.s.testURL(path) }

func (d *apiClient) getJSON(path string, v any) int {
	d.t.Helper()
	return daemontest.GetJSON(d.t, d.url(path), v)
}

func (d *apiClient) metrics() map[string]float64 {
	d.t.Helper()
	return daemontest.FetchMetrics(d.t, d.url("/metrics"))
}

// Browsers over Server-Sent Events and long-poll: the framing, the status first, a resume with
// Last-Event-ID that gets exactly what was missed, heartbeats, 204 once everything was seen, CORS,
// the metrics that count them, and a long-poll that waits for the next event or its timeout.
func TestServerSentEventsAndLongPoll(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t)
	cfg.SSEHeartbeat = 200 * time.Millisecond
	s := startServer(t, cfg)
	d := &apiClient{t: t, s: s}
	sampleID := daemontest.SampleID
	lines, v3 := daemontest.SampleLines(t)
	post(t, s, sampleID, "["+strings.Join(lines[:10], ",")+"]")
	path := "/matches/" + sampleID + "/stream"
	get := func(extra string) *daemontest.Client {
		return daemontest.Dial(t, d.addr(), "GET "+path+" HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n"+extra+"\r\n", true)
	}
	fresh := get("")
	resumed := get("Last-Event-ID: 5\r\n")
	query := daemontest.Dial(t, d.addr(), "GET "+path+"?last_event_id=0 HTTP/1.1\r\nHost: x\r\n\r\n", true)
	waitFor(t, "3 SSE subscribers", func() bool {
		return d.metrics()[`matchstream_subscribers_by_protocol{protocol="sse"}`] == 3
	})
	// head 8 lines, retry 2, status 4: a heartbeat makes 16.
	waitFor(t, "a heartbeat", func() bool { return fresh.Lines.Load() >= 16 })

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
	waitFor(t, "a waiting long-poll", func() bool { return d.metrics()["matchstream_longpoll_waiting"] == 1 })
	post(t, s, sampleID, "["+strings.Join(lines[10:], ",")+"]")
	r := <-waiting
	if r.took == 0 || r.took > 20*time.Second || !bytes.Contains(r.body, []byte(`"seq":11,`)) {
		t.Fatalf("waiting long-poll: after %s got %s", r.took, r.body)
	}

	// The streams end with the match; check them whole.
	head, events, comments := daemontest.ParseSSE(t, fresh.Wait(t))
	for _, h := range []string{"HTTP/1.1 200 OK", "Content-Type: text/event-stream", "Access-Control-Allow-Origin: *", "Cache-Control: no-cache"} {
		if !strings.Contains(head, h) {
			t.Fatalf("SSE head lacks %q:\n%s", h, head)
		}
	}
	if comments == 0 {
		t.Fatal("no heartbeat comment while the stream was idle")
	}
	if events[0].Event != "status" || events[0].ID != "10" || !strings.Contains(events[0].Data, `"seq":10`) {
		t.Fatalf("first event is not the status at seq 10: %+v", events[0])
	}
	daemontest.CheckSSE(t, "fresh", events[1:], v3, 10)
	_, events, _ = daemontest.ParseSSE(t, resumed.Wait(t))
	daemontest.CheckSSE(t, "Last-Event-ID: 5", events, v3, 5)
	_, events, _ = daemontest.ParseSSE(t, query.Wait(t))
	daemontest.CheckSSE(t, "?last_event_id=0", events, v3, 0)

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
