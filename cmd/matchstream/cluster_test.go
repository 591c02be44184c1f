package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"matchstream/daemon/store/storetest"
)

// Redis stops for a few seconds mid-match: no client is dropped, the watcher's posts get 503 and are
// retried, and once Redis is back every client has every event exactly once. Then node A is killed
// with -9: its v3 clients reconnect to node B with FROM and miss nothing.
func TestRedisOutageAndNodeKill(t *testing.T) {
	t.Parallel()
	rd := storetest.StartRedis(t)
	dir := t.TempDir()
	lines, v3 := sampleLines(t)
	a := startDaemon(t, filepath.Join(dir, "a"), "--store", rd.URL, "--watcher-token", "tok")
	b := startDaemon(t, filepath.Join(dir, "b"), "--store", rd.URL, "--watcher-token", "tok")
	post := func(d *daemonProc, from, to int, extra ...string) {
		t.Helper()
		args := append([]string{"watcher", "--api", d.apiURL(), "--token", "tok", "--speed", "0", "-q", "--match", sampleID}, extra...)
		run(t, 0, append(args, writeFile(t, t.TempDir(), "part.jsonl", lines[from:to]))...)
	}
	post(a, 0, 1)
	waitUntil(t, "node B knows the match", 20*time.Second, func() bool { return b.subscribers(sampleID) == 0 })
	var onA, onB1, onB3 []*rawClient
	for i := range 5 {
		onA = append(onA, dial(t, a.stream[i%len(a.stream)], "VERSION:3:CONNECT:a:MATCH:"+sampleID+":FROM:0\r\n", true))
		onB1 = append(onB1, dial(t, b.stream[i%len(b.stream)], "VERSION:1:CONNECT:b:MATCH:"+sampleID+"\r\n", true))
		onB3 = append(onB3, dial(t, b.stream[i%len(b.stream)], "VERSION:3:CONNECT:b:MATCH:"+sampleID+"\r\n", true))
	}
	waitUntil(t, "subscribers", 20*time.Second, func() bool { return a.subscribers(sampleID) == 5 && b.subscribers(sampleID) == 10 })
	post(a, 1, 10)

	rd.Stop()
	waitUntil(t, "healthz reporting the store down", 20*time.Second, func() bool {
		resp, err := http.Get(a.url("/healthz"))
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusServiceUnavailable
	})
	done := make(chan string, 1)
	go func() {
		out, err := exec.Command(binary, "watcher", "--api", a.apiURL(), "--token", "tok", "--speed", "0", "-q",
			"--match", sampleID, "--retry-for", "60s", writeFile(t, dir, "outage.jsonl", lines[10:20])).CombinedOutput()
		if err != nil {
			done <- fmt.Sprintf("%v: %s", err, out)
			return
		}
		done <- ""
	}()
	outage := time.NewTimer(3 * time.Second) // the length of the outage, not a synchronisation
	<-outage.C
	if a.subscribers(sampleID) != 5 || b.subscribers(sampleID) != 10 {
		t.Fatalf("clients dropped while Redis was down: %d on A, %d on B", a.subscribers(sampleID), b.subscribers(sampleID))
	}
	rd.Start()
	select {
	case msg := <-done:
		if msg != "" {
			t.Fatalf("watcher across the outage: %s", msg)
		}
	case <-time.After(90 * time.Second):
		t.Fatal("watcher did not finish after Redis came back")
	}

	a.kill()
	var resumed [][]byte
	for i, c := range onA {
		got := c.Wait(t)
		got = got[:bytes.LastIndexByte(got, '\n')+1] // complete lines only
		lines := bytes.Split(bytes.TrimSpace(got), []byte("\n"))
		var last struct {
			Seq int `json:"seq"`
		}
		json.Unmarshal(lines[len(lines)-1], &last)
		resumed = append(resumed, got)
		onA[i] = dial(t, b.stream[0], fmt.Sprintf("VERSION:3:CONNECT:a:MATCH:%s:FROM:%d\r\n", sampleID, last.Seq), true)
	}
	waitUntil(t, "A's clients on B", 20*time.Second, func() bool { return b.subscribers(sampleID) == 15 })
	post(b, 20, len(lines))
	for i, c := range onA {
		if all, want := append(resumed[i], c.Wait(t)...), bytes.Join(v3, nil); !bytes.Equal(all, want) {
			t.Fatalf("client of the killed node %d got\n%s\nwant\n%s", i, all, want)
		}
	}
	for i, c := range onB1 {
		checkV1(t, fmt.Sprintf("v1 user %d on B", i), c.Wait(t), "home_score: 0\n", 2)
	}
	for i, c := range onB3 {
		checkV3(t, fmt.Sprintf("v3 user %d on B", i), c.Wait(t), v3, 1, false)
	}
}
