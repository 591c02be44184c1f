package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"matchstream/daemon/daemontest"
)

// fakeSystemd plays PID 1's part for one service, as far as the daemon can tell: it holds the
// listening sockets across restarts, starts the daemon with LISTEN_FDS/LISTEN_FDNAMES/LISTEN_PID,
// reads NOTIFY_SOCKET (READY=1, FDSTORE=1 with descriptors, FDSTOREREMOVE=1) and passes stored
// descriptors to the next start after the sockets, named by their FDNAME, as systemd 252 does.
type fakeSystemd struct {
	t       *testing.T
	args    []string
	sockets []*os.File // stream..., api
	names   []string
	notify  *net.UnixConn
	path    string
	stored  []storedFD
	cmd     *exec.Cmd
	exited  chan struct{}
	log     *syncBuffer
	api     int
	stream  []int
}

type storedFD struct {
	name string
	f    *os.File
}

func newFakeSystemd(t *testing.T, stateDir string, extra ...string) *fakeSystemd {
	t.Helper()
	api, stream := freePorts(t, 4)
	h := &fakeSystemd{t: t, log: &syncBuffer{}, api: api, stream: stream}
	listen := func(port int, name string) {
		ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
		if err != nil {
			t.Fatal(err)
		}
		f, err := ln.(*net.TCPListener).File()
		ln.Close() // f holds the socket
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { f.Close() })
		h.sockets, h.names = append(h.sockets, f), append(h.names, name)
	}
	for _, p := range stream {
		listen(p, "stream")
	}
	listen(api, "api")
	h.path = filepath.Join(t.TempDir(), "notify")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: h.path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	h.notify = conn
	h.args = append([]string{"serve", "--config", "/dev/null", "--state-dir", stateDir,
		"--api", fmt.Sprintf("127.0.0.1:%d", api), "--log-level", "debug",
		"--stream", fmt.Sprintf("127.0.0.1:%d-%d", stream[0], stream[len(stream)-1])}, extra...)
	return h
}

// start runs the daemon and waits for READY=1.
func (h *fakeSystemd) start() {
	h.t.Helper()
	files, names := append([]*os.File{}, h.sockets...), append([]string{}, h.names...)
	for _, s := range h.stored {
		files, names = append(files, s.f), append(names, s.name)
	}
	h.cmd = exec.Command("/bin/sh", append([]string{"-c", `LISTEN_PID=$$; export LISTEN_PID; exec "$0" "$@"`, binary}, h.args...)...)
	h.cmd.Env = append(os.Environ(), "LISTEN_FDS="+strconv.Itoa(len(files)),
		"LISTEN_FDNAMES="+strings.Join(names, ":"), "NOTIFY_SOCKET="+h.path)
	h.cmd.ExtraFiles = files
	h.cmd.Stdout, h.cmd.Stderr = h.log, h.log
	if err := h.cmd.Start(); err != nil {
		h.t.Fatal(err)
	}
	h.exited = make(chan struct{})
	go func() { h.cmd.Wait(); close(h.exited) }()
	cmd := h.cmd
	h.t.Cleanup(func() { cmd.Process.Kill() })
	deadline := time.Now().Add(60 * time.Second)
	for !h.receive(time.Until(deadline)) {
		if time.Now().After(deadline) {
			h.t.Fatalf("no READY=1 within 60 s:\n%s", h.log.String())
		}
	}
}

// receive handles notify messages until READY=1 (true) or until none comes within wait.
func (h *fakeSystemd) receive(wait time.Duration) bool {
	buf, oob := make([]byte, 4096), make([]byte, unix.CmsgSpace(253*4))
	for {
		h.notify.SetReadDeadline(time.Now().Add(wait))
		n, oobn, _, _, err := h.notify.ReadMsgUnix(buf, oob)
		if err != nil {
			return false
		}
		var fds []int
		if msgs, err := unix.ParseSocketControlMessage(oob[:oobn]); err == nil {
			for _, m := range msgs {
				if got, err := unix.ParseUnixRights(&m); err == nil {
					fds = append(fds, got...)
				}
			}
		}
		kv := map[string]string{}
		for _, line := range strings.Split(string(buf[:n]), "\n") {
			k, v, _ := strings.Cut(line, "=")
			kv[k] = v
		}
		switch {
		case kv["FDSTORE"] == "1":
			for _, fd := range fds {
				h.stored = append(h.stored, storedFD{kv["FDNAME"], os.NewFile(uintptr(fd), kv["FDNAME"])})
			}
		case kv["FDSTOREREMOVE"] == "1":
			kept := h.stored[:0]
			for _, s := range h.stored {
				if s.name == kv["FDNAME"] {
					s.f.Close()
				} else {
					kept = append(kept, s)
				}
			}
			h.stored = kept
		default:
			for _, fd := range fds {
				unix.Close(fd)
			}
		}
		if kv["READY"] == "1" {
			return true
		}
	}
}

