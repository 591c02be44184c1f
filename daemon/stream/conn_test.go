package stream

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"strings"
	"syscall"
	"testing"
	"time"

	"matchstream/daemon/hub"
	"matchstream/daemon/listen"
	"matchstream/daemon/live"
	"matchstream/daemon/match"
)

const liveID = "fla-flu-2011-09-11"

// liveMatch posts a started match and returns the time of its start.
func liveMatch(t *testing.T, reg *live.Registry) time.Time {
	t.Helper()
	at := time.Now().Add(-time.Hour)
	if _, err := reg.Post(context.Background(), liveID, []match.Event{startEvent(at)}); err != nil {
		t.Fatal(err)
	}
	return at
}

func waitCond(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// The handshake, byte by byte and in every way a client gets it wrong: each case gets the first
// line the protocol prescribes (the status header of a subscription, or the error frame), and a
// refused client is closed.
func TestHandshakeEdgeCases(t *testing.T) {
	_, reg, port := testServer(t, Config{HandshakeTimeout: 300 * time.Millisecond, MaxLine: 64})
	liveMatch(t, reg)
	ok := "{\"match\":\"" + liveID + "\",\"seq\":1," // a v3 subscription's first line
	for _, tc := range []struct {
		name   string
		writes []string
		half   bool // close the sending side after the writes
		first  string
		closed bool
	}{
		{"one write", []string{"VERSION:3:CONNECT:a:MATCH:" + liveID + ":FROM:0\n"}, false, ok, false},
		{"byte by byte", strings.Split("VERSION:3:CONNECT:a:MATCH:"+liveID+":FROM:0\r\n", ""), false, ok, false},
		{"no newline, then half-close", []string{"VERSION:3:CONNECT:a:MATCH:" + liveID + ":FROM:0"}, true, ok, false},
		{"line too long", []string{strings.Repeat("V", 65)}, false, "ERROR: line_too_long", true},
		{"long line in pieces", []string{strings.Repeat("V", 40), strings.Repeat("V", 40)}, false, "ERROR: line_too_long", true},
		{"unknown version", []string{"VERSION:9:CONNECT:a:MATCH:" + liveID + "\n"}, false, "ERROR: unsupported_version", true},
		{"garbage", []string{"GET / HTTP/1.1\r\n"}, false, "ERROR: bad_request", true},
		{"unknown match", []string{"VERSION:1:CONNECT:a:MATCH:x-y-2011-09-10\n"}, false, "ERROR: not_found x-y-2011-09-10", true},
		{"FROM past the end", []string{"VERSION:3:CONNECT:a:MATCH:" + liveID + ":FROM:7\n"}, false, "", true},
		{"silent until the timeout", nil, false, "ERROR: timeout", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := net.DialTimeout("tcp", port.Addr().String(), time.Second)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			for _, w := range tc.writes {
				if _, err := c.Write([]byte(w)); err != nil {
					t.Fatal(err)
				}
			}
			if tc.half {
				c.(*net.TCPConn).CloseWrite()
			}
			c.SetReadDeadline(time.Now().Add(5 * time.Second))
			r := bufio.NewReader(c)
			line, err := r.ReadString('\n')
			if err != nil || !strings.HasPrefix(line, tc.first) {
				t.Fatalf("first line %q, %v; want %q...", line, err, tc.first)
			}
			if tc.name == "FROM past the end" && !strings.Contains(line, "FROM 7 is past the last event of "+liveID+" (1)") {
				t.Fatalf("FROM past the end: %q", line)
			}
			if tc.closed {
				if rest, err := io.ReadAll(r); err != nil || strings.TrimSpace(string(rest)) != "" {
					t.Fatalf("after the error: %q, %v; want the connection closed", rest, err)
				}
			}
		})
	}
	waitCond(t, "every refused connection closed", func() bool { return port.Conns.Load() <= 3 })
}

