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

type conn struct {
	mu     sync.Mutex
	buf    strings.Builder
	closed bool
}

func (c *conn) Write(p []byte) (int, error) { c.mu.Lock(); defer c.mu.Unlock(); return c.buf.Write(p) }
func (c *conn) Close() error                { c.mu.Lock(); c.closed = true; c.mu.Unlock(); return nil }
func (c *conn) state() (string, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.buf.String(), c.closed
}

type downStore struct {
	store.Store
	down bool
}

func (d *downStore) Append(ctx context.Context, id string, recs []match.Record) error {
	if d.down {
		return errors.New("unreachable")
	}
	return d.Store.Append(ctx, id, recs)
}

var at = time.Date(2011, 9, 10, 21, 0, 0, 0, time.UTC)

func start(home, visit string, when time.Time) match.Event {
	return match.Event{At: when, Kind: match.KindStart, Home: home, Visit: visit, StartDate: "2011-09-10",
		HomePlayers: []match.Player{{Number: 9, Name: "A"}}, VisitPlayers: []match.Player{{Number: 7, Name: "B"}}}
}

func open(t *testing.T, path string) (*live.Registry, *downStore) {
	t.Helper()
	b, err := bolt.Open(path, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	st := &downStore{Store: b}
	reg, err := live.Open(context.Background(), st, live.Config{Hub: hub.Config{QueueLimit: 16}, MaxAhead: 5 * time.Minute}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	return reg, st
}

func waitClosed(t *testing.T, c *conn) string {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		s, closed := c.state()
		if closed {
			return s
		}
		if time.Now().After(deadline) {
			t.Fatalf("connection not closed; got %q", s)
		}
		time.Sleep(time.Millisecond)
	}
}

func TestRegistry(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "m.db")
	reg, st := open(t, path)

	var ee *live.EventError
	if _, err := reg.Post(ctx, "a-b-2011-09-10", []match.Event{{At: at, Kind: match.KindStop}}); !errors.As(err, &ee) {
		t.Fatalf("stop before start: %v", err)
	}
	st.down = true
	if _, err := reg.Post(ctx, "a-b-2011-09-10", []match.Event{start("a", "b", at)}); !errors.Is(err, live.ErrStore) {
		t.Fatalf("store down: %v", err)
	}
	if len(reg.List()) != 0 {
		t.Fatal("a match whose start was not stored is listed")
	}
	st.down = false
	if _, err := reg.Post(ctx, "a-b-2011-09-10", []match.Event{start("a", "b", at)}); err != nil {
		t.Fatal(err)
	}
	if _, err := reg.Post(ctx, "c-d-2011-09-10", []match.Event{start("c", "d", at.Add(time.Minute))}); err != nil {
		t.Fatal(err)
	}
	if got := reg.Current(); got != "c-d-2011-09-10" {
		t.Fatalf("Current = %q, want the match that kicked off last", got)
	}

	if _, err := reg.Subscribe(&conn{}, "x-y-2011-09-10", 1, live.Join{}); !errors.Is(err, live.ErrNotFound) {
		t.Errorf("Subscribe to a match that does not exist = %v", err)
	}
	var pe *live.PastEndError
	if _, err := reg.Subscribe(&conn{}, "a-b-2011-09-10", 3, live.Join{Resume: true, After: 5}); !errors.As(err, &pe) || pe.Last != 1 {
		t.Errorf("Subscribe after seq 5 of a match at 1 = %v", err)
	}
	if _, err := reg.Subscribe(&conn{}, "a-b-2011-09-10", 4, live.Join{Resume: true, After: 5, StatusPastEnd: true}); err != nil {
		t.Errorf("a resume past the end that asks for the status instead: %v", err)
	}

	v2, v3 := &conn{}, &conn{}
	if _, err := reg.Subscribe(v2, reg.Current(), 2, live.Join{Now: at}); err != nil {
		t.Fatal(err)
	}
	if _, err := reg.Subscribe(v3, "c-d-2011-09-10", 3, live.Join{Resume: true, Now: at}); err != nil {
		t.Fatal(err)
	}
	goal := match.Event{At: at.Add(2 * time.Minute), Kind: match.KindGoal, Team: "d", Player: &match.Player{Number: 7}}
	stop := match.Event{At: at.Add(3 * time.Minute), Kind: match.KindStop}
	recs, err := reg.Post(ctx, "c-d-2011-09-10", []match.Event{goal, stop})
	if err != nil || len(recs) != 2 || recs[0].Seq != 2 || recs[0].Player.Name != "B" {
		t.Fatalf("Post = %+v, %v", recs, err)
	}
	got2 := waitClosed(t, v2)
	if !strings.Contains(got2, "<<\"c\">>") || !strings.Contains(got2, "goal:\n\tplayer: B (7) \n") || !strings.HasSuffix(got2, "stop:\n\r\n") {
		t.Errorf("V:2 client got %q", got2)
	}
	got3 := waitClosed(t, v3)
	if n := strings.Count(got3, "\n"); n != 3 || !strings.HasPrefix(got3, `{"match":"c-d-2011-09-10","seq":1,`) {
		t.Errorf("FROM:0 client got %q", got3)
	}
	if reg.Current() != "a-b-2011-09-10" {
		t.Errorf("Current after c-d ended = %q", reg.Current())
	}

	// A restart on the same store knows every match, its state and its history.
	st.Store.Close()
	reg2, _ := open(t, path)
	s, ok := reg2.State("c-d-2011-09-10")
	if !ok || !s.Ended() || s.VisitScore != 1 || s.Seq != 3 {
		t.Fatalf("after reopen: %+v", s)
	}
	if evs, _, _ := reg2.Events(context.Background(), "c-d-2011-09-10", 1); len(evs) != 2 || evs[1].Kind != match.KindStop {
		t.Fatalf("history after reopen: %+v", evs)
	}
	// Once over and without subscribers, its history leaves memory and is read back from the store:
	// the events, a v3 resume, and the status are all as before.
	if n := reg2.Evict(0, time.Now()); n != 1 {
		t.Fatalf("evicted %d matches, want the one that is over", n)
	}
	if evs, ok, err := reg2.Events(context.Background(), "c-d-2011-09-10", 1); !ok || err != nil || len(evs) != 2 || evs[1].Kind != match.KindStop {
		t.Fatalf("history after eviction: %+v %v %v", evs, ok, err)
	}
	c := &conn{}
	if _, err := reg2.SubscribeRestoring(context.Background(), c, "c-d-2011-09-10", 3, live.Join{Resume: true, After: 1}); err != nil {
		t.Fatal(err)
	}
	if got := waitClosed(t, c); strings.Count(got, "\n") != 2 || !strings.Contains(got, `"seq":3`) {
		t.Fatalf("v3 resume of an evicted match: %q", got)
	}
	if s, ok := reg2.State("c-d-2011-09-10"); !ok || s.Seq != 3 || len(reg2.List()) != 2 {
		t.Fatalf("state or listing after eviction: %+v %v", s, reg2.List())
	}
	if n := reg2.Evict(time.Minute, time.Now()); n != 0 {
		t.Fatalf("evicted %d again within a minute of its restore", n)
	}
	if s, _ := reg2.State("a-b-2011-09-10"); !s.Live() {
		t.Fatal("a live match is not live after reopen")
	}
}

