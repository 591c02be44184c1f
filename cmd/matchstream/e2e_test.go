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
	"slices"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"matchstream/daemon/match"
	"matchstream/daemon/protocol"
	"matchstream/daemon/store/storetest"
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

// Stop the daemon mid-match and start it again on the same store: the match continues where it was
// and a v3 client resuming with FROM gets every event exactly once.
func TestRestartResume(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	state := filepath.Join(dir, "state")
	d := startDaemon(t, state)
	lines, v3 := sampleLines(t)
	first := writeFile(t, dir, "first.jsonl", lines[:15])
	rest := writeFile(t, dir, "rest.jsonl", lines[15:])
	run(t, 0, "watcher", "--api", d.apiURL(), "--token", d.token(), "--speed", "0", "-q", first)

	c := dial(t, d.stream[0], "VERSION:3:CONNECT:r:MATCH:"+sampleID+":FROM:0\r\n", true)
	waitUntil(t, "1 subscriber", 30*time.Second, func() bool { return d.subscribers(sampleID) == 1 })
	d.stop()
	got := c.wait(t) // the daemon told it and closed it on shutdown
	notice := protocol.ShutdownNotice().V3
	if want := append(bytes.Join(v3[:15], nil), notice...); !bytes.Equal(got, want) {
		t.Fatalf("before the restart got\n%s\nwant\n%s", got, want)
	}
	got = bytes.TrimSuffix(got, notice)

	d.start() // same ports, same state dir
	var events []json.RawMessage
	if d.getJSON("/matches/"+sampleID+"/events", &events); len(events) != 15 {
		t.Fatalf("after restart the store has %d events, want 15", len(events))
	}
	c2 := dial(t, d.stream[1], "VERSION:3:CONNECT:r:MATCH:"+sampleID+":FROM:15\r\n", true)
	waitUntil(t, "1 subscriber", 30*time.Second, func() bool { return d.subscribers(sampleID) == 1 })
	run(t, 0, "watcher", "--api", d.apiURL(), "--token", d.token(), "--speed", "0", "-q", "--match", sampleID, rest)
	all := append(got, c2.wait(t)...)
	if want := bytes.Join(v3, nil); !bytes.Equal(all, want) {
		t.Fatalf("across the restart got\n%s\nwant\n%s", all, want)
	}
}

// On the Redis store, a second node (another process, another state dir) takes over a match the
// first one served: it loads it from Redis, and a v3 client resuming with FROM misses nothing.
func TestRedisStoreTakeover(t *testing.T) {
	t.Parallel()
	url := storetest.RedisServer(t)
	dir := t.TempDir()
	lines, v3 := sampleLines(t)
	first := writeFile(t, dir, "first.jsonl", lines[:12])
	rest := writeFile(t, dir, "rest.jsonl", lines[12:])
	a := startDaemon(t, filepath.Join(dir, "a"), "--store", url, "--watcher-token", "tok")
	run(t, 0, "watcher", "--api", a.apiURL(), "--token", "tok", "--speed", "0", "-q", first)
	c := dial(t, a.stream[0], "VERSION:3:CONNECT:r:MATCH:"+sampleID+":FROM:0\r\n", true)
	waitUntil(t, "1 subscriber", 30*time.Second, func() bool { return a.subscribers(sampleID) == 1 })
	a.stop()
	got := bytes.TrimSuffix(c.wait(t), protocol.ShutdownNotice().V3)

	b := startDaemon(t, filepath.Join(dir, "b"), "--store", url, "--watcher-token", "tok")
	c2 := dial(t, b.stream[0], "VERSION:3:CONNECT:r:MATCH:"+sampleID+":FROM:12\r\n", true)
	waitUntil(t, "1 subscriber", 30*time.Second, func() bool { return b.subscribers(sampleID) == 1 })
	run(t, 0, "watcher", "--api", b.apiURL(), "--token", "tok", "--speed", "0", "-q", "--match", sampleID, rest)
	if all, want := append(got, c2.wait(t)...), bytes.Join(v3, nil); !bytes.Equal(all, want) {
		t.Fatalf("across the nodes got\n%s\nwant\n%s", all, want)
	}
}