// A client whose socket fills up (a fixed receive buffer, and it reads only later) makes the
// writer meet EAGAIN and partial writes: it waits for the poller's "writable" and goes on where
// the socket stopped, so the client gets every event exactly once, in order, byte for byte. (The
// 600 KB posted are several times what the two socket buffers hold. A receive buffer below the
// loopback MSS would stall in TCP's zero-window probing instead, whatever the server does.)
func TestPartialWritesAndEAGAIN(t *testing.T) {
	_, reg, port := testServerHub(t, Config{SendBuffer: 4096}, hub.Config{QueueLimit: 4096, WriteTimeout: 30 * time.Second})
	at := liveMatch(t, reg)
	d := net.Dialer{Control: func(_, _ string, rc syscallRawConn) error { return setRcvbuf(rc, 64<<10) }}
	c, err := d.Dial("tcp", port.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.Write([]byte("VERSION:3:CONNECT:slow:MATCH:" + liveID + ":FROM:0\n"))
	waitCond(t, "the subscription", func() bool { return reg.Stats.Subscribers.Load() == 1 })
	const n = 600
	text := strings.Repeat("x", 900) // each frame about 1 KB: the socket is full after a few
	for i := range n {
		ev := match.Event{At: at.Add(time.Duration(i+1) * time.Second), Kind: match.KindComment, Comment: fmt.Sprintf("%04d %s", i, text)}
		if _, err := reg.Post(context.Background(), liveID, []match.Event{ev}); err != nil {
			t.Fatal(err)
		}
	}
	c.SetReadDeadline(time.Now().Add(20 * time.Second))
	r := bufio.NewReaderSize(c, 1<<16)
	if _, err := r.ReadString('\n'); err != nil { // the start
		t.Fatal(err)
	}
	for i := range n {
		line, err := r.ReadString('\n')
		if err != nil {
			t.Fatalf("event %d: %v", i, err)
		}
		if want := fmt.Sprintf(`"seq":%d,`, i+2); !strings.Contains(line, want) || !strings.Contains(line, fmt.Sprintf(`"comment":"%04d %s"`, i, text)) {
			t.Fatalf("event %d arrived damaged or out of order: %.120q", i, line)
		}
	}
	if reg.Stats.SlowDropped.Load() != 0 {
		t.Fatal("the slow client was cut; it was only slow for a moment")
	}
}

// A client that half-closes stays subscribed and gets what follows; one that closes is removed
// from its match and from the port's count at once, by the poller, with no write needed.
func TestHalfCloseAndClose(t *testing.T) {
	_, reg, port := testServer(t, Config{})
	at := liveMatch(t, reg)
	half := dialLine(t, port, "VERSION:3:CONNECT:h:MATCH:"+liveID+"\n")
	gone := dialLine(t, port, "VERSION:3:CONNECT:g:MATCH:"+liveID+"\n")
	waitCond(t, "two subscribers", func() bool { return reg.Stats.Subscribers.Load() == 2 })
	half.(*net.TCPConn).CloseWrite()
	gone.Close()
	waitCond(t, "the closed client removed", func() bool { return reg.Stats.Subscribers.Load() == 1 && port.Conns.Load() == 1 })
	if _, err := reg.Post(context.Background(), liveID, []match.Event{{At: at.Add(time.Minute), Kind: match.KindStop}}); err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(half)
	if err != nil || strings.Count(string(got), "\n") != 2 || !strings.Contains(string(got), `"kind":"stop"`) {
		t.Fatalf("half-closed client got %q, %v; want the status and the stop, then the close", got, err)
	}
	waitCond(t, "every connection closed", func() bool { return port.Conns.Load() == 0 })
}

// Serve accepts on every port it is given, and returns once StopAccepting has run: after it a
// client's connect is no longer answered by this server.
func TestAcceptOnEveryPortAndStop(t *testing.T) {
	s, reg, first := testServer(t, Config{})
	liveMatch(t, reg)
	ln, err := listen.Bind("127.0.0.1:0", 64)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	second := &listen.Port{Listener: ln}
	served := make(chan error, 1)
	go func() { served <- s.Serve(second) }()
	for _, p := range []*listen.Port{first, second} {
		c := dialLine(t, p, "VERSION:3:CONNECT:a:MATCH:"+liveID+"\n")
		if line, err := bufio.NewReader(c).ReadString('\n'); err != nil || !strings.Contains(line, `"seq":1`) {
			t.Fatalf("port %d: %q, %v", p.Number(), line, err)
		}
	}
	waitCond(t, "one connection on each port", func() bool { return first.Conns.Load() == 1 && second.Conns.Load() == 1 })
	s.StopAccepting()
	select {
	case err := <-served:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Serve did not return after StopAccepting")
	}
}

type syscallRawConn = syscall.RawConn

func setRcvbuf(rc syscall.RawConn, n int) error {
	var err error
	rc.Control(func(fd uintptr) { err = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, n) })
	return err
}

