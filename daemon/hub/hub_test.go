package hub_test

import (
	"bytes"
	"fmt"
	"io"
	"log/slog"
	"runtime"
	"sync"
	"testing"
	"time"

	"matchstream/daemon/hub"
)

// memConn records what the hub writes; if gate is set, writes block until it is closed.
type memConn struct {
	mu     sync.Mutex
	buf    bytes.Buffer
	closed bool
	gate   chan struct{}
	done   chan struct{}
}

func newConn() *memConn { return &memConn{done: make(chan struct{})} }

func (c *memConn) Write(p []byte) (int, error) {
	if c.gate != nil {
		select {
		case <-c.gate:
		case <-c.done:
			return 0, io.ErrClosedPipe
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return 0, io.ErrClosedPipe
	}
	return c.buf.Write(p)
}

func (c *memConn) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.closed {
		c.closed = true
		close(c.done)
	}
	return nil
}

func (c *memConn) String() string { c.mu.Lock(); defer c.mu.Unlock(); return c.buf.String() }

func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func frames(v1, v3 string) func(int, int) []byte {
	return func(version, _ int) []byte {
		if version == 3 {
			return []byte(v3)
		}
		return []byte(v1)
	}
}

func TestBroadcastOrderAndVersions(t *testing.T) {
	h := hub.New(hub.Config{QueueLimit: 1000}, quiet(), nil)
	c1, c3 := newConn(), newConn()
	h.Subscribe(c1, 1, [][]byte{[]byte("S1|")}, false)
	h.Subscribe(c3, 3, [][]byte{[]byte("S3|")}, false)
	var want1, want3 string
	for i := range 100 {
		h.Broadcast(time.Now(), 1, frames(fmt.Sprintf("a%d|", i), fmt.Sprintf("b%d|", i)), i == 99)
		want1 += fmt.Sprintf("a%d|", i)
		want3 += fmt.Sprintf("b%d|", i)
	}
	waitFor(t, "both closed after the last frame", func() bool {
		c1.mu.Lock()
		c3.mu.Lock()
		defer c1.mu.Unlock()
		defer c3.mu.Unlock()
		return c1.closed && c3.closed
	})
	if got := c1.String(); got != "S1|"+want1 {
		t.Errorf("v1 got %q", got)
	}
	if got := c3.String(); got != "S3|"+want3 {
		t.Errorf("v3 got %q", got)
	}
	if h.Len() != 0 {
		t.Errorf("%d subscribers after the last frame", h.Len())
	}
	// A hub whose match ended takes no subscriber: it gets its first frames and is closed.
	late := newConn()
	h.Subscribe(late, 1, [][]byte{[]byte("status")}, false)
	waitFor(t, "late subscriber closed", func() bool { late.mu.Lock(); defer late.mu.Unlock(); return late.closed })
	if late.String() != "status" {
		t.Errorf("late subscriber got %q", late.String())
	}
}

func TestSlowConsumerIsCutOthersUnaffected(t *testing.T) {
	var stats hub.Stats
	h := hub.New(hub.Config{QueueLimit: 4}, quiet(), &stats)
	stalled := newConn()
	stalled.gate = make(chan struct{}) // never opened: the client never reads
	h.Subscribe(stalled, 1, nil, false)
	fast := make([]*memConn, 50)
	for i := range fast {
		fast[i] = newConn()
		h.Subscribe(fast[i], 3, nil, false)
	}
	// Events arrive at the pace of posts: each is written to the fast clients before the next.
	var sofar string
	for i := range 20 {
		h.Broadcast(time.Now(), 1, frames("x", fmt.Sprintf("%02d", i)), false)
		sofar += fmt.Sprintf("%02d", i)
		for _, c := range fast {
			waitFor(t, "fast client keeps up", func() bool { return c.String() == sofar })
		}
	}
	if got := stats.SlowDropped.Load(); got != 1 {
		t.Fatalf("%d clients cut, want only the stalled one", got)
	}
	stalled.mu.Lock()
	if !stalled.closed {
		t.Error("stalled connection not closed")
	}
	stalled.mu.Unlock()
	var want string
	for i := range 20 {
		want += fmt.Sprintf("%02d", i)
	}
	for _, c := range fast {
		if c.String() != want {
			t.Fatalf("fast client got %q", c.String())
		}
	}
	if h.Len() != 50 {
		t.Errorf("%d subscribers, want 50", h.Len())
	}
}

func TestWriteTimeoutCuts(t *testing.T) {
	var stats hub.Stats
	h := hub.New(hub.Config{QueueLimit: 100, WriteTimeout: 20 * time.Millisecond}, quiet(), &stats)
	c := &deadlineConn{memConn: newConn()}
	c.gate = make(chan struct{})
	h.Subscribe(c, 1, [][]byte{[]byte("status")}, false)
	waitFor(t, "cut on write timeout", func() bool { return stats.SlowDropped.Load() == 1 && h.Len() == 0 })
}

