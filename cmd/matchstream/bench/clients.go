package bench

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"net"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// stampPrefix marks the send time inside a benchmark event's text: "bench t=<unix nanoseconds>".
// The same text reaches v3 JSON, v1 frames and the baseline servers' frames, so one parser serves all.
const stampPrefix = "bench t="

// stampOf finds the send time in a received line, or 0.
func stampOf(line []byte) int64 {
	i := bytes.Index(line, []byte(stampPrefix))
	if i < 0 {
		return 0
	}
	rest := line[i+len(stampPrefix):]
	j := 0
	for j < len(rest) && rest[j] >= '0' && rest[j] <= '9' {
		j++
	}
	n, _ := strconv.ParseInt(string(rest[:j]), 10, 64)
	return n
}

// fleet is N client connections reading until closed, recording each stamped event's latency.
type fleet struct {
	conns    []net.Conn
	connect  []time.Duration
	started  []time.Time    // when each client began to dial
	first    []atomic.Int64 // nanoseconds from the dial to the first bytes the server sent (the status)
	refused  atomic.Int64
	timedOut atomic.Int64
	otherErr atomic.Int64
	lat      [][]time.Duration // per client, per stamped event in arrival order
	received []atomic.Int64    // stamped events per client
	lastRecv []atomic.Int64    // unix nanos of each client's latest stamped event
	wg       sync.WaitGroup
	ready    []atomic.Bool // a ready marker arrived (MQTT subscriptions are asynchronous)
}

// readyMarker is published until every MQTT client has it: then all are subscribed.
const readyMarker = "bench ready\n"

// allReady waits up to d for every connected client to have seen the ready marker.
func (f *fleet) allReady(d time.Duration) bool {
	deadline := time.Now().Add(d)
	for i, c := range f.conns {
		for c != nil && !f.ready[i].Load() {
			if time.Now().After(deadline) {
				return false
			}
			time.Sleep(time.Millisecond)
		}
	}
	return true
}

// dialAll connects n clients to addrs (round-robin), at most c at once, sending line(i) on each;
// with tlsCfg, each does a TLS handshake first (part of its connect time).
func dialAll(ctx context.Context, n, c int, addrs []string, line func(i int) string, tlsCfg *tls.Config, progress func(done int)) *fleet {
	f := &fleet{conns: make([]net.Conn, n), connect: make([]time.Duration, n), started: make([]time.Time, n),
		first: make([]atomic.Int64, n), lat: make([][]time.Duration, n),
		received: make([]atomic.Int64, n), lastRecv: make([]atomic.Int64, n), ready: make([]atomic.Bool, n)}
	sem := make(chan struct{}, c)
	var wg sync.WaitGroup
	var done atomic.Int64
	for i := range n {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			d := net.Dialer{Timeout: 10 * time.Second}
			t0 := time.Now()
			f.started[i] = t0
			conn, err := d.DialContext(ctx, "tcp", addrs[i%len(addrs)])
			if err != nil {
				var ne net.Error
				switch {
				case errors.Is(err, syscall.ECONNREFUSED):
					f.refused.Add(1)
				case errors.As(err, &ne) && ne.Timeout():
					f.timedOut.Add(1)
				default:
					f.otherErr.Add(1)
				}
				return
			}
			if tlsCfg != nil {
				tc := tls.Client(conn, tlsCfg)
				hctx, cancel := context.WithTimeout(ctx, 10*time.Second)
				err := tc.HandshakeContext(hctx)
				cancel()
				if err != nil {
					if errors.Is(err, context.DeadlineExceeded) {
						f.timedOut.Add(1)
					} else {
						f.otherErr.Add(1)
					}
					conn.Close()
					return
				}
				conn = tc
			}
			f.connect[i] = time.Since(t0)
			if _, err := conn.Write([]byte(line(i))); err != nil {
				f.otherErr.Add(1)
				conn.Close()
				return
			}
			f.conns[i] = conn
			f.wg.Add(1)
			go f.read(i, conn)
			if p := done.Add(1); progress != nil {
				progress(int(p))
			}
		}()
		if ctx.Err() != nil {
			break
		}
	}
	wg.Wait()
	return f
}

func (f *fleet) read(i int, c net.Conn) {
	defer f.wg.Done()
	r := bufio.NewReaderSize(c, 4096)
	for {
		line, err := r.ReadSlice('\n')
		if len(line) > 0 && f.first[i].Load() == 0 {
			f.first[i].Store(int64(time.Since(f.started[i])))
		}
		if bytes.HasSuffix(line, []byte(readyMarker)) {
			f.ready[i].Store(true)
		}
		if t := stampOf(line); t > 0 {
			now := time.Now().UnixNano()
			f.lat[i] = append(f.lat[i], time.Duration(now-t))
			f.lastRecv[i].Store(now)
			f.received[i].Add(1)
		}
		if err != nil && err != bufio.ErrBufferFull {
			return
		}
	}
}

// connected is the number of clients that connected.
func (f *fleet) connected() int {
	n := 0
	for _, c := range f.conns {
		if c != nil {
			n++
		}
	}
	return n
}

// waitReceived waits until every connected client has k stamped events, or the timeout.
func (f *fleet) waitReceived(k int64, timeout time.Duration) bool {
	deadline := time.Now().Add(timeout)
	for i, c := range f.conns {
		if c == nil {
			continue
		}
		for f.received[i].Load() < k {
			if time.Now().After(deadline) {
				return false
			}
			time.Sleep(time.Millisecond)
		}
	}
	return true
}

// lastArrival is the latest arrival of the k-th stamped event over all clients.
func (f *fleet) lastArrival() time.Time {
	var last int64
	for i := range f.lastRecv {
		last = max(last, f.lastRecv[i].Load())
	}
	return time.Unix(0, last)
}

func (f *fleet) close() {
	for _, c := range f.conns {
		if c != nil {
			c.Close()
		}
	}
	f.wg.Wait()
}

func (f *fleet) latencies() []time.Duration {
	var all []time.Duration
	for _, l := range f.lat {
		all = append(all, l...)
	}
	return all
}

func numCPU() int { return runtime.NumCPU() }
