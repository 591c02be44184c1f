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
	"syscall"
	"testing"
	"time"

	"matchstream/daemon/daemontest"
	"matchstream/daemon/match"
)

// The shared end-to-end helpers (package daemontest), under the names these tests use.
const sampleID = daemontest.SampleID

var (
	sampleJSONL = daemontest.SampleJSONL
	sampleLines = daemontest.SampleLines
	checkV1     = daemontest.CheckV1
	checkV3     = daemontest.CheckV3
)

type rawClient = daemontest.Client

func dial(t *testing.T, port int, line string, read bool) *rawClient {
	t.Helper()
	return daemontest.Dial(t, fmt.Sprintf("127.0.0.1:%d", port), line, read)
}

func writeFile(t *testing.T, dir, name string, lines []string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(strings.Join(lines, "\n")+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// The watcher and the user simulator against the real binary: the watcher posts the sample match
// in three parts, and two simulator processes (v3 and v1 users, there from the kick-off) watch it
// to the end. Every protocol case on raw sockets runs in-process: daemon.TestServerEndToEnd.
func TestEndToEnd(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	d := startDaemon(t, filepath.Join(dir, "state"), "--client-queue", "512", "--handshake-timeout", "1s", "--write-timeout", "10s")
	lines, _ := sampleLines(t)
	startFile := writeFile(t, dir, "start.jsonl", lines[:1])
	part1 := writeFile(t, dir, "part1.jsonl", lines[1:10])
	part2 := writeFile(t, dir, "part2.jsonl", lines[10:])
	token := d.token()
	watcher := func(args ...string) string {
		return run(t, 0, append([]string{"watcher", "--api", d.apiURL(), "--token", token, "--speed", "0", "-q"}, args...)...)
	}
	if out := watcher(startFile); !strings.Contains(out, "posted 1 events to "+sampleID) {
		t.Fatalf("watcher: %s", out)
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
	waitUntil(t, "30 subscribers", 60*time.Second, func() bool { return d.subscribers(sampleID) == 30 })
	watcher("--match", sampleID, part1)
	watcher("--match", sampleID, part2)
	for name, ch := range map[string]chan simResult{"client --protocol 3": sim3, "client --protocol 1": sim1} {
		r := <-ch
		if r.err != nil || !bytes.HasPrefix(r.out, []byte("ok: ")) {
			t.Errorf("%s: %v\n%s", name, r.err, r.out)
		}
	}
	if n := d.subscribers(sampleID); n != 0 {
		t.Errorf("%d subscribers after stop", n)
	}
	if m := d.metrics(); m["matchstream_events_accepted_total"] != 31 {
		t.Errorf("%v events accepted, want 31", m["matchstream_events_accepted_total"])
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
			waitUntil(t, "readers keep up", 30*time.Second, func() bool { return r.Lines.Load() >= int64(1+(b+1)*perBatch) })
		}
	}
	post([]match.Event{{At: at.Add(time.Hour), Kind: match.KindStop}})

	// Every reader got the whole match while the stalled client had not read a byte.
	total := batches*perBatch + 1 // comments and stop, after the status
	for i, r := range readers {
		got := r.Wait(t)
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
	if got, want := c.Wait(t), bytes.Join(v3, nil); !bytes.Equal(got, want) {
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
		got := dial(t, d.stream[0], "V:2:me\r\n", true).Wait(t)
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
