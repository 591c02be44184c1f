package stream

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os/exec"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"matchstream/daemon/daemontest"
	"matchstream/daemon/hub"
	"matchstream/daemon/listen"
	"matchstream/daemon/live"
	"matchstream/daemon/match"
	"matchstream/daemon/tlsrecord"
)

// withTLSPort adds a TLS port to a test server, with a fresh certificate.
func withTLSPort(t *testing.T, s *Server) (*listen.Port, daemontest.Cert) {
	t.Helper()
	cert := daemontest.NewCert(t, time.Hour)
	s.SetTLS(tlsrecord.ServerConfig(&tls.Config{Certificates: []tls.Certificate{cert.Pair}}))
	ln, err := listen.Bind("127.0.0.1:0", 4096)
	if err != nil {
		t.Fatal(err)
	}
	port := &listen.Port{Listener: ln, TLS: true}
	served := make(chan error, 1)
	go func() { served <- s.Serve(port) }()
	t.Cleanup(func() { ln.Close(); s.StopAccepting(); <-served })
	return port, cert
}

// dialTLS connects to a TLS port with Go's crypto/tls client and sends the pieces of a connect
// line as separate records.
func dialTLS(t *testing.T, port *listen.Port, cert daemontest.Cert, pieces ...string) *tls.Conn {
	t.Helper()
	cfg := cert.ClientConfig()
	cfg.ServerName = "localhost"
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", port.Addr().String(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	for _, p := range pieces {
		if _, err := c.Write([]byte(p)); err != nil {
			t.Fatal(err)
		}
	}
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	return c
}

func postEvents(t *testing.T, reg *live.Registry, evs ...match.Event) {
	t.Helper()
	if _, err := reg.Post(context.Background(), liveID, evs); err != nil {
		t.Fatal(err)
	}
}

func comments(at time.Time, from, n int, size int) []match.Event {
	var evs []match.Event
	for i := range n {
		evs = append(evs, match.Event{At: at.Add(time.Duration(from+i) * time.Second), Kind: match.KindComment,
			Comment: fmt.Sprintf("%d %s", from+i, strings.Repeat("x", size))})
	}
	return evs
}

// TLS subscribers get exactly the bytes plain ones get, whatever the record boundaries of their
// connect line, with a half-closed client (close_notify) kept subscribed, and the end of the
// match closed with close_notify: Go's client reads io.EOF only after one.
func TestTLSSubscribersGetWhatPlainOnesGet(t *testing.T) {
	s, reg, plainPort := testServer(t, Config{})
	tlsPort, cert := withTLSPort(t, s)
	at := liveMatch(t, reg)
	line := "VERSION:3:CONNECT:u:MATCH:" + liveID + ":FROM:0\r\n"
	plain := daemontest.Read(dialLine(t, plainPort, line))
	var clients []*daemontest.Client
	for i := range 20 {
		pieces := []string{line}
		if i%2 == 1 {
			pieces = strings.SplitAfter(line, ":") // a record per field
		}
		c := dialTLS(t, tlsPort, cert, pieces...)
		if i == 3 {
			c.CloseWrite() // close_notify: it still reads
		}
		clients = append(clients, daemontest.Read(c))
	}
	waitCond(t, "21 subscribers", func() bool { return reg.Stats.Subscribers.Load() == 21 })
	postEvents(t, reg, comments(at, 1, 30, 100)...)
	postEvents(t, reg, comments(at, 31, 3, 1000)...)
	postEvents(t, reg, comments(at, 34, 40, 1000)...) // a batch over a record's 16 KB
	postEvents(t, reg, match.Event{At: at.Add(time.Hour), Kind: match.KindStop})
	want := plain.Wait(t)
	if n := bytes.Count(want, []byte("\n")); n != 75 {
		t.Fatalf("the plain client got %d lines, want 75", n)
	}
	for i, c := range clients {
		if got := c.Wait(t); !bytes.Equal(got, want) {
			t.Errorf("TLS client %d got %d bytes, the plain one %d", i, len(got), len(want))
		}
	}
	if n := s.TLSHandshakes.Load(); n != 20 {
		t.Errorf("%d handshakes counted, want 20", n)
	}
}