// deadlineConn fails a blocked write once its deadline passes, as a net.Conn does.
type deadlineConn struct {
	*memConn
	mu       sync.Mutex
	deadline time.Time
}

type timeoutErr struct{}

func (timeoutErr) Error() string   { return "i/o timeout" }
func (timeoutErr) Timeout() bool   { return true }
func (timeoutErr) Temporary() bool { return true }

func (c *deadlineConn) SetWriteDeadline(t time.Time) error {
	c.mu.Lock()
	c.deadline = t
	c.mu.Unlock()
	return nil
}

func (c *deadlineConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	d := time.Until(c.deadline)
	c.mu.Unlock()
	select {
	case <-c.gate:
		return c.memConn.Write(p)
	case <-time.After(d):
		return 0, timeoutErr{}
	}
}

func TestLeaveAndClose(t *testing.T) {
	var stats hub.Stats
	h := hub.New(hub.Config{QueueLimit: 8}, quiet(), &stats)
	conns := make([]*memConn, 1000)
	subs := make([]*hub.Subscriber, len(conns))
	for i := range conns {
		conns[i] = newConn()
		subs[i] = h.Subscribe(conns[i], 1, nil, false)
	}
	for i := 0; i < len(subs); i += 2 {
		subs[i].Leave()
		subs[i].Leave() // twice is harmless
	}
	if h.Len() != 500 || stats.Subscribers.Load() != 500 {
		t.Fatalf("after leaving: Len %d, gauge %d; want 500", h.Len(), stats.Subscribers.Load())
	}
	h.Close()
	if h.Len() != 0 || stats.Subscribers.Load() != 0 {
		t.Fatalf("after Close: Len %d, gauge %d", h.Len(), stats.Subscribers.Load())
	}
	for i, c := range conns {
		if !c.closed {
			t.Fatalf("conn %d open after Close", i)
		}
	}
}

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }
func (discard) Close() error                { return nil }

// BenchmarkBroadcast: one event to N subscribers, until every subscriber has written it.
func BenchmarkBroadcast(b *testing.B) {
	for _, n := range []int{1, 100, 10_000} {
		b.Run(fmt.Sprintf("subscribers=%d", n), func(b *testing.B) {
			var stats hub.Stats
			h := hub.New(hub.Config{QueueLimit: 1 << 16}, quiet(), &stats)
			for i := 0; i < n; i++ {
				h.Subscribe(discard{}, 1+2*(i%2), nil, false)
			}
			f := frames("2011-09-10 21:00:53: goal:\n\tplayer: Luna (7) \n\tteam: <<\"tig\">>\n\r\n", `{"match":"elp-tig-2011-09-10","seq":2,"kind":"goal"}`+"\n")
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				h.Broadcast(time.Now(), 1, f, false)
				want := int64(n) * int64(i+1)
				for stats.Deliveries.Load() < want {
					// spin: the benchmark measures until the last subscriber has its frame
				}
			}
			b.ReportMetric(float64(n)*float64(b.N)/b.Elapsed().Seconds(), "deliveries/s")
		})
	}
}

func BenchmarkSubscribeLeave(b *testing.B) {
	h := hub.New(hub.Config{QueueLimit: 64}, quiet(), nil)
	for i := 0; i < 20_000; i++ {
		h.Subscribe(discard{}, 1, nil, false)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		h.Subscribe(discard{}, 1, nil, false).Leave()
	}
}

// A batch larger than the queue limit, posted at once, does not cut a client that keeps up.
func TestLargeBatchDoesNotCut(t *testing.T) {
	var stats hub.Stats
	h := hub.New(hub.Config{QueueLimit: 4}, quiet(), &stats)
	c := newConn()
	h.Subscribe(c, 3, nil, false)
	h.Broadcast(time.Now(), 100, func(_, i int) []byte { return []byte{byte('0' + i%10)} }, true)
	waitFor(t, "batch written and closed", func() bool { c.mu.Lock(); defer c.mu.Unlock(); return c.closed })
	if len(c.String()) != 100 || stats.SlowDropped.Load() != 0 {
		t.Fatalf("got %d bytes, %d cut", len(c.String()), stats.SlowDropped.Load())
	}
}

// tryConn takes at most room bytes per TryWritev (as a socket with little buffer space would), and
// the rest through the flush goroutine's blocking Write.
type tryConn struct {
	*memConn
	room int
}

func (c *tryConn) TryWritev(bufs [][]byte) (int, error) {
	var b []byte
	for _, x := range bufs {
		b = append(b, x...)
	}
	n := min(c.room, len(b))
	_, err := c.memConn.Write(b[:n])
	return n, err
}

