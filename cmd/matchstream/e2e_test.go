package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"matchstream/daemon/match"
	"matchstream/daemon/protocol"
)

const (
	sampleID    = "elp-tig-2011-09-10"
	sampleJSONL = "../../testdata/matches/elp-tig-2011-09-10.jsonl"
	sampleV1    = "../../testdata/matches/elp-tig-2011-09-10.v1.golden"
)

// rawClient is a hand-made TCP client: it sends its connect line and reads until the server closes.
type rawClient struct {
	conn  net.Conn
	done  chan struct{}
	data  []byte
	err   error
	lines atomic.Int64 // newlines received so far, to follow progress while it reads
}

func dial(t *testing.T, port int, line string, read bool) *rawClient {
	t.Helper()
	c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", port), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	rc := &rawClient{conn: c, done: make(chan struct{})}
	if line != "" {
		if _, err := io.WriteString(c, line); err != nil {
			t.Fatal(err)
		}
	}
	if read {
		go rc.readAll()
	}
	return rc
}

func (rc *rawClient) readAll() {
	defer close(rc.done)
	rc.conn.SetReadDeadline(time.Now().Add(3 * time.Minute))
	buf := make([]byte, 64<<10)
	for {
		n, err := rc.conn.Read(buf)
		rc.data = append(rc.data, buf[:n]...)
		rc.lines.Add(int64(bytes.Count(buf[:n], []byte("\n"))))
		if err != nil {
			if err != io.EOF {
				rc.err = err
			}
			return
		}
	}
}

func (rc *rawClient) wait(t *testing.T) []byte {
	t.Helper()
	select {
	case <-rc.done:
	case <-time.After(3 * time.Minute):
		t.Fatal("client still connected after 3 minutes")
	}
	return rc.data
}

// sampleLines is the sample match file's lines; expectedV3 the v3 line of each event (index = seq-1).
func sampleLines(t *testing.T) (lines []string, v3 [][]byte) {
	t.Helper()
	b, err := os.ReadFile(sampleJSONL)
	if err != nil {
		t.Fatal(err)
	}
	lines = strings.Split(strings.TrimSpace(string(b)), "\n")
	var st match.State
	for _, l := range lines {
		e, err := match.DecodeEvent([]byte(l))
		if err != nil {
			t.Fatal(err)
		}
		if err := st.Apply(&e); err != nil {
			t.Fatal(err)
		}
		v3 = append(v3, protocol.RenderV3(sampleID, match.Record{Seq: st.Seq, Event: e}))
	}
	return lines, v3
}

