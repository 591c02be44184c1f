package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// A short bench against a spawned daemon and both baselines: every client gets every event, and
// the JSON and HTML reports carry every server's figures.
func TestBenchSpawn(t *testing.T) {
	t.Parallel()
	report := filepath.Join(t.TempDir(), "report.html")
	out := run(t, 0, "bench", "--spawn", "-n", "200", "-c", "100", "--events", "3", "--interval", "10ms",
		"--baseline", "floor,naive", "--json", "--report", report)
	var res struct {
		Runs []struct {
			Server       string  `json:"server"`
			Connected    int     `json:"connected"`
			Refused      int     `json:"refused"`
			AllDelivered bool    `json:"all_delivered"`
			LatencyP99   float64 `json:"latency_p99_ms"`
			RSSPerConn   float64 `json:"rss_per_connection_kb"`
		} `json:"runs"`
	}
	if err := json.Unmarshal([]byte(out), &res); err != nil {
		t.Fatalf("bench --json: %v\n%s", err, out)
	}
	if len(res.Runs) != 3 {
		t.Fatalf("want matchstream, floor and naive runs:\n%s", out)
	}
	for _, r := range res.Runs {
		// RSS per connection is a measurement, not asserted: at 200 clients it is within the GC's noise.
		if r.Connected != 200 || r.Refused != 0 || !r.AllDelivered || r.LatencyP99 <= 0 {
			t.Errorf("%s: %+v", r.Server, r)
		}
	}
	html, err := os.ReadFile(report)
	if err != nil || !strings.Contains(string(html), "<svg") || !strings.Contains(string(html), "naive") {
		t.Errorf("HTML report: %v", err)
	}
}

// Past --per-process clients, bench spreads them over worker processes and still sees every event.
func TestBenchWorkers(t *testing.T) {
	t.Parallel()
	out := run(t, 0, "bench", "--spawn", "-n", "250", "-c", "50", "--events", "2", "--interval", "10ms", "--per-process", "100", "--json")
	var res struct {
		Runs []struct {
			Connected    int  `json:"connected"`
			AllDelivered bool `json:"all_delivered"`
		} `json:"runs"`
	}
	if err := json.Unmarshal([]byte(out), &res); err != nil || len(res.Runs) != 1 || res.Runs[0].Connected != 250 || !res.Runs[0].AllDelivered {
		t.Fatalf("bench with workers: %v\n%s", err, out)
	}
}

// bench --transport tcp,sse measures TCP clients and then browsers' transport, Server-Sent Events,
// in one command; with workers, they speak SSE too.
func TestBenchSSE(t *testing.T) {
	t.Parallel()
	out := run(t, 0, "bench", "--spawn", "-n", "150", "-c", "50", "--events", "2", "--interval", "10ms",
		"--transport", "tcp,sse", "--per-process", "100", "--json")
	var res struct {
		Runs []struct {
			Server       string `json:"server"`
			Connected    int    `json:"connected"`
			AllDelivered bool   `json:"all_delivered"`
		} `json:"runs"`
	}
	if err := json.Unmarshal([]byte(out), &res); err != nil || len(res.Runs) != 2 {
		t.Fatalf("bench --transport tcp,sse: %v\n%s", err, out)
	}
	for i, want := range []string{"matchstream", "matchstream-sse"} {
		if r := res.Runs[i]; r.Server != want || r.Connected != 150 || !r.AllDelivered {
			t.Errorf("run %d: %+v, want %s with 150 clients all delivered", i, r, want)
		}
	}
	run(t, 2, "bench", "--spawn", "--transport", "websocket")
}

// top --once against a live daemon shows the match, its subscribers and the ports.
func TestTopOnce(t *testing.T) {
	t.Parallel()
	d := startDaemon(t, filepath.Join(t.TempDir(), "state"))
	run(t, 0, "watcher", "--api", d.apiURL(), "--token", d.token(), "--speed", "0", "-q", writeFile(t, t.TempDir(), "s.jsonl", mustLines(t)[:3]))
	c := dial(t, d.stream[0], "VERSION:1:CONNECT:me:MATCH:"+sampleID+"\r\n", true)
	waitUntil(t, "subscriber", 10*time.Second, func() bool { return d.subscribers(sampleID) == 1 })
	out := run(t, 0, "top", "--api", d.apiURL(), "--once", "--interval", "100ms")
	for _, w := range []string{"connections 1 (v1 1, V:2 0, v3 0, SSE 0)   long-polls 0", sampleID, "elp 0-1 tig", "LONGEST CLIENT QUEUES"} {
		if !strings.Contains(out, w) {
			t.Errorf("top --once lacks %q:\n%s", w, out)
		}
	}
	c.Conn.Close()
}

func mustLines(t *testing.T) []string {
	lines, _ := sampleLines(t)
	return lines
}
