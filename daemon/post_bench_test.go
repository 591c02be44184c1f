package daemon

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"matchstream/daemon/daemontest"
	"matchstream/daemon/store/storetest"
)

// BenchmarkPostRedis is a POST of one event, end to end (HTTP, validation, the Redis append,
// the broadcast), on a Redis with one replica: with WAIT (acknowledged means replicated) and
// without. p50 and p99 are reported beside ns/op.
func BenchmarkPostRedis(b *testing.B) {
	primary := storetest.StartRedis(b)
	storetest.StartReplica(b, primary)
	for _, min := range []int{0, 1} {
		b.Run(fmt.Sprintf("min_replicas=%d", min), func(b *testing.B) {
			cfg := testConfig(b)
			cfg.Store, cfg.StoreMinReplicas, cfg.NodeID = primary.URL, min, fmt.Sprint("bench", min)
			s := benchServer(b, cfg)
			home := fmt.Sprintf("b%dn%x", min, time.Now().UnixNano()) // one match per run of the function
			id := home + "-tig-2011-09-10"
			post(b, s, id, strings.Replace(sampleStart(b), `"home": "elp"`, `"home": "`+home+`"`, 1))
			at := time.Date(2011, 9, 10, 21, 1, 0, 0, time.UTC)
			var ds []time.Duration
			b.ResetTimer()
			for i := range b.N {
				t0 := time.Now()
				post(b, s, id, fmt.Sprintf(`{"at":%q,"kind":"comment","comment":"c%d"}`, at.Add(time.Duration(i)*time.Millisecond).Format(time.RFC3339Nano), i))
				ds = append(ds, time.Since(t0))
			}
			b.StopTimer()
			slices.Sort(ds)
			b.ReportMetric(float64(ds[len(ds)/2].Microseconds()), "p50-µs")
			b.ReportMetric(float64(ds[len(ds)*99/100].Microseconds()), "p99-µs")
		})
	}
}

// BenchmarkFanOut is one event from the POST to the last of 5,000 v3 subscribers on real
// loopback sockets, on the default store (bolt, fsync): the whole path, for a CPU profile of
// where the time goes (docs/performance.md, "Where the time goes"). The clients read in this
// process; their share of the profile is under daemon.fanOutClient.
func BenchmarkFanOut(b *testing.B) {
	const clients = 5000
	s := benchServer(b, testConfig(b))
	id := daemontest.SampleID
	post(b, s, id, sampleStart(b))
	_, streams := s.Addrs()
	var lines atomic.Int64
	for i := range clients {
		c, err := net.Dial("tcp", streams[i%len(streams)].String())
		if err != nil {
			b.Fatal(err)
		}
		defer c.Close()
		fmt.Fprintf(c, "VERSION:3:CONNECT:b%d:MATCH:%s\r\n", i, id)
		go fanOutClient(c, &lines)
	}
	waitLines := func(n int64) {
		for deadline := time.Now().Add(30 * time.Second); lines.Load() < n; time.Sleep(100 * time.Microsecond) {
			if time.Now().After(deadline) {
				b.Fatalf("%d lines of %d after 30 s", lines.Load(), n)
			}
		}
	}
	waitLines(clients) // every status
	at := time.Date(2011, 9, 10, 21, 1, 0, 0, time.UTC)
	b.ResetTimer()
	for i := range b.N {
		post(b, s, id, fmt.Sprintf(`{"at":%q,"kind":"comment","comment":"c%d"}`, at.Add(time.Duration(i)*time.Millisecond).Format(time.RFC3339Nano), i))
		waitLines(int64(clients * (i + 2)))
	}
}

// fanOutClient counts the lines a benchmark subscriber reads.
func fanOutClient(c net.Conn, lines *atomic.Int64) {
	buf := make([]byte, 4096)
	for {
		n, err := c.Read(buf)
		lines.Add(int64(bytes.Count(buf[:n], []byte{'\n'})))
		if err != nil {
			return
		}
	}
}

// BenchmarkConnect is one client's connect, connect line and status line, the clients kept
// connected (run with -benchtime Nx, N under half the open-files limit): for a CPU profile of
// what a connect burst costs the daemon.
func BenchmarkConnect(b *testing.B) {
	s := benchServer(b, testConfig(b))
	id := daemontest.SampleID
	post(b, s, id, sampleStart(b))
	_, streams := s.Addrs()
	conns := make([]net.Conn, 0, b.N)
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	buf := make([]byte, 4096)
	b.ResetTimer()
	for i := range b.N {
		c, err := net.Dial("tcp", streams[i%len(streams)].String())
		if err != nil {
			b.Fatal(err)
		}
		conns = append(conns, c)
		fmt.Fprintf(c, "VERSION:3:CONNECT:b%d:MATCH:%s\r\n", i, id)
		if _, err := c.Read(buf); err != nil {
			b.Fatal(err)
		}
	}
}

// benchServer is a started Server for a benchmark, shut down when it ends.
func benchServer(b *testing.B, cfg Config) *Server {
	b.Helper()
	s, err := New(cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		b.Fatal(err)
	}
	if err := s.Start(b.Context()); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { s.Shutdown(context.Background()) })
	return s
}

// sampleStart is the sample match's start event.
func sampleStart(b *testing.B) string {
	b.Helper()
	raw, err := os.ReadFile(daemontest.SampleJSONL)
	if err != nil {
		b.Fatal(err)
	}
	start, _, _ := strings.Cut(string(raw), "\n")
	return start
}
