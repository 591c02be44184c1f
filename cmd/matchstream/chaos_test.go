//go:build chaos

package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"matchstream/daemon/match"
	"matchstream/daemon/store/storetest"
)

// The fault-injection run (make chaos; not in CI): K daemons on a Redis with a replica and three
// sentinels; v3 clients that reconnect with FROM to any node when theirs goes away; a poster that
// posts numbered comments to any node, retrying and reading back as the watcher does; and, for
// MATCHSTREAM_CHAOS (default 1m), kill -9 of a random node or of the Redis primary, each brought
// back. Then the match is stopped and the checker prints clients, events, gaps, duplicates and
// acknowledged-but-lost events, all of which but the first two must be 0.
func TestChaos(t *testing.T) {
	length, _ := time.ParseDuration(os.Getenv("MATCHSTREAM_CHAOS"))
	if length <= 0 {
		length = time.Minute
	}
	const nodes, clients = 3, 60
	primary := storetest.StartRedis(t)
	replica := storetest.StartReplica(t, primary)
	var sentinels []string
	for range 3 {
		sentinels = append(sentinels, storetest.StartSentinel(t, primary, "mymaster", 2).Addr())
	}
	redisNodes := []*storetest.Redis{primary, replica}
	url := fmt.Sprintf("redis+sentinel://%s/0?master_name=mymaster&addr=%s&addr=%s", sentinels[0], sentinels[1], sentinels[2])
	dir := t.TempDir()
	var ds []*daemonProc
	for i := range nodes {
		ds = append(ds, startDaemon(t, filepath.Join(dir, fmt.Sprint(i)), "--store", url, "--watcher-token", "tok", "--node-id", fmt.Sprint(i)))
	}
	lines, _ := sampleLines(t)
	run(t, 0, "watcher", "--api", ds[0].apiURL(), "--token", "tok", "--speed", "0", "-q", writeFile(t, dir, "start.jsonl", lines[:1]))

	// A node keeps its ports across restarts: clients and the poster pick one without a lock.
	anyNode := func() *daemonProc { return ds[rand.IntN(len(ds))] }

	// Clients: every seq they see after their status, in order; a client whose node goes away
	// reconnects to another with FROM:<last seq>.
	type seen struct {
		seqs       []uint64
		reconnects int
	}
	results := make([]*seen, clients)
	var cwg sync.WaitGroup
	for i := range clients {
		results[i] = &seen{}
		cwg.Add(1)
		go func() {
			defer cwg.Done()
			r, last, deadline := results[i], uint64(0), time.Now().Add(length+3*time.Minute)
			for time.Now().Before(deadline) {
				d := anyNode()
				c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", d.stream[rand.IntN(len(d.stream))]), time.Second)
				if err != nil {
					time.Sleep(100 * time.Millisecond)
					continue
				}
				fmt.Fprintf(c, "VERSION:3:CONNECT:c%d:MATCH:%s:FROM:%d\n", i, sampleID, last)
				sc := bufio.NewScanner(c)
				ended := false
				for sc.Scan() {
					var f struct {
						Seq  uint64 `json:"seq"`
						Kind string `json:"kind"`
					}
					if json.Unmarshal(sc.Bytes(), &f) != nil || f.Seq == 0 || f.Kind == "status" {
						continue
					}
					r.seqs = append(r.seqs, f.Seq)
					last = max(last, f.Seq)
					ended = f.Kind == "stop"
				}
				c.Close()
				if ended {
					return
				}
				r.reconnects++
				time.Sleep(50 * time.Millisecond)
			}
		}()
	}

	// The poster: comment n, acknowledged as seq acked[n]; it retries under the same idempotency
	// key on a 503, a 504 and a lost answer alike, as the watcher does on a Redis store.
	acked := map[string]uint64{}
	post := func(ev match.Event) {
		body, _ := json.Marshal(ev)
		key := strings.ReplaceAll(ev.Comment, " ", "-") + "-" + string(ev.Kind)
		for attempt := 0; ; attempt++ {
			if attempt > 600 {
				t.Fatalf("post %s: no node took it in a minute", ev.Comment)
			}
			d := anyNode()
			req, _ := http.NewRequest("POST", d.url("/matches/"+sampleID+"/events"), bytes.NewReader(body))
			req.Header.Set("Authorization", "Bearer tok")
			req.Header.Set("Idempotency-Key", key)
			resp, err := (&http.Client{Timeout: 10 * time.Second}).Do(req)
			if err == nil {
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode == 201 {
					var res struct{ Seq uint64 }
					json.Unmarshal(b, &res)
					acked[ev.Comment] = res.Seq
					return
				}
				if resp.StatusCode != 503 && resp.StatusCode != 504 {
					t.Fatalf("post %s: %d %s", ev.Comment, resp.StatusCode, b)
				}
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	waitUntil(t, "every client subscribed", time.Minute, func() bool {
		n := 0
		for _, d := range ds {
			n += max(0, d.subscribers(sampleID))
		}
		return n == clients
	})

	stop := make(chan struct{})
	var posted atomic.Int64
	var pwg sync.WaitGroup
	pwg.Add(1)
	go func() {
		defer pwg.Done()
		at := time.Now().Add(-time.Hour)
		for n := 1; ; n++ {
			select {
			case <-stop:
				return
			default:
			}
			post(match.Event{At: at.Add(time.Duration(n) * time.Millisecond), Kind: match.KindComment, Comment: fmt.Sprintf("chaos %d", n)})
			posted.Add(1)
			time.Sleep(20 * time.Millisecond)
		}
	}()

	// The faults, one at a time, each repaired before the next.
	var faults []string
	end := time.Now().Add(length)
	for time.Now().Before(end) {
		time.Sleep(time.Duration(2000+rand.IntN(2000)) * time.Millisecond)
		if rand.IntN(3) == 0 {
			var p *storetest.Redis
			for _, r := range redisNodes {
				if r.Addr() == storetest.MasterAddr(t, sentinels[0], "mymaster") {
					p = r
				}
			}
			if p == nil {
				t.Fatal("the sentinel names no known primary")
			}
			p.Stop()
			faults = append(faults, "kill -9 the Redis primary")
			waitUntil(t, "the sentinels to promote a replica", time.Minute, func() bool {
				a := storetest.MasterAddr(t, sentinels[0], "mymaster")
				return a != "" && a != p.Addr()
			})
			before, deadline := posted.Load(), time.Now().Add(time.Minute)
			p.Restart() // back as a replica of the new primary: the appends can be confirmed again
			for posted.Load() == before {
				if time.Now().After(deadline) {
					for i, d := range ds {
						l := d.log.String()
						t.Logf("node %d log tail:\n%s", i, l[max(0, len(l)-3000):])
					}
					t.Fatalf("no post accepted within a minute of killing the primary %s", p.Addr())
				}
				time.Sleep(50 * time.Millisecond)
			}
		} else {
			i := rand.IntN(len(ds))
			ds[i].kill()
			faults = append(faults, fmt.Sprintf("kill -9 node %d", i))
			ds[i].start()
		}
	}
	close(stop)
	pwg.Wait()
	post(match.Event{At: time.Now().Add(-time.Minute), Kind: match.KindStop})
	cwg.Wait()

	// The checker.
	var stored []match.Record
	ds[0].getJSON("/matches/"+sampleID+"/events", &stored)
	final := uint64(len(stored))
	lost, dupStored := 0, 0
	bySeq, texts := map[uint64]string{}, map[string]int{}
	for _, r := range stored {
		bySeq[r.Seq] = r.Comment
		if r.Kind == match.KindComment {
			texts[r.Comment]++
		}
	}
	for text, seq := range acked {
		if bySeq[seq] != text {
			lost++
		}
	}
	for _, n := range texts {
		if n > 1 {
			dupStored += n - 1
		}
	}
	gaps, dups, reconnects := 0, 0, 0
	for _, r := range results {
		reconnects += r.reconnects
		want := uint64(1)
		for _, s := range r.seqs {
			switch {
			case s < want:
				dups++
			case s > want:
				gaps += int(s - want)
				want = s + 1
			default:
				want++
			}
		}
		if want != final+1 {
			gaps += int(final + 1 - want)
		}
	}
	counts := map[string]int{}
	for _, f := range faults {
		counts[f]++
	}
	t.Logf("faults over %s: %v", length, counts)
	t.Logf("| clients | reconnects | events stored | acknowledged | gaps | duplicates seen | duplicates stored | acknowledged but lost |")
	t.Logf("| %d | %d | %d | %d | %d | %d | %d | %d |", clients, reconnects, final, len(acked), gaps, dups, dupStored, lost)
	if gaps+dups+dupStored+lost > 0 {
		t.Fatal("the cluster lost, duplicated or skipped events")
	}
}