// Three nodes on one Redis: the watcher posts to node 1 only; clients of nodes 2 and 3, v1 and v3,
// get the whole match in order, from the follow of the match's stream.
func TestThreeNodes(t *testing.T) {
	t.Parallel()
	url := storetest.RedisServer(t)
	dir := t.TempDir()
	lines, v3 := sampleLines(t)
	nodes := make([]*daemonProc, 3)
	for i := range nodes {
		nodes[i] = startDaemon(t, filepath.Join(dir, fmt.Sprint(i)), "--store", url, "--watcher-token", "tok")
	}
	run(t, 0, "watcher", "--api", nodes[0].apiURL(), "--token", "tok", "--speed", "0", "-q", writeFile(t, dir, "start.jsonl", lines[:1]))
	var v1s, v3s []*rawClient
	for _, n := range nodes[1:] {
		waitUntil(t, "the match known on every node", 20*time.Second, func() bool { return n.subscribers(sampleID) == 0 })
		for i := range 5 {
			v1s = append(v1s, dial(t, n.stream[i%len(n.stream)], "VERSION:1:CONNECT:u:MATCH:"+sampleID+"\r\n", true))
			v3s = append(v3s, dial(t, n.stream[i%len(n.stream)], "VERSION:3:CONNECT:u:MATCH:"+sampleID+"\r\n", true))
		}
		waitUntil(t, "10 subscribers", 20*time.Second, func() bool { return n.subscribers(sampleID) == 10 })
	}
	run(t, 0, "watcher", "--api", nodes[0].apiURL(), "--token", "tok", "--speed", "0", "-q", "--match", sampleID,
		writeFile(t, dir, "rest.jsonl", lines[1:]))
	for i, c := range v1s {
		checkV1(t, fmt.Sprintf("v1 user %d on node %d", i, 2+i/5), c.wait(t), "home_score: 0\n", 2)
	}
	for i, c := range v3s {
		checkV3(t, fmt.Sprintf("v3 user %d on node %d", i, 2+i/5), c.wait(t), v3, 1, false)
	}
}

