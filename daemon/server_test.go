package daemon

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"matchstream/daemon/handover"
)

// The in-process tests: a Server on ephemeral loopback ports, a fresh state directory, no binary.

func testConfig(t testing.TB) Config {
	t.Helper()
	cfg := Default()
	cfg.StateDir = t.TempDir()
	cfg.Listen.API = "127.0.0.1:0"
	cfg.Listen.Stream = []string{"127.0.0.1:0", "127.0.0.1:0"}
	cfg.API.WatcherToken = "tok"
	cfg.MaxClockSkew = time.Hour
	cfg.ShutdownTimeout = 5 * time.Second
	return cfg
}

func startServer(t *testing.T, cfg Config) *Server {
	t.Helper()
	s, err := New(cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Shutdown(context.Background()) })
	select {
	case <-s.Ready():
	case <-time.After(5 * time.Second):
		t.Fatal("not ready")
	}
	return s
}

func (s *Server) testURL(path string) string {
	api, _ := s.Addrs()
	return "http://" + api.String() + path
}

func post(t testing.TB, s *Server, id, body string) { t.Helper(); postKeyed(t, s, id, "", body) }

// postKeyed posts body, under an idempotency key if key is not "", and returns the seqs it was
// answered with; anything but 201 fails the test.
func postKeyed(t testing.TB, s *Server, id, key, body string) []uint64 {
	t.Helper()
	req, _ := http.NewRequest("POST", s.testURL("/matches/"+id+"/events"), strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer tok")
	if key != "" {
		req.Header.Set("Idempotency-Key", key)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var res struct{ Seqs []uint64 }
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 201 || json.Unmarshal(b, &res) != nil {
		t.Fatalf("POST %s (key %q): %d %s", id, key, resp.StatusCode, b)
	}
	return res.Seqs
}

// sample is the original's sample match in our event format: its start, and the rest as one body.
func sample(t *testing.T) (start, rest string) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "testdata", "matches", "elp-tig-2011-09-10.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	return lines[0], "[" + strings.Join(lines[1:], ",") + "]"
}

func dial(t *testing.T, addr net.Addr, line string) *bufio.Reader {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr.String(), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Write([]byte(line + "\n")); err != nil {
		t.Fatal(err)
	}
	return bufio.NewReader(c)
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// A whole match through a Server in-process: every stream port serves, a v3 client gets every
// event once in order, a v1 client gets the shutdown notice, and after Shutdown the ports are shut.
func TestServerLifecycle(t *testing.T) {
	t.Parallel()
	s := startServer(t, testConfig(t))
	api, streams := s.Addrs()
	if len(streams) != 2 || api == nil {
		t.Fatalf("Addrs: %v %v", api, streams)
	}
	const id = "elp-tig-2011-09-10"
	refused := dial(t, streams[1], "VERSION:3:CONNECT:x:MATCH:"+id)
	if line, _ := refused.ReadString('\n'); !strings.Contains(line, "not_found") {
		t.Fatalf("before the match exists: %q", line)
	}
	start, rest := sample(t)
	post(t, s, id, start)
	v3 := dial(t, streams[0], "VERSION:3:CONNECT:a:MATCH:"+id+":FROM:0")
	v1 := dial(t, streams[1], "VERSION:1:CONNECT:b:MATCH:"+id)
	if line, err := v1.ReadString('\n'); err != nil || line == "" {
		t.Fatalf("v1 status: %q %v", line, err)
	}
	waitFor(t, "two subscribers", func() bool { return s.reg.Stats.Subscribers.Load() == 2 })
	post(t, s, id, rest)
	for seq := 1; seq <= 31; seq++ { // the start and the 30 events after it
		line, err := v3.ReadString('\n')
		if err != nil || !strings.Contains(line, `"seq":`+strconv.Itoa(seq)+`,`) {
			t.Fatalf("event %d: %q %v", seq, line, err)
		}
	}
	if line, err := v3.ReadString('\n'); err != io.EOF {
		t.Fatalf("after the last event: %q %v, want the connection closed", line, err)
	}

	if err := s.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := s.Wait(); err != nil {
		t.Fatal(err)
	}
	for _, a := range append(streams, api) {
		if c, err := net.DialTimeout("tcp", a.String(), time.Second); err == nil {
			c.Close()
			t.Errorf("%s still accepts after Shutdown", a)
		}
	}
}

// notifySocket is a fake service manager: the datagrams the Server sends, with any descriptors.
type notifySocket struct {
	fd   int
	path string
}

func newNotifySocket(t *testing.T) *notifySocket {
	t.Helper()
	n := &notifySocket{path: filepath.Join(t.TempDir(), "notify")}
	var err error
	if n.fd, err = unix.Socket(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(n.fd) })
	if err := unix.Bind(n.fd, &unix.SockaddrUnix{Name: n.path}); err != nil {
		t.Fatal(err)
	}
	tv := unix.NsecToTimeval(int64(5 * time.Second))
	unix.SetsockoptTimeval(n.fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv)
	return n
}

// next returns the next datagram that starts with prefix (others are skipped) and its descriptors.
func (n *notifySocket) next(t *testing.T, prefix string) (string, []int) {
	t.Helper()
	for {
		buf, oob := make([]byte, 4096), make([]byte, unix.CmsgSpace(4*4))
		m, oobn, _, _, err := unix.Recvmsg(n.fd, buf, oob, 0)
		if err != nil {
			t.Fatalf("waiting for %q: %v", prefix, err)
		}
		var fds []int
		if msgs, _ := unix.ParseSocketControlMessage(oob[:oobn]); len(msgs) > 0 {
			fds, _ = unix.ParseUnixRights(&msgs[0])
		}
		if msg := string(buf[:m]); strings.HasPrefix(msg, prefix) {
			return msg, fds
		}
		for _, fd := range fds {
			unix.Close(fd)
		}
	}
}

// Under systemd with KeepClients, Shutdown leaves the clients in the fd store: READY=1 at start,
// then one parcel holding every subscriber with its match and last seq, then STOPPING=1; the
// clients get no byte of a shutdown notice. The watchdog is pinged while the probe passes.
func TestServerKeepsClientsInFDStore(t *testing.T) {
	t.Parallel()
	ns := newNotifySocket(t)
	cfg := testConfig(t)
	cfg.KeepClients = true
	cfg.Systemd = Systemd{NotifySocket: ns.path, Watchdog: 100 * time.Millisecond}
	s := startServer(t, cfg)
	if msg, _ := ns.next(t, "READY=1"); !strings.Contains(msg, "STATUS=0 connections on 2 ports") {
		t.Fatalf("READY: %q", msg)
	}
	ns.next(t, "WATCHDOG=1")
	const id = "elp-tig-2011-09-10"
	start, _ := sample(t)
	post(t, s, id, start)
	_, streams := s.Addrs()
	var clients []*bufio.Reader
	for i := range 3 {
		c := dial(t, streams[i%2], "VERSION:3:CONNECT:c:MATCH:"+id+":FROM:0")
		if line, err := c.ReadString('\n'); err != nil || !strings.Contains(line, `"seq":1,`) {
			t.Fatalf("client %d: %q %v", i, line, err)
		}
		clients = append(clients, c)
	}
	done := make(chan error, 1)
	go func() { done <- s.Shutdown(context.Background()) }()
	msg, fds := ns.next(t, "FDSTORE=1")
	if msg != "FDSTORE=1\nFDNAME=handover\nFDPOLL=0" || len(fds) != 1 {
		t.Fatalf("fd store message %q with %d fds", msg, len(fds))
	}
	conns, err := handover.Unpack(os.NewFile(uintptr(fds[0]), "parcel"))
	if err != nil || len(conns) != 3 {
		t.Fatalf("parcel: %d conns, %v", len(conns), err)
	}
	for _, c := range conns {
		if c.Match != id || c.Seq != 1 || c.Version != 3 {
			t.Errorf("parcel entry %+v", c)
		}
		unix.Close(c.FD)
	}
	ns.next(t, "STOPPING=1")
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	for i, c := range clients {
		if b, _ := c.Peek(1); len(bytes.TrimSpace(b)) > 0 {
			t.Errorf("client %d got %q after the hand-over", i, b)
		}
	}
}

// Stop the Server mid-match and start another on the same state directory: the match continues
// where it was, a v3 client told of the shutdown resumes with FROM and, over both connections,
// has every event exactly once.
func TestServerRestartResume(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t)
	s := startServer(t, cfg)
	const id = "elp-tig-2011-09-10"
	b, err := os.ReadFile(filepath.Join("..", "testdata", "matches", "elp-tig-2011-09-10.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	post(t, s, id, "["+strings.Join(lines[:15], ",")+"]")
	_, streams := s.Addrs()
	c := dial(t, streams[0], "VERSION:3:CONNECT:r:MATCH:"+id+":FROM:0")
	var got []string
	for {
		line, err := c.ReadString('\n')
		if err != nil {
			break
		}
		got = append(got, line)
		if len(got) == 15 {
			if err := s.Shutdown(context.Background()); err != nil {
				t.Fatal(err)
			}
		}
	}
	if len(got) != 16 || !strings.Contains(got[15], `"kind":"shutdown"`) {
		t.Fatalf("before the restart: %d lines, last %q; want 15 events and the shutdown notice", len(got), got[len(got)-1])
	}

	s2 := startServer(t, cfg) // new ports, the same store
	_, streams = s2.Addrs()
	c2 := dial(t, streams[1], "VERSION:3:CONNECT:r:MATCH:"+id+":FROM:15")
	waitFor(t, "the resumed subscriber", func() bool { return s2.reg.Stats.Subscribers.Load() == 1 })
	post(t, s2, id, "["+strings.Join(lines[15:], ",")+"]")
	all := got[:15]
	for {
		line, err := c2.ReadString('\n')
		if err != nil {
			break
		}
		all = append(all, line)
	}
	if len(all) != len(lines) {
		t.Fatalf("across the restart: %d events, want %d", len(all), len(lines))
	}
	for i, line := range all {
		if !strings.Contains(line, `"seq":`+strconv.Itoa(i+1)+`,`) {
			t.Fatalf("event %d: %q", i+1, line)
		}
	}
}

// The admin listener serves the metrics; the API still shows them to this host.
func TestAdminListenerServesMetrics(t *testing.T) {
	cfg := testConfig(t)
	cfg.Listen.Admin = "127.0.0.1:0"
	s := startServer(t, cfg)
	if s.AdminAddr() == nil {
		t.Fatal("no admin listener")
	}
	for _, u := range []string{"http://" + s.AdminAddr().String() + "/metrics", s.testURL("/metrics")} {
		resp, err := http.Get(u)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || !bytes.Contains(body, []byte("matchstream_events_accepted_total 0")) {
			t.Fatalf("GET %s: %d %.200s", u, resp.StatusCode, body)
		}
	}
	if s := startServer(t, testConfig(t)); s.AdminAddr() != nil {
		t.Fatalf("an admin listener at %s without --admin", s.AdminAddr())
	}
}
