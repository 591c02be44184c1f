package stream

import (
	"context"
	"io"
	"log/slog"
	"net"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"matchstream/daemon/hub"
	"matchstream/daemon/listen"
	"matchstream/daemon/live"
	"matchstream/daemon/protocol"
	"matchstream/daemon/store/bolt"
)

// testServer is a stream server on one ephemeral loopback port, fed by a registry on a fresh bolt
// store; it is shut down when the test ends.
func testServer(t *testing.T, cfg Config) (*Server, *live.Registry, *listen.Port) {
	t.Helper()
	st, err := bolt.Open(filepath.Join(t.TempDir(), "db"), time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	reg, err := live.Open(context.Background(), st, live.Config{Hub: hub.Config{QueueLimit: 64, WriteTimeout: time.Second}}, log)
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