// Direct writes from the broadcaster, split over workers, with partial writes finished by flush
// goroutines: every subscriber gets every byte in order, and shared frames are never modified.
func TestDirectWritesAcrossWorkers(t *testing.T) {
	h := hub.New(hub.Config{QueueLimit: 1000}, quiet(), nil)
	conns := make([]*tryConn, 1000)
	for i := range conns {
		conns[i] = &tryConn{memConn: newConn(), room: []int{0, 3, 1 << 20}[i%3]}
		h.Subscribe(conns[i], 1+2*(i%2), [][]byte{[]byte("S|")}, false)
	}
	frame1, frame3 := []byte("event-one|"), []byte("event-three|")
	var want1, want3 string
	for i := range 5 {
		h.Broadcast(time.Now(), 2, func(v, j int) []byte {
			if v == 3 {
				return frame3
			}
			return frame1
		}, i == 4)
		want1 += "event-one|event-one|"
		want3 += "event-three|event-three|"
	}
	for i, c := range conns {
		waitFor(t, "closed after the last batch", func() bool { c.mu.Lock(); defer c.mu.Unlock(); return c.closed })
		want := "S|" + want1
		if i%2 == 1 {
			want = "S|" + want3
		}
		if got := c.String(); got != want {
			t.Fatalf("conn %d (room %d) got %q, want %q", i, c.room, got, want)
		}
	}
	if string(frame1) != "event-one|" || string(frame3) != "event-three|" {
		t.Fatal("a shared frame was modified")
	}
}

// tryDiscard takes every write at once, as a socket with room does: the broadcaster's direct path.
type tryDiscard struct{ discard }

func (tryDiscard) TryWritev(bufs [][]byte) (int, error) {
	n := 0
	for _, b := range bufs {
		n += len(b)
	}
	return n, nil
}

// BenchmarkBroadcastDirect: the epoll layer's path — written by the broadcaster, split over cores.
func BenchmarkBroadcastDirect(b *testing.B) {
	for _, n := range []int{1, 100, 10_000} {
		b.Run(fmt.Sprintf("subscribers=%d", n), func(b *testing.B) {
			h := hub.New(hub.Config{QueueLimit: 64}, quiet(), nil)
			for i := 0; i < n; i++ {
				h.Subscribe(tryDiscard{}, 1+2*(i%2), nil, false)
			}
			f := frames("2011-09-10 21:00:53: goal:\n\tplayer: Luna (7) \n\tteam: <<\"tig\">>\n\r\n", `{"match":"elp-tig-2011-09-10","seq":2,"kind":"goal"}`+"\n")
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				h.Broadcast(time.Now(), 1, f, false)
				h.Drain() // until every subscriber has it: the broadcast itself only hands it out
			}
			b.ReportMetric(float64(n)*float64(b.N)/b.Elapsed().Seconds(), "deliveries/s")
		})
	}
}

// Heartbeats go to the subscribers of one version only; Detach takes an idle subscriber out
// without a byte written or the connection closed, and refuses one with frames still queued.
func TestHeartbeatAndDetach(t *testing.T) {
	st := new(hub.Stats)
	h := hub.New(hub.Config{QueueLimit: 8}, quiet(), st)
	sse, tcp := newConn(), newConn()
	s1 := h.Subscribe(sse, 4, nil, false)
	h.Subscribe(tcp, 3, nil, false)
	h.Heartbeat(4, []byte(": hb\n\n"))
	waitFor(t, "the heartbeat", func() bool { return sse.String() == ": hb\n\n" })
	if tcp.String() != "" {
		t.Fatalf("a v3 subscriber got the heartbeat: %q", tcp.String())
	}
	if st.ByVersion[4].Load() != 1 {
		t.Fatalf("SSE subscribers counted %d", st.ByVersion[4].Load())
	}
	waitFor(t, "idle", func() bool { return !s1.Busy() })
	if !s1.Detach() {
		t.Fatal("an idle subscriber was not detached")
	}
	if s1.Detach() || h.Len() != 1 {
		t.Fatalf("detached twice, or still in the hub (%d subscribers)", h.Len())
	}
	h.Broadcast(time.Now(), 1, frames("x\n", "y\n"), false)
	select {
	case <-sse.done:
		t.Fatal("a detached connection was closed")
	default:
	}
	if sse.String() != ": hb\n\n" {
		t.Fatalf("a detached connection was written to: %q", sse.String())
	}
}

