package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"os/exec"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"matchstream/daemon/protocol"
	"matchstream/daemon/store/storetest"
)

// On the Redis store, a second node (another process, another state dir) takes over a match the
// first one served: it loads it from Redis, and a v3 client resuming with FROM misses nothing.
func TestRedisStoreTakeover(t *testing.T) {
	t.Parallel()
	url := storetest.RedisServer(t)
	dir := t.TempDir()
	lines, v3 := sampleLines(t)
	first := writeFile(t, dir, "first.jsonl", lines[:12])
	rest := writeFile(t, dir, "rest.jsonl", lines[12:])
	a := startDaemon(t, filepath.Join(dir, "a"), "--store", url, "--watcher-token", "tok")
	run(t, 0, "watcher", "--api", a.apiURL(), "--token", "tok", "--speed", "0", "-q", first)
	c := dial(t, a.stream[0], "VERSION:3:CONNECT:r:MATCH:"+sampleID+":FROM:0\r\n", true)
	waitUntil(t, "1 subscriber", 30*time.Second, func() bool { return a.subscribers(sampleID) == 1 })
	a.stop()
	got := bytes.TrimSuffix(c.Wait(t), protocol.ShutdownNotice().V3)

	b := startDaemon(t, filepath.Join(dir, "b"), "--store", url, "--watcher-token", "tok")
	c2 := dial(t, b.stream[0], "VERSION:3:CONNECT:r:MATCH:"+sampleID+":FROM:12\r\n", true)
	waitUntil(t, "1 subscriber", 30*time.Second, func() bool { return b.subscribers(sampleID) == 1 })
	run(t, 0, "watcher", "--api", b.apiURL(), "--token", "tok", "--speed", "0", "-q", "--match", sampleID, rest)
	if all, want := append(got, c2.Wait(t)...), bytes.Join(v3, nil); !bytes.Equal(all, want) {
		t.Fatalf("across the nodes got\n%s\nwant\n%s", all, want)
	}
}

// Three nodes on one Redis: the watcher posts to node 1 only; clients of nodes 2 and 3, v1 and v3,
// get the whole match in order, from the follow of the match's stream.
func TestThreeNodes(t *testing.T) {
	t.Parallel()
	url := storetest.RedisServer(t)
	dir := t.TempDir()
	lines, v3 := sampleLines(t)
	nodes := make([]*daemonProc, 3)
	for i := range nodes {
		nodes[i] = startDaemon(t, filepath.Join(dir, fmt.Sprint(i)), "--store", url, "--watcher-token", "tok")
	}
	run(t, 0, "watcher", "--api", nodes[0].apiURL(), "--token", "tok", "--speed", "0", "-q", writeFile(t, dir, "start.jsonl", lines[:1]))
	var v1s, v3s []*rawClient
	for _, n := range nodes[1:] {
		waitUntil(t, "the match known on every node", 20*time.Second, func() bool { return n.subscribers(sampleID) == 0 })
		for i := range 5 {
			v1s = append(v1s, dial(t, n.stream[i%len(n.stream)], "VERSION:1:CONNECT:u:MATCH:"+sampleID+"\r\n", true))
			v3s = append(v3s, dial(t, n.stream[i%len(n.stream)], "VERSION:3:CONNECT:u:MATCH:"+sampleID+"\r\n", true))
		}
		waitUntil(t, "10 subscribers", 20*time.Second, func() bool { return n.subscribers(sampleID) == 10 })
	}
	run(t, 0, "watcher", "--api", nodes[0].apiURL(), "--token", "tok", "--speed", "0", "-q", "--match", sampleID,
		writeFile(t, dir, "rest.jsonl", lines[1:]))
	for i, c := range v1s {
		checkV1(t, fmt.Sprintf("v1 user %d on node %d", i, 2+i/5), c.Wait(t), "home_score: 0\n", 2)
	}
	for i, c := range v3s {
		checkV3(t, fmt.Sprintf("v3 user %d on node %d", i, 2+i/5), c.Wait(t), v3, 1, false)
	}
}

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

// With a shared store, /connect on any node answers with the least-loaded stream port of the
// whole cluster, so no load balancer is needed in front of the stream ports.
func TestConnectAcrossNodes(t *testing.T) {
	t.Parallel()
	url := storetest.RedisServer(t)
	dir := t.TempDir()
	lines, _ := sampleLines(t)
	a := startDaemon(t, filepath.Join(dir, "a"), "--store", url, "--watcher-token", "tok", "--node-id", "a")
	b := startDaemon(t, filepath.Join(dir, "b"), "--store", url, "--watcher-token", "tok", "--node-id", "b")
	run(t, 0, "watcher", "--api", a.apiURL(), "--token", "tok", "--speed", "0", "-q", writeFile(t, dir, "s.jsonl", lines[:1]))
	for i := range 8 {
		dial(t, a.stream[i%len(a.stream)], "VERSION:3:CONNECT:u:MATCH:"+sampleID+"\r\n", true)
	}
	waitUntil(t, "8 subscribers on A", 20*time.Second, func() bool { return a.subscribers(sampleID) == 8 })
	var c struct {
		Host string `json:"host"`
		Port int    `json:"port"`
	}
	waitUntil(t, "A's /connect to send clients to the idle node B", 20*time.Second, func() bool {
		a.getJSON("/connect?match="+sampleID, &c)
		return c.Host == "127.0.0.1" && slices.Contains(b.stream, c.Port)
	})
	b.stop() // gone from the cluster view at once, not only when its announcement expires
	waitUntil(t, "A's /connect back to its own ports", 20*time.Second, func() bool {
		a.getJSON("/connect?match="+sampleID, &c)
		return slices.Contains(a.stream, c.Port)
	})
}
