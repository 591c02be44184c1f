package main

import (
	"fmt"
	"net"
	"net/http"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Under socket activation the daemon takes its sockets by name (the API fd is passed first here,
// before the stream fds), reports READY=1 and STOPPING=1 on NOTIFY_SOCKET, and serves clients.
// systemd-socket-activate plays systemd's part: it holds the sockets and passes LISTEN_FDS,
// LISTEN_FDNAMES and LISTEN_PID as PID 1 would.
func TestSocketActivation(t *testing.T) {
	t.Parallel()
	sa, err := exec.LookPath("systemd-socket-activate")
	if err != nil {
		t.Fatal("systemd-socket-activate is needed (Debian package systemd): ", err)
	}
	dir := t.TempDir()
	notifyPath := filepath.Join(dir, "notify")
	notify, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: notifyPath, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer notify.Close()
	msgs := make(chan string, 256)
	go func() {
		buf := make([]byte, 4096)
		for {
			n, err := notify.Read(buf)
			if err != nil {
				close(msgs)
				return
			}
			msgs <- string(buf[:n])
		}
	}()
	var seen []string // every message, in order
	expect := func(prefix string) string {
		t.Helper()
		deadline := time.After(20 * time.Second)
		for {
			select {
			case m, ok := <-msgs:
				if !ok {
					t.Fatalf("notify socket closed before %s", prefix)
				}
				seen = append(seen, m)
				if strings.HasPrefix(m, prefix) {
					return m
				}
			case <-deadline:
				t.Fatalf("no %s on NOTIFY_SOCKET", prefix)
			}
		}
	}

	api, stream := freePorts(t, 2)
	addr := func(p int) string { return fmt.Sprintf("127.0.0.1:%d", p) }
	// --api and --stream name other ports on purpose: with LISTEN_FDS the sockets come from the
	// activator and the configured addresses are not bound.
	cmd := exec.Command(sa, "-l", addr(api), "-l", addr(stream[0]), "-l", addr(stream[1]),
		"--fdname=api:stream:stream", "-E", "NOTIFY_SOCKET="+notifyPath, "-E", "WATCHDOG_USEC=400000",
		binary, "serve", "--config", "/dev/null", "--state-dir", filepath.Join(dir, "state"),
		"--api", "127.0.0.1:1", "--stream", "127.0.0.1:2-3")
	log := &syncBuffer{}
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var waitErr error
	exited := make(chan struct{})
	go func() { waitErr = cmd.Wait(); close(exited) }()
	t.Cleanup(func() { cmd.Process.Kill(); <-exited })

	// The first connection starts the daemon; it waits in the backlog until the daemon accepts.
	var code int
	waitUntil(t, "healthz through the activated API socket", 20*time.Second, func() bool {
		resp, err := http.Get("http://" + addr(api) + "/healthz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		code = resp.StatusCode
		return code == 200
	})
	ready := expect("READY=1")
	if !strings.Contains(ready, "\nSTATUS=0 connections on 2 ports, 0 live matches") {
		t.Errorf("READY=1 without the STATUS= line: %q", ready)
	}
	for _, m := range seen[:len(seen)-1] {
		t.Errorf("sent before READY=1: %q", m)
	}
	// The daemon logs "serving" before READY=1, but its stderr reaches log through a pipe and a
	// copying goroutine, which the datagram can overtake: wait for the line rather than look once.
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(log.String(), "socket_activated=true") {
		if time.Now().After(deadline) {
			t.Fatalf("daemon did not report socket activation:\n%s", log.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
	// It bound nothing itself: the configured addresses are not listening.
	for _, a := range []string{"127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3"} {
		if c, err := net.DialTimeout("tcp", a, time.Second); err == nil {
			c.Close()
			t.Errorf("%s is listening: the daemon bound a configured address despite socket activation", a)
		}
	}
	// The watchdog is pinged at half of WATCHDOG_USEC while the daemon is healthy, and STATUS= is
	// kept current.
	expect("WATCHDOG=1")
	expect("WATCHDOG=1")
	expect("STATUS=")
	d := &daemonProc{t: t, stateDir: filepath.Join(dir, "state"), apiPort: api, stream: stream, hc: http.DefaultClient}
	run(t, 0, "watcher", "--api", d.apiURL(), "--token", d.token(), "--speed", "0", "-q", sampleJSONL)
	for _, p := range stream {
		got := dial(t, p, "VERSION:3:CONNECT:me:MATCH:"+sampleID+"\r\n", true).Wait(t)
		if !strings.Contains(string(got), `"kind":"status"`) || !strings.Contains(string(got), `"seq":31`) {
			t.Fatalf("stream port %d: %s", p, got)
		}
	}
	cmd.Process.Signal(syscall.SIGTERM)
	expect("STOPPING=1")
	select {
	case <-exited:
		if waitErr != nil {
			t.Fatalf("daemon exit: %v\n%s", waitErr, log.String())
		}
	case <-time.After(20 * time.Second):
		t.Fatal("daemon did not exit on SIGTERM")
	}
}