// The v3 status is rendered once per state and shared, so a subscriber after an event must get
// the new one, and a v1 subscriber's status still carries its own connect time.
func TestStatusFollowsState(t *testing.T) {
	ctx := context.Background()
	reg, _ := openSwappable(t)
	const id = "a-b-2011-09-10"
	if _, err := reg.Post(ctx, id, []match.Event{start("a", "b", at)}); err != nil {
		t.Fatal(err)
	}
	first := func(version int, now time.Time) string {
		c := &conn{}
		if _, err := reg.Subscribe(c, id, version, live.Join{Now: now}); err != nil {
			t.Fatal(err)
		}
		for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(time.Millisecond) {
			if s, _ := c.state(); s != "" { // a frame is written in one piece
				return s
			}
			if time.Now().After(deadline) {
				t.Fatal("no status")
			}
		}
	}
	a, b := first(3, at), first(3, at)
	if a != b || !strings.Contains(a, `"seq":1`) {
		t.Fatalf("two v3 statuses of one state: %q, %q", a, b)
	}
	goal := match.Event{At: at.Add(time.Minute), Kind: match.KindGoal, Team: "a", Player: &match.Player{Number: 9}}
	if _, err := reg.Post(ctx, id, []match.Event{goal}); err != nil {
		t.Fatal(err)
	}
	if c := first(3, at); !strings.Contains(c, `"seq":2`) || !strings.Contains(c, `"home_score":1`) {
		t.Fatalf("v3 status after a goal: %q", c)
	}
	v1a, v1b := first(1, at.Add(time.Hour)), first(1, at.Add(2*time.Hour))
	if !strings.HasPrefix(v1a, "2011-09-10 22:00:00") || !strings.HasPrefix(v1b, "2011-09-10 23:00:00") {
		t.Fatalf("v1 statuses do not carry their connect times: %.40q, %.40q", v1a, v1b)
	}
}
