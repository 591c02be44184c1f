package stream

import (
	"bufio"
	"context"
	"log/slog"
	"os"
	"runtime"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"matchstream/daemon/hub"
	"matchstream/daemon/match"
	"matchstream/daemon/store"
)

// countAccept counts the "accept" warnings (an accept that failed) it is given.
type countAccept struct{ n *atomic.Int64 }

func (h countAccept) Enabled(context.Context, slog.Level) bool { return true }
func (h countAccept) Handle(_ context.Context, r slog.Record) error {
	if r.Message == "accept" {
		h.n.Add(1)
	}
	return nil
}
func (h countAccept) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h countAccept) WithGroup(string) slog.Handler      { return h }

// Out of file descriptors, the daemon backs off from accepting (the listener stays readable, and
// a poller that retried at once would spin on EMFILE), goes on serving its clients, and accepts
// again once descriptors are free.
func TestAcceptBacksOffOutOfDescriptors(t *testing.T) {
	failures := new(atomic.Int64)
	_, reg, port := testServerLog(t, Config{}, hub.Config{QueueLimit: 64, WriteTimeout: time.Second},
		func(s store.Store) store.Store { return s }, slog.New(countAccept{failures}))
	at := liveMatch(t, reg)
	a := dialLine(t, port, "VERSION:3:CONNECT:a:MATCH:"+liveID+"\n")
	ra := bufio.NewReader(a)
	if line, err := ra.ReadString('\n'); err != nil || !strings.Contains(line, `"seq":1`) {
		t.Fatalf("first client: %q, %v", line, err)
	}

	// Leave this process one free descriptor: the client's socket takes it, the accept has none.
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatal(err)
	}
	open, _ := os.ReadDir("/proc/self/fd")
	low := lim
	low.Cur = uint64(len(open) + 64)
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &low); err != nil {
		t.Fatal(err)
	}
	var fillers []int
	release := func() {
		for _, fd := range fillers {
			syscall.Close(fd)
		}
		fillers = nil
		syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim)
	}
	defer release()
	for {
		fd, err := syscall.Open("/dev/null", syscall.O_RDONLY|syscall.O_CLOEXEC, 0)
		if err != nil {
			break
		}
		fillers = append(fillers, fd)
	}
	syscall.Close(fillers[len(fillers)-1])
	fillers = fillers[:len(fillers)-1]
	b := dialLine(t, port, "VERSION:3:CONNECT:b:MATCH:"+liveID+"\n")
	waitCond(t, "an accept to fail", func() bool { return failures.Load() > 0 })

	// Meanwhile the first client is served, and the accept is retried rarely.
	if _, err := reg.Post(context.Background(), liveID, []match.Event{{At: at.Add(time.Minute), Kind: match.KindComment, Comment: "still here"}}); err != nil {
		t.Fatal(err)
	}
	if line, err := ra.ReadString('\n'); err != nil || !strings.Contains(line, "still here") {
		t.Fatalf("first client while out of descriptors: %q, %v", line, err)
	}
	time.Sleep(300 * time.Millisecond) // a span to count retries over, not a synchronisation
	if n := failures.Load(); n > 12 {
		t.Fatalf("%d failed accepts in 300 ms: the poller retries without backing off", n)
	}

	release()
	if line, err := bufio.NewReader(b).ReadString('\n'); err != nil || !strings.Contains(line, `"seq":2`) {
		t.Fatalf("client accepted once descriptors were free: %q, %v", line, err)
	}
}

// A StopAccepting that comes while a Serve starts leaves no listener in any poller: one left
// there, level-triggered and never accepted from again, would wake its poller for ever.
func TestStopAcceptingWhileServeStarts(t *testing.T) {
	s, _, port := testServer(t, Config{})
	s.StopAccepting() // the Serve of testServer
	for round := range 2000 {
		s.ResumeAccepting()
		served := make(chan error, 1)
		go func() { served <- s.Serve(port) }()
		// Stop at every point of Serve's start: the rounds wait from nothing to 40 µs.
		for t0 := time.Now(); time.Since(t0) < time.Duration(round%41)*time.Microsecond; {
			runtime.Gosched()
		}
		s.StopAccepting()
		if err := <-served; err != nil {
			t.Fatal(err)
		}
		for i, pl := range s.pollers {
			pl.mu.RLock()
			n := len(pl.listeners)
			pl.mu.RUnlock()
			if n != 0 {
				t.Fatalf("round %d: poller %d still watches %d listeners after StopAccepting", round, i, n)
			}
		}
	}
}