// What a TLS port does with clients that get it wrong: each is closed (the refusals in a sealed
// frame), none stops the port serving, and the failures are counted.
func TestTLSHostileClients(t *testing.T) {
	s, reg, _ := testServer(t, Config{HandshakeTimeout: 300 * time.Millisecond})
	tlsPort, cert := withTLSPort(t, s)
	liveMatch(t, reg)
	raw := func(t *testing.T, b []byte) []byte {
		c := dialLine(t, tlsPort, string(b))
		got, _ := io.ReadAll(c)
		return got
	}
	t.Run("clear text on a TLS port", func(t *testing.T) {
		before := s.TLSFailed.Load()
		got := raw(t, []byte("VERSION:1:CONNECT:me:MATCH:"+liveID+"\r\n"))
		if bytes.Contains(got, []byte("seq")) || bytes.Contains(got, []byte("home")) {
			t.Fatalf("a clear-text client got %q", got)
		}
		waitCond(t, "the failure counted", func() bool { return s.TLSFailed.Load() > before })
	})
	t.Run("silence: no handshake", func(t *testing.T) {
		start := time.Now()
		raw(t, nil)
		if d := time.Since(start); d > 5*time.Second {
			t.Fatalf("closed after %s", d)
		}
	})
	for _, tc := range []struct{ name, line, want string }{
		{"handshake, then no line", "", "ERROR: timeout"},
		{"a bad line", "HELLO\r\n", "ERROR: bad_request"},
		{"an unknown match", "VERSION:1:CONNECT:me:MATCH:nope\r\n", "ERROR: not_found nope"},
		{"a line too long", strings.Repeat("x", 3000), "ERROR: line_too_long"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := dialTLS(t, tlsPort, cert, tc.line)
			got, err := io.ReadAll(c)
			if !strings.HasPrefix(string(got), tc.want) || err != nil {
				t.Fatalf("got %q, %v; want %q then close_notify", got, err, tc.want)
			}
		})
	}
	t.Run("garbage after the handshake", func(t *testing.T) {
		c := dialTLS(t, tlsPort, cert, "VERSION:3:CONNECT:g:MATCH:"+liveID+"\r\n")
		r := bufio.NewReader(c)
		if _, err := r.ReadString('\n'); err != nil {
			t.Fatal(err)
		}
		before := s.TLSFailed.Load()
		// A record that is no record: the server cannot go on reading this connection.
		netConn(c).Write([]byte{23, 3, 3, 0, 20, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20})
		io.ReadAll(r) // ends when the server closes
		waitCond(t, "the failure counted", func() bool { return s.TLSFailed.Load() > before })
	})
	// The port still serves.
	c := dialTLS(t, tlsPort, cert, "VERSION:3:CONNECT:after:MATCH:"+liveID+"\r\n")
	if line, err := bufio.NewReader(c).ReadString('\n'); err != nil || !strings.Contains(line, `"seq":1,`) {
		t.Fatalf("after the hostile clients: %q %v", line, err)
	}
}

// netConn is the TCP connection under c, for writing bytes that are no TLS.
func netConn(c *tls.Conn) net.Conn { return c.NetConn() }

