package daemon

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"syscall"
	"testing"
	"time"

	"matchstream/daemon/daemontest"
	"matchstream/daemon/match"
)

// A client that stops reading is cut when its queue fills, and the others on the same match get
// everything without waiting for it: a TCP client and a browser's event stream alike.
func TestStalledClientIsCut(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t)
	cfg.Hub.QueueLimit, cfg.Hub.WriteTimeout, cfg.Stream.SendBuffer = 512, 20*time.Second, 16384
	log := &daemontest.SyncBuffer{}
	s, err := New(cfg, slog.New(slog.NewTextHandler(log, &slog.HandlerOptions{Level: slog.LevelDebug})))
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer s.Shutdown(context.Background())
	d := &apiClient{t: t, s: s}
	apiAddr, streams := s.Addrs()
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
		post(t, s, id, string(body))
	}
	post([]match.Event{{At: at, Kind: match.KindStart, Home: "fla", Visit: "flu", StartDate: "2011-09-11", HomePlayers: squad(), VisitPlayers: squad()}})

	// The stalled client asks for a tiny receive buffer and never reads.
	dialer := net.Dialer{Control: func(_, _ string, c syscall.RawConn) error {
		return c.Control(func(fd uintptr) { syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096) })
	}}
	sc, err := dialer.Dial("tcp", streams[0].String())
	if err != nil {
		t.Fatal(err)
	}
	defer sc.Close()
	io.WriteString(sc, "VERSION:1:CONNECT:stalled:MATCH:"+id+"\r\n")
	// And a browser that stalls: the event stream on the API port gets the same cut.
	ssc, err := dialer.Dial("tcp", apiAddr.String())
	if err != nil {
		t.Fatal(err)
	}
	defer ssc.Close()
	io.WriteString(ssc, "GET /matches/"+id+"/stream HTTP/1.1\r\nHost: x\r\n\r\n")
	var readers []*daemontest.Client
	for i := range 5 {
		readers = append(readers, daemontest.Dial(t, streams[i%len(streams)].String(), "VERSION:3:CONNECT:r:MATCH:"+id+"\r\n", true))
	}
	waitFor(t, "7 subscribers", func() bool { return s.reg.Stats.Subscribers.Load() == 7 })

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
			waitFor(t, "readers keep up", func() bool { return r.Lines.Load() >= int64(1+(b+1)*perBatch) })
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
	if !strings.Contains(log.String(), "reason=slow_consumer") {
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

// With --conn-rate, one address opening connections too fast gets ERROR: rate_limited for the
// excess, counted in /metrics; the others are served.
func TestConnRateLimit(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t)
	cfg.Stream.ConnRate, cfg.Stream.ConnBurst = 1, 3
	s := startServer(t, cfg)
	d := &apiClient{t: t, s: s}
	_, streams := s.Addrs()
	limited, served := 0, 0
	for range 10 {
		got := daemontest.Dial(t, streams[0].String(), "V:2:me\r\n", true).Wait(t)
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
