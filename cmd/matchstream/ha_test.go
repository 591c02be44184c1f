//go:build ha

package main

import (
	"bytes"
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"matchstream/daemon/store/redis"
	"matchstream/daemon/store/storetest"
)

// The test of record for a Redis failover (make test-ha): a primary, a replica and three
// sentinels on loopback; two daemons on the sentinel URL; 500 v3 clients, spread over both; the
// sample match replayed by the watcher. Mid-match the primary is killed with -9; the sentinels
// promote the replica (the old primary comes back as its replica). Every event acknowledged with
// 201 is in the new primary with its seq, every client gets every event once, in order, and the
// watcher's retries during the failover are counted.
func TestFailoverLosesNothingAcknowledged(t *testing.T) {
	primary := storetest.StartRedis(t)
	storetest.StartReplica(t, primary)
	var sentinels []string
	for range 3 {
		sentinels = append(sentinels, storetest.StartSentinel(t, primary, "mymaster", 2).Addr())
	}
	url := fmt.Sprintf("redis+sentinel://%s/0?master_name=mymaster&addr=%s&addr=%s", sentinels[0], sentinels[1], sentinels[2])
	dir := t.TempDir()
	a := startDaemon(t, filepath.Join(dir, "a"), "--store", url, "--watcher-token", "tok", "--node-id", "a")
	b := startDaemon(t, filepath.Join(dir, "b"), "--store", url, "--watcher-token", "tok", "--node-id", "b")
	// Its stderr comes through a pipe: wait for the line rather than look once.
	waitUntil(t, "node A to wait for the replica (min_replicas=1 in its log)", 10*time.Second, func() bool {
		return strings.Contains(a.log.String(), "min_replicas=1")
	})
	lines, _ := sampleLines(t)
	run(t, 0, "watcher", "--api", a.apiURL(), "--token", "tok", "--speed", "0", "-q", writeFile(t, dir, "start.jsonl", lines[:1]))

	type result struct {
		out []byte
		err error
	}
	start := func(args ...string) chan result {
		ch := make(chan result, 1)
		cmd := exec.Command(binary, args...)
		go func() { out, err := cmd.CombinedOutput(); ch <- result{out, err} }()
		return ch
	}
	var clients []chan result
	for _, d := range []*daemonProc{a, b} {
		clients = append(clients, start("client", "--api", d.apiURL(), "--match", sampleID, "-n", "250", "-c", "50", "--protocol", "3", "--timeout", "3m"))
	}
	// /connect spreads them over both nodes, by load.
	waitUntil(t, "500 subscribers", time.Minute, func() bool { return a.subscribers(sampleID)+b.subscribers(sampleID) == 500 })
	t.Logf("subscribers: %d on A, %d on B", a.subscribers(sampleID), b.subscribers(sampleID))
	// 30 events over the match's 18 minutes at 80x: about 13 s.
	watcher := start("watcher", "--api", a.apiURL(), "--token", "tok", "--speed", "80", "-q", "--retry-for", "60s",
		"--match", sampleID, writeFile(t, dir, "rest.jsonl", lines[1:]))
	seq := func() int {
		var m struct {
			Seq int `json:"seq"`
		}
		a.getJSON("/matches/"+sampleID, &m)
		return m.Seq
	}
	waitUntil(t, "a third of the match", time.Minute, func() bool { return seq() >= 10 })
	atKill := seq()
	primary.Stop() // SIGKILL
	killed := time.Now()
	// Once the sentinels have promoted the replica, the old primary comes back as its replica:
	// until then the new primary has no replica, and nothing can be acknowledged.
	waitUntil(t, "the sentinels to promote the replica", time.Minute, func() bool {
		a := storetest.MasterAddr(t, sentinels[0], "mymaster")
		return a != "" && a != primary.Addr()
	})
	promoted := time.Since(killed)
	primary.Restart()
	waitUntil(t, "the first post after the kill", 90*time.Second, func() bool { return seq() > atKill })
	firstAfter := time.Since(killed)

	w := <-watcher
	if w.err != nil || !bytes.Contains(w.out, []byte("posted 30 events")) {
		t.Fatalf("watcher: %v\n%s", w.err, w.out)
	}
	for i, ch := range clients {
		r := <-ch
		if r.err != nil || !bytes.Contains(r.out, []byte("ok: 250 users watched "+sampleID+" to the end (protocol 3): 30 events each")) {
			t.Fatalf("clients of node %d: %v\n%s", i, r.err, r.out)
		}
	}
	// The new primary has every acknowledged event once, with its seq, in order.
	st, err := redis.Open(context.Background(), url)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	recs, err := st.Events(context.Background(), sampleID, 0)
	if err != nil || len(recs) != len(lines) {
		t.Fatalf("the new primary has %d events (%v), want %d", len(recs), err, len(lines))
	}
	for i, r := range recs {
		if r.Seq != uint64(i+1) {
			t.Fatalf("event %d has seq %d", i, r.Seq)
		}
	}
	retries := strings.Count(string(w.out), "retrying") + strings.Count(string(w.out), "read back")
	t.Logf("failover: killed at seq %d; replica promoted %s and first post accepted %s after the kill; watcher retries: %d",
		atKill, promoted.Round(10*time.Millisecond), firstAfter.Round(10*time.Millisecond), retries)
	for _, l := range strings.Split(string(w.out), "\n") {
		if strings.Contains(l, "retrying") || strings.Contains(l, "read back") {
			t.Log("  " + l)
		}
	}
}