func writeFile(t *testing.T, dir, name string, lines []string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(strings.Join(lines, "\n")+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// splitFrames cuts a v1/v2 stream into frames ending with a line holding only \r\n.
func splitFrames(b []byte) [][]byte {
	var out [][]byte
	for len(b) > 0 {
		i := bytes.Index(b, []byte("\n\r\n"))
		if i < 0 {
			return append(out, b)
		}
		out = append(out, b[:i+3])
		b = b[i+3:]
	}
	return out
}

// checkV1 asserts a v1/v2 stream is a status frame with the given score, then exactly the golden
// frames from event `from` (seq) to the end.
func checkV1(t *testing.T, name string, got []byte, score string, from int) {
	t.Helper()
	golden, err := os.ReadFile(sampleV1)
	if err != nil {
		t.Fatal(err)
	}
	want := bytes.Join(splitFrames(golden)[from-2:], nil) // the golden file starts at seq 2
	frames := splitFrames(got)
	if len(frames) == 0 || !bytes.Contains(frames[0], []byte(": status:\n")) || !bytes.Contains(frames[0], []byte(score)) {
		t.Fatalf("%s: first frame is not the status with %q:\n%s", name, score, got)
	}
	if rest := bytes.Join(frames[1:], nil); !bytes.Equal(rest, want) {
		t.Fatalf("%s: after the status got\n%s\nwant\n%s", name, rest, want)
	}
}

// checkV3 asserts a v3 stream is (unless resuming) a status line with seq statusSeq, then exactly the
// events after it.
func checkV3(t *testing.T, name string, got []byte, v3 [][]byte, statusSeq int, resume bool) {
	t.Helper()
	lines := bytes.SplitAfter(got, []byte("\n"))
	if len(lines) > 0 && len(lines[len(lines)-1]) == 0 {
		lines = lines[:len(lines)-1]
	}
	if !resume {
		var st struct {
			Kind string `json:"kind"`
			Seq  int    `json:"seq"`
		}
		if len(lines) == 0 || json.Unmarshal(lines[0], &st) != nil || st.Kind != "status" || st.Seq != statusSeq {
			t.Fatalf("%s: first line is not a status with seq %d: %s", name, statusSeq, got)
		}
		lines = lines[1:]
	}
	want := v3[statusSeq:]
	if len(lines) != len(want) {
		t.Fatalf("%s: %d events, want %d:\n%s", name, len(lines), len(want), got)
	}
	for i := range want {
		if !bytes.Equal(lines[i], want[i]) {
			t.Fatalf("%s: event %d is\n%s want\n%s", name, statusSeq+i+1, lines[i], want[i])
		}
	}
}

func TestEndToEnd(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	d := startDaemon(t, filepath.Join(dir, "state"), "--client-queue", "512", "--handshake-timeout", "1s", "--write-timeout", "10s")
	lines, v3 := sampleLines(t)
	startFile := writeFile(t, dir, "start.jsonl", lines[:1])
	part1 := writeFile(t, dir, "part1.jsonl", lines[1:10])
	part2 := writeFile(t, dir, "part2.jsonl", lines[10:])
	token := d.token()
	watcher := func(args ...string) string {
		return run(t, 0, append([]string{"watcher", "--api", d.apiURL(), "--token", token, "--speed", "0", "-q"}, args...)...)
	}
	port := func(i int) int { return d.stream[i%len(d.stream)] }

	out := watcher(startFile)
	if !strings.Contains(out, "posted 1 events to "+sampleID) {
		t.Fatalf("watcher: %s", out)
	}

	// Users there from the kick-off: v1, V:2 and v3 raw clients, and the simulator in two processes.
	var early1, early2, early3 []*rawClient
	for i := range 50 {
		early1 = append(early1, dial(t, port(i), fmt.Sprintf("VERSION:1:CONNECT:u%d:MATCH:%s\r\n", i, sampleID), true))
		early3 = append(early3, dial(t, port(i+1), fmt.Sprintf("VERSION:3:CONNECT:u%d:MATCH:%s\r\n", i, sampleID), true))
	}
	for i := range 40 {
		early2 = append(early2, dial(t, port(i+2), fmt.Sprintf("V:2:u%d\n", i), true))
	}
	type simResult struct {
		out []byte
		err error
	}
	sim := func(args ...string) chan simResult {
		ch := make(chan simResult, 1)
		cmd := exec.Command(binary, append([]string{"client", "--api", d.apiURL(), "--timeout", "2m"}, args...)...)
		go func() { out, err := cmd.CombinedOutput(); ch <- simResult{out, err} }()
		return ch
	}
	sim3 := sim("--match", sampleID, "-n", "20", "-c", "5", "--protocol", "3")
	sim1 := sim("--match", sampleID, "-n", "10", "--protocol", "1")

	// Hostile and broken clients: each gets ERROR: and is closed.
	hostile := map[string]*rawClient{
		"bad_request":         dial(t, port(0), "HELLO WORLD\r\n", true),
		"not_found":           dial(t, port(1), "VERSION:1:CONNECT:me:MATCH:elp-tig-2011-09-11\r\n", true),
		"unsupported_version": dial(t, port(2), "VERSION:9:CONNECT:me:MATCH:x\r\n", true),
		"line_too_long":       dial(t, port(3), strings.Repeat("x", 5000), true),
		"timeout":             dial(t, port(0), "", true),
	}
	waitUntil(t, "170 subscribers", 60*time.Second, func() bool { return d.subscribers(sampleID) == 170 })
	for code, c := range hostile {
		got := c.wait(t)
		if !bytes.HasPrefix(got, []byte("ERROR: "+code+" ")) || !bytes.HasSuffix(got, []byte("\n\r\n")) {
			t.Errorf("%s client got %q", code, got)
		}
	}

	watcher("--match", sampleID, part1)
	// Users joining mid-match (after seq 10), and one resuming after seq 5.
	var mid1, mid3 []*rawClient
	for i := range 15 {
		mid1 = append(mid1, dial(t, port(i), fmt.Sprintf("VERSION:1:CONNECT:m%d:MATCH:%s\r\n", i, sampleID), true))
		mid3 = append(mid3, dial(t, port(i), fmt.Sprintf("VERSION:3:CONNECT:m%d:MATCH:%s\r\n", i, sampleID), true))
	}
	resumed := dial(t, port(3), "VERSION:3:CONNECT:r:MATCH:"+sampleID+":FROM:5\r\n", true)
	waitUntil(t, "201 subscribers", 60*time.Second, func() bool { return d.subscribers(sampleID) == 201 })
	watcher("--match", sampleID, part2)

	for i, c := range early1 {
		checkV1(t, fmt.Sprintf("v1 user %d", i), c.wait(t), "home_score: 0\n", 2)
	}
	for i, c := range early2 {
		checkV1(t, fmt.Sprintf("V:2 user %d", i), c.wait(t), "home_score: 0\n", 2)
	}
	for i, c := range early3 {
		checkV3(t, fmt.Sprintf("v3 user %d", i), c.wait(t), v3, 1, false)
	}
	for i, c := range mid1 {
		checkV1(t, fmt.Sprintf("mid-match v1 user %d", i), c.wait(t), "visit_score: 3\n", 11)
	}
	for i, c := range mid3 {
		checkV3(t, fmt.Sprintf("mid-match v3 user %d", i), c.wait(t), v3, 10, false)
	}
	checkV3(t, "FROM:5 user", resumed.wait(t), v3, 5, true)
	for name, ch := range map[string]chan simResult{"client --protocol 3": sim3, "client --protocol 1": sim1} {
		r := <-ch
		if r.err != nil || !bytes.HasPrefix(r.out, []byte("ok: ")) {
			t.Errorf("%s: %v\n%s", name, r.err, r.out)
		}
	}
	if n := d.subscribers(sampleID); n != 0 {
		t.Errorf("%d subscribers after stop", n)
	}
	// The counters agree with what happened.
	m := d.metrics()
	for _, code := range []string{"bad_request", "not_found", "unsupported_version", "line_too_long", "timeout"} {
		if v := m[`matchstream_handshake_errors_total{code="`+code+`"}`]; v != 1 {
			t.Errorf("handshake errors %s = %v, want 1", code, v)
		}
	}
	if m["matchstream_events_accepted_total"] != 31 || m["matchstream_deliveries_total"] < 201*20 ||
		m[`matchstream_subscribers_by_protocol{protocol="3"}`] != 0 || m["matchstream_delivery_latency_seconds_count"] == 0 {
		t.Errorf("metrics after the match: events %v, deliveries %v, v3 subscribers %v, latency count %v",
			m["matchstream_events_accepted_total"], m["matchstream_deliveries_total"],
			m[`matchstream_subscribers_by_protocol{protocol="3"}`], m["matchstream_delivery_latency_seconds_count"])
	}
	// After the end: status, then close.
	late := dial(t, port(0), "VERSION:1:CONNECT:late:MATCH:"+sampleID+"\r\n", true).wait(t)
	if f := splitFrames(late); len(f) != 1 || !bytes.Contains(f[0], []byte("period: ended")) {
		t.Errorf("user after the end got %q", late)
	}
}

// A client that stops reading is cut when its queue fills, and the others on the same match get
// everything without waiting for it: a TCP client and a browser's event stream alike.
func TestStalledClientIsCut(t *testing.T) {
	t.Parallel()
	d := startDaemon(t, filepath.Join(t.TempDir(), "state"), "--client-queue", "512", "--write-timeout", "20s", "--send-buffer", "16384")
	const id = "fla-flu-2011-09-11"
	at := time.Date(2011, 9, 11, 18, 0, 0, 0, time.UTC)
	squad := func() []match.Player {
		var ps []match.Player
		for n := 1; n <= 11; n++ {
			ps = append(ps, match.Player{Number: n, Name: fmt.Sprintf("P%d", n)})
		}
		return ps
	}
	post := func(evs []match.Event) {
		t.Helper()
		body, _ := json.Marshal(evs)
		req, _ := http.NewRequest("POST", d.url("/matches/"+id+"/events"), bytes.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+d.token())
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 201 {
			t.Fatalf("post: %s: %s", resp.Status, b)
		}
	}
	post([]match.Event{{At: at, Kind: match.KindStart, Home: "fla", Visit: "flu", StartDate: "2011-09-11", HomePlayers: squad(), VisitPlayers: squad()}})

	// The stalled client asks for a tiny receive buffer and never reads.
	dialer := net.Dialer{Control: func(_, _ string, c syscall.RawConn) error {
		return c.Control(func(fd uintptr) { syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096) })
	}}
	sc, err := dialer.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", d.stream[0]))
	if err != nil {
		t.Fatal(err)
	}
	defer sc.Close()
	io.WriteString(sc, "VERSION:1:CONNECT:stalled:MATCH:"+id+"\r\n")
	// And a browser that stalls: the event stream on the API port gets the same cut.
	ssc, err := dialer.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", d.apiPort))
	if err != nil {
		t.Fatal(err)
	}
	defer ssc.Close()
	io.WriteString(ssc, "GET /matches/"+id+"/stream HTTP/1.1\r\nHost: x\r\n\r\n")
	var readers []*rawClient
	for i := range 5 {
		readers = append(readers, dial(t, d.stream[i%len(d.stream)], "VERSION:3:CONNECT:r:MATCH:"+id+"\r\n", true))
	}
	waitUntil(t, "7 subscribers", 30*time.Second, func() bool { return d.subscribers(id) == 7 })

	const batches, perBatch = 30, 100
	comment := strings.Repeat("goooal ", 140)
	for b := range batches {
		evs := make([]match.Event, perBatch)
		for i := range evs {
			evs[i] = match.Event{At: at.Add(time.Duration(b*perBatch+i+1) * time.Millisecond), Kind: match.KindComment, Comment: comment}
		}
		post(evs)
		// Post at the pace the readers take it, as a real watcher would: only the stalled client
		// falls behind.
		for _, r := range readers {
			waitUntil(t, "readers keep up", 30*time.Second, func() bool { return r.lines.Load() >= int64(1+(b+1)*perBatch) })
		}
	}
	post([]match.Event{{At: at.Add(time.Hour), Kind: match.KindStop}})

	// Every reader got the whole match while the stalled client had not read a byte.
	total := batches*perBatch + 1 // comments and stop, after the status
	for i, r := range readers {
		got := r.wait(t)
		n := 0
		sc := bufio.NewScanner(bytes.NewReader(got))
		sc.Buffer(nil, 1<<20)
		for sc.Scan() {
			n++
		}
		if n != total+1 || !bytes.Contains(got[len(got)-100:], []byte(`"kind":"stop"`)) {
			t.Fatalf("reader %d got %d lines, want %d ending with stop", i, n, total+1)
		}
	}
	if !strings.Contains(d.log.String(), "reason=slow_consumer") {
		t.Errorf("no slow_consumer cut in the daemon log")
	}
	if m := d.metrics(); m["matchstream_slow_consumer_disconnects_total"] != 2 || m["matchstream_client_queue_max_frames"] < 512 {
		t.Errorf("metrics: slow-consumer cuts %v, longest queue %v", m["matchstream_slow_consumer_disconnects_total"], m["matchstream_client_queue_max_frames"])
	}
	// Now the stalled client reads what reached it: the stream stops short of the stop event.
	sc.SetReadDeadline(time.Now().Add(30 * time.Second))
	got, _ := io.ReadAll(sc)
	if len(got) == 0 || bytes.Contains(got, []byte(": stop:\n")) {
		t.Fatalf("stalled client got %d bytes (stop included: %v); want a cut stream", len(got), bytes.Contains(got, []byte(": stop:\n")))
	}
	ssc.SetReadDeadline(time.Now().Add(30 * time.Second))
	got, _ = io.ReadAll(ssc)
	if !bytes.HasPrefix(got, []byte("HTTP/1.1 200 OK")) || bytes.Contains(got, []byte("event: stop")) {
		t.Fatalf("stalled SSE client got %d bytes (stop included: %v); want a cut stream", len(got), bytes.Contains(got, []byte("event: stop")))
	}
}

// kill -9 right after the API acknowledged events loses none of them: the store commits before the
// 2xx. After the restart the match goes on from where it was.
func TestCrashLosesNothingAcknowledged(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	state := filepath.Join(dir, "state")
	lines, v3 := sampleLines(t)
	d := startDaemon(t, state)
	run(t, 0, "watcher", "--api", d.apiURL(), "--token", d.token(), "--speed", "0", "-q", writeFile(t, dir, "a.jsonl", lines[:17]))
	d.kill() // SIGKILL: no shutdown path runs
	d.start()
	var recs []json.RawMessage
	if d.getJSON("/matches/"+sampleID+"/events", &recs); len(recs) != 17 {
		t.Fatalf("after kill -9: %d events, want the 17 acknowledged", len(recs))
	}
	c := dial(t, d.stream[0], "VERSION:3:CONNECT:r:MATCH:"+sampleID+":FROM:0\r\n", true)
	run(t, 0, "watcher", "--api", d.apiURL(), "--token", d.token(), "--speed", "0", "-q", "--match", sampleID,
		writeFile(t, dir, "b.jsonl", lines[17:]))
	if got, want := c.wait(t), bytes.Join(v3, nil); !bytes.Equal(got, want) {
		t.Fatalf("after the crash got\n%s\nwant\n%s", got, want)
	}
}

// With --conn-rate, one address opening connections too fast gets ERROR: rate_limited for the
// excess, counted in /metrics; the others are served.
func TestConnRateLimit(t *testing.T) {
	t.Parallel()
	d := startDaemon(t, filepath.Join(t.TempDir(), "state"), "--conn-rate", "1", "--conn-burst", "3")
	limited, served := 0, 0
	for range 10 {
		got := dial(t, d.stream[0], "V:2:me\r\n", true).wait(t)
		switch {
		case bytes.HasPrefix(got, []byte("ERROR: rate_limited too many connections from 127.0.0.1\n\r\n")):
			limited++
		case bytes.HasPrefix(got, []byte("ERROR: not_found no live match")):
			served++
		default:
			t.Fatalf("unexpected answer %q", got)
		}
	}
	if served < 3 || limited < 5 {
		t.Fatalf("served %d, limited %d: want the burst of 3 served and the excess refused", served, limited)
	}
	if m := d.metrics(); m[`matchstream_handshake_errors_total{code="rate_limited"}`] != float64(limited) {
		t.Errorf("metrics count %v rate-limited, want %d", m[`matchstream_handshake_errors_total{code="rate_limited"}`], limited)
	}
}
