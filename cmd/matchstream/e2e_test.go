package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"matchstream/daemon/daemontest"
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

// The same over TLS, against the real binary: the watcher posts over HTTPS (--ca), simulator
// users on the TLS stream port (client --tls --ca) and on a plain one watch the whole match; a
// watcher that does not trust the certificate is refused with the reason.
func TestEndToEndTLS(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	cert := daemontest.NewCert(t, 30*24*time.Hour)
	d := startDaemonCert(t, filepath.Join(dir, "state"), &cert, "--client-queue", "512")
	lines, _ := sampleLines(t)
	startFile := writeFile(t, dir, "start.jsonl", lines[:1])
	rest := writeFile(t, dir, "rest.jsonl", lines[1:])
	token := d.token()
	if out := run(t, 1, "watcher", "--api", d.apiURL(), "--token", token, "--speed", "0", "-q", startFile); !strings.Contains(out, "certificate") {
		t.Fatalf("a watcher without --ca: %s", out)
	}
	watcher := func(file string) {
		run(t, 0, "watcher", "--api", d.apiURL(), "--ca", cert.CertFile, "--token", token, "--speed", "0", "-q", "--match", sampleID, file)
	}
	watcher(startFile)
	sim := func(args ...string) chan []byte {
		ch := make(chan []byte, 1)
		cmd := exec.Command(binary, append([]string{"client", "--api", d.apiURL(), "--ca", cert.CertFile, "--timeout", "2m", "--match", sampleID}, args...)...)
		go func() {
			out, err := cmd.CombinedOutput()
			if err != nil {
				out = append(out, []byte(err.Error())...)
			}
			ch <- out
		}()
		return ch
	}
	overTLS := sim("-n", "20", "--protocol", "3", "--tls")
	plain := sim("-n", "5", "--protocol", "1")
	waitUntil(t, "25 subscribers", 60*time.Second, func() bool { return d.subscribers(sampleID) == 25 })
	watcher(rest)
	for name, ch := range map[string]chan []byte{"client --tls": overTLS, "client (plain)": plain} {
		if out := <-ch; !bytes.HasPrefix(out, []byte("ok: ")) {
			t.Errorf("%s: %s", name, out)
		}
	}
	var m map[string]float64
	resp, err := d.hc.Get(d.url("/metrics"))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	m = daemontest.Metrics(b)
	if m["matchstream_tls_handshakes_total"] != 20 {
		t.Errorf("%v TLS handshakes, want 20", m["matchstream_tls_handshakes_total"])
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