// restart is `systemctl restart`: SIGTERM, wait for the exit, keep what was stored, start again.
func (h *fakeSystemd) restart() {
	h.t.Helper()
	h.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-h.exited:
	case <-time.After(30 * time.Second):
		h.t.Fatalf("daemon did not stop on SIGTERM:\n%s", h.log.String())
	}
	if code := h.cmd.ProcessState.ExitCode(); code != 0 {
		h.t.Fatalf("daemon exited %d:\n%s", code, h.log.String())
	}
	h.receive(100 * time.Millisecond) // what it sent before exiting is queued here
	h.start()
}

func (h *fakeSystemd) url(path string) string {
	return fmt.Sprintf("http://127.0.0.1:%d%s", h.api, path)
}

// watchers connects clients and checks, at the end, that each got the whole match exactly once.
type watchers struct {
	mu          sync.Mutex
	v1, v3, sse []*rawClient
	refused     int
}

// open connects a client that sends request and reads until closed, and files it under list.
func (w *watchers) open(t *testing.T, port int, request string, list *[]*rawClient) {
	c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", port), 10*time.Second)
	w.mu.Lock()
	defer w.mu.Unlock()
	if err != nil {
		w.refused++
		return
	}
	t.Cleanup(func() { c.Close() })
	c.Write([]byte(request))
	*list = append(*list, daemontest.Read(c))
}

// connectSSE opens an event stream on the API port.
func (w *watchers) connectSSE(t *testing.T, port int) {
	w.open(t, port, "GET /matches/"+sampleID+"/stream HTTP/1.1\r\nHost: x\r\n\r\n", &w.sse)
}

// connect connects a v1 or v3 client to a stream port.
func (w *watchers) connect(t *testing.T, port int, v3 bool, i int) {
	if v3 {
		w.open(t, port, fmt.Sprintf("VERSION:3:CONNECT:u%d:MATCH:%s\r\n", i, sampleID), &w.v3)
	} else {
		w.open(t, port, fmt.Sprintf("VERSION:1:CONNECT:u%d:MATCH:%s\r\n", i, sampleID), &w.v1)
	}
}

// check waits for every client to be closed after the end event and checks its stream: the status
// as of when it connected, then every later event once, and nothing else (no shutdown notice).
func (w *watchers) check(t *testing.T, v3 [][]byte) {
	t.Helper()
	for i, c := range w.v3 {
		got := c.Wait(t)
		var st struct {
			Seq int `json:"seq"`
		}
		first, _, _ := bytes.Cut(got, []byte("\n"))
		if err := json.Unmarshal(first, &st); err != nil {
			t.Fatalf("v3 client %d (%s): first line %q", i, c.Conn.LocalAddr(), first)
		}
		checkV3(t, fmt.Sprintf("v3 client %d", i), got, v3, st.Seq, false)
	}
	for i, c := range w.v1 {
		checkV1(t, fmt.Sprintf("v1 client %d", i), c.Wait(t), "", 2)
	}
	for i, c := range w.sse {
		_, events, _ := daemontest.ParseSSE(t, c.Wait(t))
		if len(events) == 0 || events[0].Event != "status" {
			t.Fatalf("SSE client %d: no status first: %+v", i, events)
		}
		after, _ := strconv.Atoi(events[0].ID)
		daemontest.CheckSSE(t, fmt.Sprintf("SSE client %d", i), events[1:], v3, after)
	}
}

