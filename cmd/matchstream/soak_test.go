package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"matchstream/daemon/match"
)

// TestSoak runs only when MATCHSTREAM_SOAK is set to a duration (`make soak` sets one hour): matches
// start and end, clients join and leave, some read slowly, the watcher posts in bursts. At the end,
// with every client gone, the daemon's goroutines and heap must be back near where they started.
func TestSoak(t *testing.T) {
	dur, err := time.ParseDuration(os.Getenv("MATCHSTREAM_SOAK"))
	if err != nil || dur <= 0 {
		t.Skip("set MATCHSTREAM_SOAK=1h (make soak) to run the soak test")
	}
	// Finished matches leave memory 30 s after their last subscriber (10 minutes by default), so the
	// end of the soak can see the heap come back.
	d := startDaemon(t, filepath.Join(t.TempDir(), "state"), "--client-queue", "64", "--write-timeout", "5s",
		"--keep-ended", "30s", "--log-level", "warn")
	tok := d.token()
	postJSON := func(id string, evs []match.Event) {
		body, _ := json.Marshal(evs)
		req, _ := http.NewRequest("POST", d.url("/matches/"+id+"/events"), bytes.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+tok)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Error(err)
			return
		}
		resp.Body.Close()
		if resp.StatusCode != 201 {
			t.Errorf("post to %s: %s", id, resp.Status)
		}
	}
	gauge := func() (goroutines, heap float64) {
		m := d.metrics()
		return m["go_goroutines"], m["go_memstats_heap_inuse_bytes"]
	}
	g0, h0 := gauge()
	squad := []match.Player{{Number: 1, Name: "A"}, {Number: 2, Name: "B"}}
	deadline := time.Now().Add(dur)
	var wg sync.WaitGroup
	for n := 0; time.Now().Before(deadline); n++ {
		id := fmt.Sprintf("home-away-soak%d", n)
		at := time.Now().UTC()
		postJSON(id, []match.Event{{At: at, Kind: match.KindStart, Home: "home", Visit: "away", StartDate: "2026-11-23",
			HomePlayers: squad, VisitPlayers: squad}})
		// Clients join, some read slowly, some leave early.
		for i := range 200 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", d.stream[i%len(d.stream)]))
				if err != nil {
					return
				}
				defer c.Close()
				fmt.Fprintf(c, "VERSION:%d:CONNECT:u:MATCH:%s\r\n", 1+2*(i%2), id)
				buf := make([]byte, 512)
				stop := time.Now().Add(time.Duration(rand.IntN(20)) * time.Second)
				for time.Now().Before(stop) || i%10 != 0 {
					if i%7 == 0 {
						time.Sleep(200 * time.Millisecond) // a slow reader
					}
					c.SetReadDeadline(time.Now().Add(30 * time.Second))
					if _, err := c.Read(buf); err != nil {
						return
					}
				}
			}()
		}
		for b := range 5 { // bursts of comments
			evs := make([]match.Event, 50)
			for j := range evs {
				evs[j] = match.Event{At: at.Add(time.Duration(b*50+j+1) * time.Millisecond), Kind: match.KindComment, Comment: "burst"}
			}
			postJSON(id, evs)
			time.Sleep(time.Second)
		}
		postJSON(id, []match.Event{{At: at.Add(time.Hour), Kind: match.KindStop}})
	}
	wg.Wait()
	waitUntil(t, "every connection gone", time.Minute, func() bool {
		open := 0.0
		for k, v := range d.metrics() {
			if strings.HasPrefix(k, "matchstream_connections{") {
				open += v
			}
		}
		return open == 0
	})
	// The last matches leave memory within --keep-ended, and the heap shrinks at the next GC (the
	// runtime forces one every 2 minutes when idle).
	var g1, h1 float64
	settle := time.Now().Add(4 * time.Minute)
	for {
		if g1, h1 = gauge(); h1 <= h0+64e6 || time.Now().After(settle) {
			break
		}
		time.Sleep(time.Second)
	}
	t.Logf("goroutines %v -> %v, heap in use %.1f MB -> %.1f MB", g0, g1, h0/1e6, h1/1e6)
	if g1 > g0+5 {
		t.Errorf("goroutines grew from %v to %v", g0, g1)
	}
	if h1 > h0+64e6 {
		t.Errorf("heap in use grew from %.1f MB to %.1f MB", h0/1e6, h1/1e6)
	}
}
