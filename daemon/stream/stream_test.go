package stream

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"matchstream/daemon/hub"
	"matchstream/daemon/listen"
	"matchstream/daemon/live"
	"matchstream/daemon/match"
	"matchstream/daemon/protocol"
	"matchstream/daemon/store"
	"matchstream/daemon/store/bolt"
)

// testServer is a stream server on one ephemeral loopback port, fed by a registry on a fresh bolt
// store; it is shut down when the test ends.
func testServer(t *testing.T, cfg Config) (*Server, *live.Registry, *listen.Port) {
	return testServerHub(t, cfg, hub.Config{QueueLimit: 64, WriteTimeout: time.Second})
}

func testServerHub(t *testing.T, cfg Config, hubc hub.Config) (*Server, *live.Registry, *listen.Port) {
	t.Helper()
	return testServerStore(t, cfg, hubc, func(s store.Store) store.Store { return s })
}

// testServerStore is testServerHub with the store wrapped (a store that stalls, say).
func testServerStore(t *testing.T, cfg Config, hubc hub.Config, wrap func(store.Store) store.Store) (*Server, *live.Registry, *listen.Port) {
	t.Helper()
	return testServerLog(t, cfg, hubc, wrap, slog.New(slog.NewTextHandler(io.Discard, nil)))
}

// testServerLog is testServerStore logging to log.
func testServerLog(t *testing.T, cfg Config, hubc hub.Config, wrap func(store.Store) store.Store, log *slog.Logger) (*Server, *live.Registry, *listen.Port) {
	t.Helper()
	b, err := bolt.Open(filepath.Join(t.TempDir(), "db"), time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	st := wrap(b)
	reg, err := live.Open(context.Background(), st, live.Config{Hub: hubc}, log)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.HandshakeTimeout == 0 {
		cfg.HandshakeTimeout = 10 * time.Second
	}
	if cfg.MaxLine == 0 {
		cfg.MaxLine = 1024
	}
	if cfg.ConnBurst == 0 {
		cfg.ConnBurst = 20
	}
	s, err := New(cfg, reg, log)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := listen.Bind("127.0.0.1:0", 4096)
	if err != nil {
		t.Fatal(err)
	}
	port := &listen.Port{Listener: ln}
	served := make(chan error, 1)
	go func() { served <- s.Serve(port) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		s.Shutdown(ctx)
		ln.Close()
		<-served
	})
	return s, reg, port
}

// held counts the connections the server's pollers still hold.
func held(s *Server) int {
	n := 0
	for _, p := range s.pollers {
		n += len(p.all())
	}
	return n
}

// A hand-over takes every connection the process accepted: once Handover has returned, no accept
// loop adds another one behind its back, however fast clients arrive. (Before the fix an accept
// loop that was busy went on accepting after StopAccepting, and the connections it added after
// the pollers were walked stayed in the old process, which closed them without a byte: the
// restart test's "first line \"\"".)
func TestHandoverTakesEveryAcceptedConnection(t *testing.T) {
	for round := range 5 {
		s, _, port := testServer(t, Config{})
		addr := port.Addr().String()
		stop := make(chan struct{})
		var wg sync.WaitGroup
		var mu sync.Mutex
		var clients []net.Conn
		for range 4 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					select {
					case <-stop:
						return
					default:
					}
					c, err := net.DialTimeout("tcp", addr, time.Second)
					if err != nil {
						continue // the backlog is full: the flood is the point
					}
					mu.Lock()
					clients = append(clients, c)
					mu.Unlock()
				}
			}()
		}
		t.Cleanup(func() {
			mu.Lock()
			defer mu.Unlock()
			for _, c := range clients {
				c.Close()
			}
		})
		deadline := time.Now().Add(10 * time.Second)
		for port.Conns.Load() < 200 && time.Now().Before(deadline) {
			time.Sleep(time.Millisecond)
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		conns, release := s.Handover(ctx)
		cancel()
		release(len(conns))
		// Clients go on connecting for a while; the process must take none of them.
		after := time.Now().Add(100 * time.Millisecond)
		for time.Now().Before(after) {
			if n := held(s); n != 0 {
				close(stop)
				wg.Wait()
				t.Fatalf("round %d: %d connections accepted after the hand-over took %d; they would be closed without a byte",
					round, n, len(conns))
			}
			time.Sleep(time.Millisecond)
		}
		close(stop)
		wg.Wait()
		if n := port.Conns.Load(); n != 0 {
			t.Fatalf("round %d: port still counts %d connections after the hand-over", round, n)
		}
	}
}