// Redis stops for a few seconds mid-match: no client is dropped, the watcher's posts get 503 and are
// retried, and once Redis is back every client has every event exactly once. Then node A is killed
// with -9: its v3 clients reconnect to node B with FROM and miss nothing.
func TestRedisOutageAndNodeKill(t *testing.T) {
	t.Parallel()
	rd := storetest.StartRedis(t)
	dir := t.TempDir()
	lines, v3 := sampleLines(t)
	a := startDaemon(t, filepath.Join(dir, "a"), "--store", rd.URL, "--watcher-token", "tok")
	b := startDaemon(t, filepath.Join(dir, "b"), "--store", rd.URL, "--watcher-token", "tok")
	post := func(d *daemonProc, from, to int, extra ...string) {
		t.Helper()
		args := append([]string{"watcher", "--api", d.apiURL(), "--token", "tok", "--speed", "0", "-q", "--match", sampleID}, extra...)
		run(t, 0, append(args, writeFile(t, t.TempDir(), "part.jsonl", lines[from:to]))...)
	}
	post(a, 0, 1)
	waitUntil(t, "node B knows the match", 20*time.Second, func() bool { return b.subscribers(sampleID) == 0 })
	var onA, onB1, onB3 []*rawClient
	for i := range 5 {
		onA = append(onA, dial(t, a.stream[i%len(a.stream)], "VERSION:3:CONNECT:a:MATCH:"+sampleID+":FROM:0\r\n", true))
		onB1 = append(onB1, dial(t, b.stream[i%len(b.stream)], "VERSION:1:CONNECT:b:MATCH:"+sampleID+"\r\n", true))
		onB3 = append(onB3, dial(t, b.stream[i%len(b.stream)], "VERSION:3:CONNECT:b:MATCH:"+sampleID+"\r\n", true))
	}
	waitUntil(t, "subscribers", 20*time.Second, func() bool { return a.subscribers(sampleID) == 5 && b.subscribers(sampleID) == 10 })
	post(a, 1, 10)

	rd.Stop()
	waitUntil(t, "healthz reporting the store down", 20*time.Second, func() bool {
		resp, err := http.Get(a.url("/healthz"))
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusServiceUnavailable
	})
	done := make(chan string, 1)
	go func() {
		out, err := exec.Command(binary, "watcher", "--api", a.apiURL(), "--token", "tok", "--speed", "0", "-q",
			"--match", sampleID, "--retry-for", "60s", writeFile(t, dir, "outage.jsonl", lines[10:20])).CombinedOutput()
		if err != nil {
			done <- fmt.Sprintf("%v: %s", err, out)
			return
		}
		done <- ""
	}()
	outage := time.NewTimer(3 * time.Second) // the length of the outage, not a synchronisation
	<-outage.C
	if a.subscribers(sampleID) != 5 || b.subscribers(sampleID) != 10 {
		t.Fatalf("clients dropped while Redis was down: %d on A, %d on B", a.subscribers(sampleID), b.subscribers(sampleID))
	}
	rd.Start()
	select {
	case msg := <-done:
		if msg != "" {
			t.Fatalf("watcher across the outage: %s", msg)
		}
	case <-time.After(90 * time.Second):
		t.Fatal("watcher did not finish after Redis came back")
	}

	a.kill()
	var resumed [][]byte
	for i, c := range onA {
		got := c.wait(t)
		got = got[:bytes.LastIndexByte(got, '\n')+1] // complete lines only
		lines := bytes.Split(bytes.TrimSpace(got), []byte("\n"))
		var last struct {
			Seq int `json:"seq"`
		}
		json.Unmarshal(lines[len(lines)-1], &last)
		resumed = append(resumed, got)
		onA[i] = dial(t, b.stream[0], fmt.Sprintf("VERSION:3:CONNECT:a:MATCH:%s:FROM:%d\r\n", sampleID, last.Seq), true)
	}
	waitUntil(t, "A's clients on B", 20*time.Second, func() bool { return b.subscribers(sampleID) == 15 })
	post(b, 20, len(lines))
	for i, c := range onA {
		if all, want := append(resumed[i], c.wait(t)...), bytes.Join(v3, nil); !bytes.Equal(all, want) {
			t.Fatalf("client of the killed node %d got\n%s\nwant\n%s", i, all, want)
		}
	}
	for i, c := range onB1 {
		checkV1(t, fmt.Sprintf("v1 user %d on B", i), c.wait(t), "home_score: 0\n", 2)
	}
	for i, c := range onB3 {
		checkV3(t, fmt.Sprintf("v3 user %d on B", i), c.wait(t), v3, 1, false)
	}
}

// With a shared store, /connect on any node answers with the least-loaded stream port of the
// whole cluster, so no load balancer is needed in front of the stream ports.
func TestConnectAcrossNodes(t *testing.T) {
	t.Parallel()
	url := storetest.RedisServer(t)
	dir := t.TempDir()
	lines, _ := sampleLines(t)
	a := startDaemon(t, filepath.Join(dir, "a"), "--store", url, "--watcher-token", "tok", "--node-id", "a")
	b := startDaemon(t, filepath.Join(dir, "b"), "--store", url, "--watcher-token", "tok", "--node-id", "b")
	run(t, 0, "watcher", "--api", a.apiURL(), "--token", "tok", "--speed", "0", "-q", writeFile(t, dir, "s.jsonl", lines[:1]))
	for i := range 8 {
		dial(t, a.stream[i%len(a.stream)], "VERSION:3:CONNECT:u:MATCH:"+sampleID+"\r\n", true)
	}
	waitUntil(t, "8 subscribers on A", 20*time.Second, func() bool { return a.subscribers(sampleID) == 8 })
	var c struct {
		Host string `json:"host"`
		Port int    `json:"port"`
	}
	waitUntil(t, "A's /connect to send clients to the idle node B", 20*time.Second, func() bool {
		a.getJSON("/connect?match="+sampleID, &c)
		return c.Host == "127.0.0.1" && slices.Contains(b.stream, c.Port)
	})
	b.stop() // gone from the cluster view at once, not only when its announcement expires
	waitUntil(t, "A's /connect back to its own ports", 20*time.Second, func() bool {
		a.getJSON("/connect?match="+sampleID, &c)
		return slices.Contains(a.stream, c.Port)
	})
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