// A broadcast returns before its writes are done: the post that caused it is answered without
// waiting for every subscriber's socket. Here the one socket's write is held; Broadcast returns
// anyway (before, it waited for the write), and Drain waits for it.
func TestBroadcastDoesNotWaitForWrites(t *testing.T) {
	h := hub.New(hub.Config{QueueLimit: 16}, quiet(), nil)
	c := &tryConn{memConn: newConn(), room: 1 << 20}
	c.gate = make(chan struct{})
	h.Subscribe(c, 1, nil, false)
	returned := make(chan struct{})
	go func() { h.Broadcast(time.Now(), 1, frames("e|", "e|"), false); close(returned) }()
	select {
	case <-returned:
	case <-time.After(5 * time.Second):
		t.Fatal("Broadcast waited for a write that is held")
	}
	if !h.Busy() {
		t.Fatal("a hub handing out a broadcast is not busy")
	}
	drained := make(chan struct{})
	go func() { h.Drain(); close(drained) }()
	select {
	case <-drained:
		t.Fatal("Drain returned while the write is still held")
	case <-time.After(20 * time.Millisecond):
	}
	close(c.gate)
	<-drained
	if got := c.String(); got != "e|" {
		t.Fatalf("got %q", got)
	}
}

// Subscribers joining between broadcasts that are still being handed out get exactly the events
// after the status they were sent, in order, once each: the joins and broadcasts are serialised by
// the caller (as the registry does under the match lock), the hand-out is not.
func TestJoinsBetweenPendingBroadcasts(t *testing.T) {
	h := hub.New(hub.Config{QueueLimit: 1 << 20}, quiet(), nil)
	var mu sync.Mutex // the match lock: a join and a broadcast never overlap
	sent := 0         // events broadcast so far, guarded by mu
	const n = 300
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := range n {
			mu.Lock()
			h.Broadcast(time.Now(), 1, func(int, int) []byte { return []byte(fmt.Sprintf("%d|", i)) }, i == n-1)
			sent++
			mu.Unlock()
			runtime.Gosched()
		}
	}()
	type joined struct {
		c    *tryConn
		from int
	}
	var subs []joined
	for j := 0; j < 500; j++ {
		mu.Lock()
		from := sent
		if from == n {
			mu.Unlock()
			break
		}
		c := &tryConn{memConn: newConn(), room: []int{1 << 20, 5}[j%2]} // 5: partial writes, flushes
		h.Subscribe(c, 1, [][]byte{[]byte(fmt.Sprintf("S%d|", from))}, false)
		mu.Unlock()
		subs = append(subs, joined{c, from})
		runtime.Gosched()
	}
	<-done
	if len(subs) == 0 {
		t.Fatal("no subscriber joined while the broadcasts went on")
	}
	for _, s := range subs {
		deadline := time.Now().Add(5 * time.Second)
		for s.c.mu.Lock(); !s.c.closed; s.c.mu.Lock() {
			s.c.mu.Unlock()
			if time.Now().After(deadline) {
				t.Fatalf("a subscriber that joined after %d events (room %d) is not closed; it got %q", s.from, s.c.room, s.c.String())
			}
			time.Sleep(time.Millisecond)
		}
		s.c.mu.Unlock()
		want := fmt.Sprintf("S%d|", s.from)
		for i := s.from; i < n; i++ {
			want += fmt.Sprintf("%d|", i)
		}
		if got := s.c.String(); got != want {
			t.Fatalf("a subscriber that joined after %d events got %q, want %q", s.from, got, want)
		}
	}
	t.Logf("%d subscribers joined during %d broadcasts", len(subs), n)
}

// Shared limits changed while a hub runs (a reload) apply to its next deliveries.
func TestLimitsChangeRunningHubs(t *testing.T) {
	var stats hub.Stats
	limits := hub.NewLimits(hub.Config{QueueLimit: 1000})
	h := hub.NewShared(limits, quiet(), &stats)
	stalled := newConn()
	stalled.gate = make(chan struct{}) // never reads
	h.Subscribe(stalled, 1, nil, false)
	for i := range 10 {
		h.Broadcast(time.Now(), 1, frames("x", fmt.Sprintf("%02d", i)), false)
	}
	h.Drain()
	if got := stats.SlowDropped.Load(); got != 0 {
		t.Fatalf("cut at a backlog of 10 with a limit of 1000")
	}
	limits.Set(hub.Config{QueueLimit: 4})
	// The stalled client's flush holds the frames it took when it started, blocked in its write;
	// each broadcast after that adds one to its queue, so a few more reach the new limit (and
	// 20 stay far below the old one).
	for i := range 20 {
		h.Broadcast(time.Now(), 1, frames("x", fmt.Sprintf("late%02d", i)), false)
		h.Drain()
		if stats.SlowDropped.Load() == 1 {
			return
		}
	}
	t.Fatalf("%d cut after the limit went down to 4 and 20 more broadcasts, want the stalled client", stats.SlowDropped.Load())
}
