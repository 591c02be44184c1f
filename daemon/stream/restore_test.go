package stream

import (
	"bufio"
	"context"
	"strings"
	"testing"
	"time"

	"matchstream/daemon/hub"
	"matchstream/daemon/match"
	"matchstream/daemon/store"
)

// stallingReads is a store whose Events calls wait until open is closed: a store that hangs while
// a match's history is read back.
type stallingReads struct {
	store.Store
	open    chan struct{}
	waiting chan struct{}
}

func (s *stallingReads) Events(ctx context.Context, id string, from uint64) ([]match.Record, error) {
	select {
	case s.waiting <- struct{}{}:
	default:
	}
	select {
	case <-s.open:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	return s.Store.Events(ctx, id, from)
}

// A client resuming a match whose history left memory waits for the store on a goroutine of its
// own: while that read hangs, every other client of every poller is answered at once, and the
// resuming client gets its events once the store answers. (Read on the poller, as before, it held
// every connection of that poller for up to 5 s.)
func TestResumeOfEvictedMatchDoesNotStallPollers(t *testing.T) {
	stall := &stallingReads{open: make(chan struct{}), waiting: make(chan struct{}, 1)}
	_, reg, port := testServerStore(t, Config{}, hub.Config{QueueLimit: 64, WriteTimeout: time.Second},
		func(s store.Store) store.Store { stall.Store = s; return stall })
	const id = "fla-flu-2011-09-11"
	at := time.Now().Add(-time.Hour)
	if _, err := reg.Post(context.Background(), id, []match.Event{startEvent(at), {At: at.Add(time.Minute), Kind: match.KindStop}}); err != nil {
		t.Fatal(err)
	}
	if n := reg.Evict(0, time.Now()); n != 1 {
		t.Fatalf("evicted %d", n)
	}

	resuming := dialLine(t, port, "VERSION:3:CONNECT:r:MATCH:"+id+":FROM:1\n")
	select {
	case <-stall.waiting:
	case <-time.After(5 * time.Second):
		t.Fatal("the resume never read the store")
	}
	// Round-robin puts these on every poller, the resuming client's among them.
	for i := range 8 {
		c := dialLine(t, port, "VERSION:1:CONNECT:b:MATCH:"+id+"\n")
		c.SetReadDeadline(time.Now().Add(2 * time.Second))
		line, err := bufio.NewReader(c).ReadString('\n')
		if err != nil || line == "" {
			t.Fatalf("client %d while the store hangs: %q, %v", i, line, err)
		}
	}
	close(stall.open)
	resuming.SetReadDeadline(time.Now().Add(5 * time.Second))
	r := bufio.NewReader(resuming)
	line, err := r.ReadString('\n')
	if err != nil || !strings.Contains(line, `"seq":2`) {
		t.Fatalf("resuming client got %q, %v; want the stop (seq 2)", line, err)
	}
	if rest, err := r.ReadString('\n'); err == nil {
		t.Fatalf("after the stop, more: %q", rest)
	}
}
