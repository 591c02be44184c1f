package live_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"matchstream/daemon/hub"
	"matchstream/daemon/live"
	"matchstream/daemon/match"
	"matchstream/daemon/store"
	"matchstream/daemon/store/bolt"
)

// gatedStore holds every Append and Events call for one match until its gate opens: a store that
// has stopped answering (a Redis failover, a disk that stalls).
type gatedStore struct {
	store.Store
	mu      sync.Mutex
	id      string
	gate    chan struct{}
	waiting chan struct{} // gets a value each time a call starts waiting at the gate
}

func (g *gatedStore) hold(id string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.id, g.gate, g.waiting = id, make(chan struct{}), make(chan struct{}, 16)
}

func (g *gatedStore) open() {
	g.mu.Lock()
	defer g.mu.Unlock()
	close(g.gate)
	g.id = ""
}

func (g *gatedStore) wait(ctx context.Context, id string) error {
	g.mu.Lock()
	gate, waiting := g.gate, g.waiting
	held := id == g.id
	g.mu.Unlock()
	if !held {
		return nil
	}
	waiting <- struct{}{}
	select {
	case <-gate:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (g *gatedStore) Append(ctx context.Context, id string, recs []match.Record) error {
	if err := g.wait(ctx, id); err != nil {
		return err
	}
	return g.Store.Append(ctx, id, recs)
}

func (g *gatedStore) Events(ctx context.Context, id string, from uint64) ([]match.Record, error) {
	if err := g.wait(ctx, id); err != nil {
		return nil, err
	}
	return g.Store.Events(ctx, id, from)
}

func openGated(t *testing.T) (*live.Registry, *gatedStore) {
	t.Helper()
	b, err := bolt.Open(filepath.Join(t.TempDir(), "m.db"), time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	g := &gatedStore{Store: b}
	reg, err := live.Open(context.Background(), g, live.Config{Hub: hub.Config{QueueLimit: 16}}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	return reg, g
}

// within fails the test unless f returns within d: what a slow store must never hold up.
func within(t *testing.T, d time.Duration, what string, f func() error) {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- f() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	case <-time.After(d):
		t.Fatalf("%s is held up by a store call in progress", what)
	}
}

// A store append that hangs holds up only the posts of its own match: subscriptions to that match,
// posts to other matches, listings and the watchdog probe go on, and the post completes, in order,
// once the store answers.
func TestSlowAppendHoldsUpNothingElse(t *testing.T) {
	ctx := context.Background()
	reg, g := openGated(t)
	const a, b = "a-b-2011-09-10", "c-d-2011-09-10"
	for _, id := range []string{a, b} {
		if _, err := reg.Post(ctx, id, []match.Event{start(id[:1], id[2:3], at)}); err != nil {
			t.Fatal(err)
		}
	}

	g.hold(a)
	posted := make(chan error, 1)
	goal := match.Event{At: at.Add(time.Minute), Kind: match.KindGoal, Team: "a", Player: &match.Player{Number: 9}}
	go func() { _, err := reg.Post(ctx, a, []match.Event{goal}); posted <- err }()
	<-g.waiting // the post is inside the store call now

	early := &conn{}
	within(t, 2*time.Second, "a subscription to the match being written", func() error {
		_, err := reg.Subscribe(early, a, 3, live.Join{Resume: true})
		return err
	})
	within(t, 2*time.Second, "a post to another match", func() error {
		_, err := reg.Post(ctx, b, []match.Event{{At: at.Add(time.Minute), Kind: match.KindStop}})
		return err
	})
	within(t, 2*time.Second, "the watchdog probe", func() error {
		pctx, cancel := context.WithTimeout(ctx, time.Second)
		defer cancel()
		return reg.Probe(pctx)
	})
	within(t, 2*time.Second, "the listing", func() error {
		if n := len(reg.List()); n != 2 {
			return errors.New("listing is incomplete")
		}
		return nil
	})

	g.open()
	if err := <-posted; err != nil {
		t.Fatal(err)
	}
	// The early subscriber got the start (FROM 0), then the goal once it was stored: each once.
	deadline := time.Now().Add(5 * time.Second)
	for {
		got, _ := early.state()
		if strings.Count(got, "\n") == 2 {
			if !strings.Contains(got, `"seq":1`) || !strings.Contains(got, `"seq":2`) {
				t.Fatalf("subscriber got %q", got)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("subscriber got %q, want the start and the goal", got)
		}
		time.Sleep(time.Millisecond)
	}
}

// A resume of a match whose history left memory reads the store with no lock held: while that read
// hangs, the match's status, its listing and the watchdog probe answer, and Subscribe says the
// history must be restored first rather than read the store itself (it runs on a poller).
func TestSlowReadBackHoldsUpNothingElse(t *testing.T) {
	ctx := context.Background()
	reg, g := openGated(t)
	const a = "a-b-2011-09-10"
	if _, err := reg.Post(ctx, a, []match.Event{start("a", "b", at), {At: at.Add(time.Minute), Kind: match.KindStop}}); err != nil {
		t.Fatal(err)
	}
	if n := reg.Evict(0, time.Now()); n != 1 {
		t.Fatalf("evicted %d", n)
	}
	resume := live.Join{Resume: true, After: 1}
	if _, err := reg.Subscribe(&conn{}, a, 3, resume); !errors.Is(err, live.ErrNotInMemory) {
		t.Fatalf("Subscribe on an evicted match = %v, want ErrNotInMemory", err)
	}

	g.hold(a)
	restored := make(chan error, 1)
	go func() { restored <- reg.Restore(ctx, a) }()
	<-g.waiting
	within(t, 2*time.Second, "a status subscription", func() error {
		_, err := reg.Subscribe(&conn{}, a, 1, live.Join{})
		return err
	})
	within(t, 2*time.Second, "the watchdog probe", func() error {
		pctx, cancel := context.WithTimeout(ctx, time.Second)
		defer cancel()
		return reg.Probe(pctx)
	})
	within(t, 2*time.Second, "the match's state", func() error {
		if s, ok := reg.State(a); !ok || !s.Ended() {
			return errors.New("no state")
		}
		return nil
	})
	g.open()
	if err := <-restored; err != nil {
		t.Fatal(err)
	}
	c := &conn{}
	if _, err := reg.Subscribe(c, a, 3, resume); err != nil {
		t.Fatal(err)
	}
	if got := waitClosed(t, c); strings.Count(got, "\n") != 1 || !strings.Contains(got, `"seq":2`) {
		t.Fatalf("resume after the restore got %q", got)
	}
}