// The daemon is restarted three times mid-match by a harness that plays systemd, with 2,000 TCP
// clients and 100 Server-Sent Events clients watching and more connecting during the restarts: no connect is refused, no client is
// dropped, and every client gets every event exactly once, in order.
func TestRestartKeepsClients(t *testing.T) {
	t.Parallel() // it passed 20 runs in a row beside two busy loops (make stress-restart): load is its point
	dir := t.TempDir()
	h := newFakeSystemd(t, filepath.Join(dir, "state"), "--keep-clients")
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("daemon log (every process):\n%s", h.log.String())
		}
	})
	h.start()
	lines, v3 := sampleLines(t)
	token := stateToken(t, filepath.Join(dir, "state"))
	post := func(part []string, name string) {
		run(t, 0, "watcher", "--api", h.url(""), "--token", token, "--speed", "0", "-q", "--match", sampleID,
			writeFile(t, dir, name, part))
	}
	post(lines[:1], "start.jsonl")

	w := &watchers{}
	const n, browsers = 2000, 100
	for i := range n {
		w.connect(t, h.stream[i%len(h.stream)], i%2 == 1, i)
	}
	for range browsers {
		w.connectSSE(t, h.api)
	}
	waitUntil(t, "2,100 subscribers", 60*time.Second, func() bool { return subscribersAt(h.url("/matches")) == n+browsers })

	rest := lines[1:]
	chunk := (len(rest) + 3) / 4
	late := 0
	for r := range 3 {
		post(rest[r*chunk:(r+1)*chunk], fmt.Sprintf("part%d.jsonl", r))
		// Clients keep arriving while the daemon restarts; the backlog holds them.
		stop := make(chan struct{})
		var wg sync.WaitGroup
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				w.connect(t, h.stream[late%len(h.stream)], true, n+late)
				late++
				time.Sleep(2 * time.Millisecond) // a trickle, not a flood: this is not a load test
			}
		}()
		h.restart()
		close(stop)
		wg.Wait()
		if len(h.stored) != 0 {
			t.Fatalf("restart %d: the new process left %d descriptors in the fd store", r+1, len(h.stored))
		}
		// READY=1 comes by datagram, the log through a pipe that is copied apart: poll for it.
		waitUntil(t, fmt.Sprintf("hand-over %d in the log", r+1), 20*time.Second, func() bool {
			return strings.Count(h.log.String(), "clients taken over") == r+1
		})
	}
	post(rest[3*chunk:], "part3.jsonl")
	if w.refused != 0 {
		t.Fatalf("%d connects refused during the restarts", w.refused)
	}
	w.check(t, v3)
	t.Logf("%d TCP and %d SSE clients from the start and %d that connected during the restarts got the whole match exactly once", n, browsers, late)
}

// loggedDaemon is a daemon whose output goes to a file, not a pipe: a successor it starts on
// SIGUSR2 inherits that output and outlives it, and exec.Cmd would wait for a pipe's last writer.
type loggedDaemon struct {
	cmd    *exec.Cmd
	exited chan error
	api    int
	stream []int
	state  string
	log    string
}

func startLoggedDaemon(t *testing.T, exe, dir string) *loggedDaemon {
	t.Helper()
	api, stream := freePorts(t, 2)
	d := &loggedDaemon{exited: make(chan error, 1), api: api, stream: stream,
		state: filepath.Join(dir, "state"), log: filepath.Join(dir, "log")}
	logf, err := os.Create(d.log)
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	d.cmd = exec.Command(exe, "serve", "--config", "/dev/null", "--state-dir", d.state, "--log-level", "debug",
		"--api", fmt.Sprintf("127.0.0.1:%d", api), "--stream", fmt.Sprintf("127.0.0.1:%d-%d", stream[0], stream[1]))
	d.cmd.Stdout, d.cmd.Stderr = logf, logf
	if err := d.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { d.exited <- d.cmd.Wait() }()
	t.Cleanup(func() { d.cmd.Process.Kill() })
	var health struct{ Pid int }
	waitUntil(t, "daemon healthy", 20*time.Second, func() bool { return getJSONAt(d.url("/healthz"), &health) == 200 })
	return d
}

func (d *loggedDaemon) url(p string) string { return fmt.Sprintf("http://127.0.0.1:%d%s", d.api, p) }

func (d *loggedDaemon) logText() string { b, _ := os.ReadFile(d.log); return string(b) }

// pid is the pid /healthz reports (0 if it does not answer).
func (d *loggedDaemon) pid() int {
	var health struct{ Pid int }
	if getJSONAt(d.url("/healthz"), &health) != 200 {
		return 0
	}
	return health.Pid
}

// post replays part of the sample match through the watcher.
func (d *loggedDaemon) post(t *testing.T, dir, name string, part []string) {
	t.Helper()
	run(t, 0, "watcher", "--api", d.url(""), "--token", stateToken(t, d.state), "--speed", "0", "-q", "--match", sampleID,
		writeFile(t, dir, name, part))
}

// kickOff starts the sample match and connects n watchers (v1 and v3 in turn), all subscribed.
func (d *loggedDaemon) kickOff(t *testing.T, dir string, n int) (lines []string, v3 [][]byte, w *watchers) {
	t.Helper()
	lines, v3 = sampleLines(t)
	d.post(t, dir, "start.jsonl", lines[:1])
	w = &watchers{}
	for i := range n {
		w.connect(t, d.stream[i%2], i%2 == 1, i)
	}
	waitUntil(t, fmt.Sprintf("%d subscribers", n), 30*time.Second, func() bool { return subscribersAt(d.url("/matches")) == n })
	return lines, v3, w
}