// A client that keeps up never costs the poller a "writable" wake-up: it is watched only while a
// writer waits for room. Before, every connection was registered for it and the registration
// itself reported the edge: one wasted wake-up per connection, in the middle of a connect burst.
func TestWritesThatFitWakeNoPoller(t *testing.T) {
	srv, reg, port := testServerHub(t, Config{}, hub.Config{QueueLimit: 64})
	at := liveMatch(t, reg)
	c, err := net.Dial("tcp", port.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.Write([]byte("VERSION:3:CONNECT:fast:MATCH:" + liveID + ":FROM:0\n"))
	waitCond(t, "the subscription", func() bool { return reg.Stats.Subscribers.Load() == 1 })
	r := bufio.NewReader(c)
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	const n = 50
	for i := range n + 1 {
		if i > 0 {
			ev := match.Event{At: at.Add(time.Duration(i) * time.Second), Kind: match.KindComment, Comment: fmt.Sprint(i)}
			if _, err := reg.Post(context.Background(), liveID, []match.Event{ev}); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := r.ReadString('\n'); err != nil {
			t.Fatalf("frame %d: %v", i, err)
		}
	}
	var wakes int64
	for _, p := range srv.pollers {
		wakes += p.writeWakes.Load()
	}
	if wakes != 0 {
		t.Fatalf("%d writable wake-ups for %d writes that fit", wakes, n+1)
	}
}

// The socket options are set once on the listening socket and every accepted socket has them
// (Linux copies them on accept): no Nagle delay, keepalive with the configured idle time, and
// the fixed send buffer (which the kernel doubles).
func TestAcceptedSocketsAreTuned(t *testing.T) {
	srv, reg, port := testServerHub(t, Config{KeepAlive: 42 * time.Second, SendBuffer: 16384}, hub.Config{QueueLimit: 8})
	liveMatch(t, reg)
	// The first may have completed before the accept loop tuned the listener (and is tuned
	// itself); the second comes once the loop has waited on an empty queue, so it inherits.
	for i := range 2 {
		c, err := net.Dial("tcp", port.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.Write([]byte("VERSION:3:CONNECT:t:MATCH:" + liveID + "\n"))
		waitCond(t, "the subscription", func() bool { return reg.Stats.Subscribers.Load() == int64(i+1) })
	}
	var fds []int
	for _, p := range srv.pollers {
		for _, cn := range p.all() {
			fds = append(fds, cn.fd)
		}
	}
	if len(fds) != 2 {
		t.Fatalf("%d connections, want 2", len(fds))
	}
	for _, fd := range fds {
		for _, o := range []struct {
			name           string
			level, opt, is int
		}{
			{"TCP_NODELAY", syscall.IPPROTO_TCP, syscall.TCP_NODELAY, 1},
			{"SO_KEEPALIVE", syscall.SOL_SOCKET, syscall.SO_KEEPALIVE, 1},
			{"TCP_KEEPIDLE", syscall.IPPROTO_TCP, syscall.TCP_KEEPIDLE, 42},
			{"TCP_KEEPINTVL", syscall.IPPROTO_TCP, syscall.TCP_KEEPINTVL, 14},
			{"SO_SNDBUF", syscall.SOL_SOCKET, syscall.SO_SNDBUF, 2 * 16384},
		} {
			if v, err := syscall.GetsockoptInt(fd, o.level, o.opt); err != nil || v != o.is {
				t.Errorf("%s of an accepted socket = %d, %v; want %d", o.name, v, err, o.is)
			}
		}
	}
}