// dialLine connects to port, sends line and returns the connection.
func dialLine(t *testing.T, port *listen.Port, line string) net.Conn {
	t.Helper()
	c, err := net.DialTimeout("tcp", port.Addr().String(), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if line != "" {
		if _, err := c.Write([]byte(line)); err != nil {
			t.Fatal(err)
		}
	}
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	return c
}

// With Welcome the original's banner comes first, before the client says anything; without it
// the first bytes are the answer to the connect line, as the original's own client expects.
func TestWelcome(t *testing.T) {
	for _, welcome := range []bool{false, true} {
		_, _, port := testServer(t, Config{Welcome: welcome})
		c := dialLine(t, port, "")
		if welcome {
			buf := make([]byte, len(protocol.Welcome))
			if _, err := io.ReadFull(c, buf); err != nil || string(buf) != protocol.Welcome {
				t.Fatalf("banner %q, %v", buf, err)
			}
		}
		c.Write([]byte("VERSION:1:CONNECT:me:MATCH:nope\r\n"))
		got, _ := io.ReadAll(c)
		if want := "ERROR: not_found nope\n\r\n"; string(got) != want {
			t.Fatalf("welcome=%v: got %q after the banner, want %q", welcome, got, want)
		}
	}
}

// A start event for match "fla-flu-2011-09-11" with full squads.
func startEvent(at time.Time) match.Event {
	var ps []match.Player
	for n := 1; n <= 11; n++ {
		ps = append(ps, match.Player{Number: n, Name: fmt.Sprintf("P%d", n)})
	}
	return match.Event{At: at, Kind: match.KindStart, Home: "fla", Visit: "flu", StartDate: "2011-09-11", HomePlayers: ps, VisitPlayers: ps}
}

// Many clients that stop reading, each with a small receive buffer (so the kernel cannot absorb the
// match for them, as the 430 KB of a default buffer did), are cut by the slow-consumer policy with
// the daemon's defaults (the send buffer autotuned, a queue of 64 frames): every one of them, while
// the clients that read get every event.
func TestStalledReadersAreCut(t *testing.T) {
	const stalled, honest, events = 200, 10, 400
	_, reg, port := testServerHub(t, Config{SendBuffer: DefaultSendBuffer}, hub.Config{QueueLimit: 64, WriteTimeout: 30 * time.Second})
	const id = "fla-flu-2011-09-11"
	at := time.Date(2011, 9, 11, 18, 0, 0, 0, time.UTC)
	if _, err := reg.Post(context.Background(), id, []match.Event{startEvent(at)}); err != nil {
		t.Fatal(err)
	}
	small := net.Dialer{Timeout: 5 * time.Second, Control: func(_, _ string, c syscall.RawConn) error {
		return c.Control(func(fd uintptr) { syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096) })
	}}
	var stalls []net.Conn
	for range stalled {
		c, err := small.Dial("tcp", port.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		c.Write([]byte("VERSION:3:CONNECT:stalled:MATCH:" + id + "\r\n"))
		stalls = append(stalls, c)
	}
	type reader struct {
		lines atomic.Int64
		done  chan []byte
	}
	var readers []*reader
	for range honest {
		c := dialLine(t, port, "VERSION:3:CONNECT:reader:MATCH:"+id+"\r\n")
		c.SetReadDeadline(time.Now().Add(2 * time.Minute))
		r := &reader{done: make(chan []byte, 1)}
		go func() {
			var all []byte
			buf := make([]byte, 64<<10)
			for {
				n, err := c.Read(buf)
				all = append(all, buf[:n]...)
				r.lines.Add(int64(bytes.Count(buf[:n], []byte("\n"))))
				if err != nil {
					r.done <- all
					return
				}
			}
		}()
		readers = append(readers, r)
	}
	deadline := time.Now().Add(30 * time.Second)
	for reg.Stats.Subscribers.Load() != stalled+honest {
		if time.Now().After(deadline) {
			t.Fatalf("%d subscribers, want %d", reg.Stats.Subscribers.Load(), stalled+honest)
		}
		time.Sleep(5 * time.Millisecond)
	}
	comment := strings.Repeat("goooal ", 140) // about 1 KB a frame
	for i := range events {
		// A watcher's pace, not a flood: the readers stay within 16 events of the post, so only
		// the stalled ones can fall 64 behind, however starved the machine is.
		for _, r := range readers {
			for r.lines.Load() < int64(1+i-16) {
				if time.Now().After(deadline.Add(time.Minute)) {
					t.Fatalf("a reader is stuck at %d lines before event %d", r.lines.Load(), i)
				}
				time.Sleep(time.Millisecond)
			}
		}
		ev := match.Event{At: at.Add(time.Duration(i+1) * time.Second), Kind: match.KindComment, Comment: comment}
		if _, err := reg.Post(context.Background(), id, []match.Event{ev}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := reg.Post(context.Background(), id, []match.Event{{At: at.Add(time.Hour), Kind: match.KindStop}}); err != nil {
		t.Fatal(err)
	}
	for i, r := range readers {
		select {
		case got := <-r.done:
			if n := bytes.Count(got, []byte("\n")); n != events+2 || !bytes.Contains(got[len(got)-60:], []byte(`"kind":"stop"`)) {
				t.Fatalf("reader %d got %d lines, want %d ending with stop", i, n, events+2)
			}
		case <-time.After(time.Minute):
			t.Fatalf("reader %d: no end of match after a minute (%d lines)", i, r.lines.Load())
		}
	}
	if cut := reg.Stats.SlowDropped.Load(); cut != stalled {
		c := stalls[0]
		c.SetReadDeadline(time.Now().Add(2 * time.Second))
		got, _ := io.ReadAll(c)
		t.Logf("longest %+v; stalled[0] had %d bytes, max queue %d", reg.Longest(3), len(got), reg.Stats.MaxQueue.Load())
		t.Fatalf("%d of %d stalled readers cut as slow consumers", cut, stalled)
	}
	// What a stalled reader had been sent before the cut is what the kernel held for it.
	c := stalls[0]
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	got, _ := io.ReadAll(c)
	if bytes.Contains(got, []byte(`"kind":"stop"`)) {
		t.Fatal("a stalled reader got the whole match")
	}
	t.Logf("%d stalled readers cut, %d readers got all %d events; a stalled one had %d KB in kernel buffers",
		stalled, honest, events+1, len(got)>>10)
}

// An event stream that arrives while a hand-over is under way gets the response head, whose
// retry: field has the browser come back in a moment, not a connection closed without a byte.
func TestEventStreamDuringHandover(t *testing.T) {
	s, reg, _ := testServer(t, Config{})
	const id = "fla-flu-2011-09-11"
	if _, err := reg.Post(context.Background(), id, []match.Event{startEvent(time.Now().Add(-time.Hour))}); err != nil {
		t.Fatal(err)
	}
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	browser := os.NewFile(uintptr(fds[1]), "browser")
	defer browser.Close()
	reg.Freeze()
	head := []byte("HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nretry: 2000\n\n")
	if err := s.AttachSSE(fds[0], &listen.Port{}, id, 0, false, head); !errors.Is(err, live.ErrHandingOver) {
		t.Fatalf("AttachSSE while frozen: %v", err)
	}
	browser.SetReadDeadline(time.Now().Add(5 * time.Second))
	got, _ := io.ReadAll(browser)
	if !bytes.Equal(got, head) {
		t.Fatalf("the browser got %q, want the head", got)
	}
}