// Outside systemd, SIGUSR2 starts a successor which takes the listeners and every client: the old
// process exits, the clients notice nothing, and posts go on through the successor.
func TestHandoverOnSIGUSR2(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	d := startLoggedDaemon(t, binary, dir)
	if got := d.pid(); got != d.cmd.Process.Pid {
		t.Fatalf("/healthz pid %d, want %d", got, d.cmd.Process.Pid)
	}
	lines, v3, w := d.kickOff(t, dir, 200)
	d.post(t, dir, "part1.jsonl", lines[1:20])
	// One client is in the middle of its connect line at the hand-over.
	half := dial(t, d.stream[0], "VERSION:3:CONNECT:slow:MA", true)

	d.cmd.Process.Signal(syscall.SIGUSR2)
	select {
	case err := <-d.exited:
		if err != nil {
			t.Fatalf("old process: %v\n%s", err, d.logText())
		}
	case <-time.After(90 * time.Second):
		t.Fatalf("old process still running after SIGUSR2:\n%s", d.logText())
	}
	var successor int
	waitUntil(t, "successor healthy", 20*time.Second, func() bool {
		successor = d.pid()
		return successor != 0 && successor != d.cmd.Process.Pid
	})
	t.Cleanup(func() { syscall.Kill(successor, syscall.SIGKILL) })
	if !strings.Contains(d.logText(), "hand-over: the successor serves now") {
		t.Fatalf("no hand-over in the log:\n%s", d.logText())
	}
	half.Conn.Write([]byte("TCH:" + sampleID + ":FROM:20\r\n"))
	d.post(t, dir, "part2.jsonl", lines[20:])
	w.check(t, v3)
	if got, want := half.Wait(t), bytes.Join(v3[20:], nil); !bytes.Equal(got, want) {
		t.Fatalf("the client that was mid-handshake got\n%s\nwant\n%s", got, want)
	}
	syscall.Kill(successor, syscall.SIGTERM)
}

// A successor that fails (here the binary at the daemon's path was replaced by one that exits 1)
// leaves the old process serving: it takes its store and clients back, keeps streaming to them,
// and accepts new ones.
func TestHandoverFailureKeepsServing(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	exe := filepath.Join(dir, "matchstream")
	b, err := os.ReadFile(binary)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(exe, b, 0o755); err != nil {
		t.Fatal(err)
	}
	d := startLoggedDaemon(t, exe, dir)
	lines, v3, w := d.kickOff(t, dir, 50)

	// The upgrade goes wrong: the new binary cannot start.
	broken := filepath.Join(dir, "broken")
	if err := os.WriteFile(broken, []byte("#!/bin/sh\necho broken build >&2\nexit 1\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(broken, exe); err != nil {
		t.Fatal(err)
	}
	d.cmd.Process.Signal(syscall.SIGUSR2)
	waitUntil(t, "the failed hand-over logged", 90*time.Second, func() bool {
		return strings.Contains(d.logText(), "hand-over failed: this process goes on serving")
	})
	if got := d.pid(); got != d.cmd.Process.Pid {
		t.Fatalf("after the failed hand-over /healthz answers pid %d, want %d:\n%s", got, d.cmd.Process.Pid, d.logText())
	}
	if n := daemontest.FetchMetrics(t, d.url("/metrics"))["matchstream_handover_failures_total"]; n != 1 {
		t.Errorf("matchstream_handover_failures_total = %v after one failed hand-over, want 1", n)
	}
	for i := range 10 { // new clients are accepted again
		w.connect(t, d.stream[i%2], true, 50+i)
	}
	waitUntil(t, "60 subscribers", 30*time.Second, func() bool { return subscribersAt(d.url("/matches")) == 60 })
	d.post(t, dir, "rest.jsonl", lines[1:]) // the store is writable again
	w.check(t, v3)
}

func stateToken(t *testing.T, stateDir string) string {
	t.Helper()
	var tok []byte
	waitUntil(t, "watcher token", 20*time.Second, func() bool {
		b, err := os.ReadFile(filepath.Join(stateDir, "watcher.token"))
		tok = b
		return err == nil && len(bytes.TrimSpace(b)) > 0
	})
	return string(bytes.TrimSpace(tok))
}

func getJSONAt(url string, v any) int {
	resp, err := (&http.Client{Timeout: 5 * time.Second}).Get(url)
	if err != nil {
		return 0
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		return 0
	}
	return resp.StatusCode
}

// subscribersAt is the number of subscribers of the sample match per GET /matches at url.
func subscribersAt(url string) int {
	var ms []struct {
		ID          string `json:"id"`
		Subscribers int    `json:"subscribers"`
	}
	if getJSONAt(url, &ms) != 200 {
		return -1
	}
	for _, m := range ms {
		if m.ID == sampleID {
			return m.Subscribers
		}
	}
	return -1
}