// A TLS client whose socket is full gets what it missed once it reads again, every record whole:
// a record the socket took only part of is finished before the next one starts.
func TestTLSPartialWrites(t *testing.T) {
	s, reg, _ := testServerHub(t, Config{SendBuffer: 4096}, hub.Config{QueueLimit: 4096, WriteTimeout: 30 * time.Second})
	tlsPort, cert := withTLSPort(t, s)
	at := liveMatch(t, reg)
	cfg := cert.ClientConfig()
	cfg.ServerName = "localhost"
	small := &net.Dialer{Timeout: 5 * time.Second, Control: func(_, _ string, c syscall.RawConn) error {
		return c.Control(func(fd uintptr) { syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096) })
	}}
	c, err := tls.DialWithDialer(small, "tcp", tlsPort.Addr().String(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.Write([]byte("VERSION:3:CONNECT:slow:MATCH:" + liveID + ":FROM:0\r\n"))
	waitCond(t, "the subscriber", func() bool { return reg.Stats.Subscribers.Load() == 1 })
	const n = 200
	for i := 0; i < n; i += 20 {
		postEvents(t, reg, comments(at, 1+i, 20, 1000)...)
	}
	postEvents(t, reg, match.Event{At: at.Add(time.Hour), Kind: match.KindStop})
	c.SetReadDeadline(time.Now().Add(30 * time.Second))
	got, err := io.ReadAll(c)
	if err != nil {
		t.Fatalf("after %d bytes: %v", len(got), err)
	}
	if lines := bytes.Count(got, []byte("\n")); lines != n+2 {
		t.Fatalf("%d lines, want %d", lines, n+2)
	}
}

// A hand-over moves TLS subscribers with their record state: the successor's records open with
// the keys and sequence numbers the client is at.
func TestTLSHandover(t *testing.T) {
	s, reg, _ := testServer(t, Config{})
	tlsPort, cert := withTLSPort(t, s)
	at := liveMatch(t, reg)
	var clients []*bufio.Reader
	for i := range 5 {
		c := dialTLS(t, tlsPort, cert, fmt.Sprintf("VERSION:3:CONNECT:h%d:MATCH:%s:FROM:0\r\n", i, liveID))
		r := bufio.NewReader(c)
		if line, err := r.ReadString('\n'); err != nil || !strings.Contains(line, `"seq":1,`) {
			t.Fatalf("client %d: %q %v", i, line, err)
		}
		clients = append(clients, r)
	}
	postEvents(t, reg, comments(at, 1, 3, 10)...)
	for _, r := range clients {
		for range 3 {
			r.ReadString('\n')
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	conns, release := s.Handover(ctx)
	cancel()
	if len(conns) != 5 || conns[0].TLS == nil {
		t.Fatalf("handed %d connections (first %+v)", len(conns), conns)
	}
	s2, err := New(Config{HandshakeTimeout: time.Second, MaxLine: 1024, ConnBurst: 1}, reg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Shutdown(context.Background())
	// The successor holds them (dup'd, as the parcel would); this process closes its own.
	for i := range conns {
		fd, err := syscall.Dup(conns[i].FD)
		if err != nil {
			t.Fatal(err)
		}
		conns[i].FD = fd
	}
	release(len(conns))
	reg.Thaw()
	if resumed, closed := s2.Adopt(conns, []*listen.Port{tlsPort}); resumed != 5 || closed != 0 {
		t.Fatalf("adopted %d, closed %d", resumed, closed)
	}
	postEvents(t, reg, comments(at, 4, 2, 10)...)
	for i, r := range clients {
		for j := range 2 {
			if line, err := r.ReadString('\n'); err != nil || !strings.Contains(line, fmt.Sprintf(`"seq":%d,`, 5+j)) {
				t.Fatalf("client %d after the hand-over: %q %v", i, line, err)
			}
		}
	}
}

// openssl s_client, another TLS stack: it subscribes, asks for key updates both ways (K: it
// updates and asks us to; k: it updates only) and still reads every event.
func TestTLSWithOpenSSL(t *testing.T) {
	bin, err := exec.LookPath("openssl")
	if err != nil {
		t.Fatal("openssl is needed (make test-deps installs it)")
	}
	s, reg, _ := testServer(t, Config{})
	tlsPort, cert := withTLSPort(t, s)
	at := liveMatch(t, reg)
	cmd := exec.Command(bin, "s_client", "-connect", tlsPort.Addr().String(), "-tls1_3", "-CAfile", cert.CertFile,
		"-servername", "localhost", "-verify_return_error") // not -quiet: it turns the K and k commands off
	stdin, _ := cmd.StdinPipe()
	stdout, _ := cmd.StdoutPipe()
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	io.WriteString(stdin, "VERSION:3:CONNECT:ossl:MATCH:"+liveID+":FROM:0\n")
	r := bufio.NewReader(stdout)
	read := func(want string) { // skipping what s_client says of the session
		t.Helper()
		for range 100 {
			line, err := r.ReadString('\n')
			if err != nil {
				t.Fatalf("openssl: %v before %q (stderr: %s)", err, want, stderr.String())
			}
			if strings.Contains(line, want) {
				return
			}
			if strings.Contains(line, `"seq"`) {
				t.Fatalf("openssl read %q, want %q", line, want)
			}
		}
		t.Fatalf("openssl: no %q", want)
	}
	read(`"seq":1,`)
	for i, cmdLine := range []string{"K\n", "k\n", "K\n"} {
		io.WriteString(stdin, cmdLine)
		// The update is a record the server opens before the next event is sealed: wait for the
		// server to have read it (its read sequence moved), then post.
		waitCond(t, "the key update read", func() bool { return keyUpdatesRead(s) > i })
		postEvents(t, reg, comments(at, 1+i, 1, 10)...)
		read(fmt.Sprintf(`"seq":%d,`, 2+i))
	}
	postEvents(t, reg, match.Event{At: at.Add(time.Hour), Kind: match.KindStop})
	read(`"kind":"stop"`)
	stdin.Close()
	cmd.Wait()
}

// keyUpdatesRead is how many key updates the server's TLS connections have read from clients.
func keyUpdatesRead(s *Server) int {
	n := 0
	for _, p := range s.pollers {
		p.dispatch.Lock()
		for _, c := range p.all() {
			if c.tls != nil {
				n += c.tls.rec.Updates()
			}
		}
		p.dispatch.Unlock()
	}
	return n
}

// A handshake burst's memory is released once, in the lull after it: not for a few handshakes,
// not while handshakes go on.
func TestBurstRelease(t *testing.T) {
	var freed atomic.Int64
	b := &burstRelease{free: func() { freed.Add(1) }, quiet: 20 * time.Millisecond}
	for range releaseAfter - 1 {
		b.start()
		b.done()
	}
	if b.pending.Load() {
		t.Fatal("a release scheduled after fewer than releaseAfter handshakes")
	}
	b.start() // the burst's last, and one that stays in flight through the lull
	b.start()
	b.done()
	if b.pending.Load() {
		t.Fatal("a release scheduled with a handshake in flight")
	}
	b.done()
	waitCond(t, "the release", func() bool { return freed.Load() == 1 })
	if b.since.Load() != 0 {
		t.Fatalf("%d handshakes counted after the release", b.since.Load())
	}
}

// Floods of TLS connections: those that never send a hello wait in the poller like plain ones
// (no handshake runs for them), those that stop mid-hello hold at most the handshake slots (the
// rest wait their turn), and a real client is served through both.
func TestTLSHandshakeFlood(t *testing.T) {
	s, reg, _ := testServer(t, Config{HandshakeTimeout: 300 * time.Millisecond})
	s.tlsSlots = 2
	tlsPort, cert := withTLSPort(t, s)
	liveMatch(t, reg)
	queued := func() (running, waiting int) {
		s.hsQueue.Lock()
		defer s.hsQueue.Unlock()
		return s.hsQueue.running, len(s.hsQueue.waiting)
	}
	served := func(name string) {
		t.Helper()
		c := dialTLS(t, tlsPort, cert, "VERSION:3:CONNECT:"+name+":MATCH:"+liveID+"\r\n")
		if line, err := bufio.NewReader(c).ReadString('\n'); err != nil || !strings.Contains(line, `"seq":1,`) {
			t.Fatalf("%s: %q %v", name, line, err)
		}
	}
	for range 50 {
		dialLine(t, tlsPort, "")
	}
	waitCond(t, "50 silent connections held", func() bool { return tlsPort.Conns.Load() == 50 })
	if r, w := queued(); r != 0 || w != 0 {
		t.Fatalf("silent connections: %d handshakes running, %d queued; want none", r, w)
	}
	served("behind the silent ones")
	// A handshake record header, then nothing: crypto/tls waits for the rest.
	for range 20 {
		dialLine(t, tlsPort, "\x16\x03\x01\x02\x00")
	}
	waitCond(t, "18 stalled hellos queued", func() bool { _, w := queued(); return w == 18 })
	if r, _ := queued(); r != 2 {
		t.Fatalf("%d handshakes running, want the 2 slots", r)
	}
	waitCond(t, "the stalled hellos cut", func() bool { r, w := queued(); return r == 0 && w == 0 })
	served("after the stalled ones")
}
