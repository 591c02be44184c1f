package live_test

import (
	"context"
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

// swappableStore is a store whose data can be lost: lose puts an empty one in its place, as a
// Redis restarted without its data.
type swappableStore struct {
	t  *testing.T
	mu sync.Mutex
	store.Store
}

func (s *swappableStore) cur() store.Store { s.mu.Lock(); defer s.mu.Unlock(); return s.Store }

func (s *swappableStore) lose() store.Store {
	b, err := bolt.Open(filepath.Join(s.t.TempDir(), "empty.db"), time.Second)
	if err != nil {
		s.t.Fatal(err)
	}
	s.t.Cleanup(func() { b.Close() })
	s.mu.Lock()
	s.Store = b
	s.mu.Unlock()
	return b
}

func (s *swappableStore) Append(ctx context.Context, id string, recs []match.Record) error {
	return s.cur().Append(ctx, id, recs)
}

func (s *swappableStore) Events(ctx context.Context, id string, from uint64) ([]match.Record, error) {
	return s.cur().Events(ctx, id, from)
}

func openSwappable(t *testing.T) (*live.Registry, *swappableStore) {
	t.Helper()
	st := &swappableStore{t: t}
	st.lose()
	reg, err := live.Open(context.Background(), st, live.Config{Hub: hub.Config{QueueLimit: 16}, MaxAhead: 5 * time.Minute},
		slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	return reg, st
}

func comment(n int) match.Event {
	return match.Event{At: at.Add(time.Duration(n) * time.Second), Kind: match.KindComment, Comment: strings.Repeat("c", n)}
}

// A store that lost the events this node has (it was shown them) gets them back at the next post,
// which then goes on at the node's next seq. Before, the post conflicted with a store that had
// nothing to catch up from, every time.
func TestStoreBehindIsWrittenBack(t *testing.T) {
	ctx := context.Background()
	reg, st := openSwappable(t)
	const id = "a-b-2011-09-10"
	if _, err := reg.Post(ctx, id, []match.Event{start("a", "b", at), comment(1), comment(2)}); err != nil {
		t.Fatal(err)
	}
	empty := st.lose()
	recs, err := reg.Post(ctx, id, []match.Event{comment(3)})
	if err != nil || len(recs) != 1 || recs[0].Seq != 4 {
		t.Fatalf("post after the store lost the match: %+v, %v; want seq 4", recs, err)
	}
	got, _ := empty.Events(ctx, id, 0)
	if len(got) != 4 || got[1].Comment != "c" || got[3].Comment != "ccc" {
		t.Fatalf("the store has %+v, want the node's 3 events and the new one", got)
	}
	if reg.WrittenBack.Load() != 3 || reg.Diverged.Load() != 0 {
		t.Fatalf("written back %d, diverged %d; want 3, 0", reg.WrittenBack.Load(), reg.Diverged.Load())
	}

	// Check (after the store was unreachable) writes back without waiting for a post.
	empty = st.lose()
	if err := reg.Check(ctx, id); err != nil {
		t.Fatal(err)
	}
	if got, _ := empty.Events(ctx, id, 0); len(got) != 4 {
		t.Fatalf("after Check the store has %d events, want 4", len(got))
	}
	if err := reg.Check(ctx, id); err != nil || reg.WrittenBack.Load() != 7 {
		t.Fatalf("Check of a store in step: %v, written back %d (want 7: nothing more)", err, reg.WrittenBack.Load())
	}
}

// When another writer filled the lost seqs with other events first, the store's history wins:
// this node takes it, cuts the match's clients (they saw the other one) and validates the post on
// top of it.
func TestStoreForkTakesTheStores(t *testing.T) {
	ctx := context.Background()
	reg, st := openSwappable(t)
	const id = "a-b-2011-09-10"
	if _, err := reg.Post(ctx, id, []match.Event{start("a", "b", at), comment(1)}); err != nil {
		t.Fatal(err)
	}
	c := &conn{}
	if _, err := reg.Subscribe(c, id, 3, live.Join{Resume: true, Now: at}); err != nil {
		t.Fatal(err)
	}
	other := st.lose()
	theirs := []match.Record{{Seq: 1, Event: start("a", "b", at)}, {Seq: 2, Event: comment(5)}, {Seq: 3, Event: comment(6)}}
	if err := other.Append(ctx, id, theirs); err != nil {
		t.Fatal(err)
	}
	recs, err := reg.Post(ctx, id, []match.Event{comment(7)})
	if err != nil || len(recs) != 1 || recs[0].Seq != 4 {
		t.Fatalf("post after a fork: %+v, %v; want seq 4 on top of the store's 3", recs, err)
	}
	waitClosed(t, c)
	evs, _, _ := reg.Events(ctx, id, 0)
	if len(evs) != 4 || evs[1].Comment != "ccccc" || reg.Diverged.Load() != 1 {
		t.Fatalf("history after the fork: %+v (diverged %d); want the store's", evs, reg.Diverged.Load())
	}
	c2 := &conn{}
	if _, err := reg.Subscribe(c2, id, 3, live.Join{Resume: true, Now: at}); err != nil {
		t.Fatalf("a client reconnecting after the cut: %v", err)
	}
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(time.Millisecond) {
		s, closed := c2.state()
		if !closed && strings.Count(s, "\n") == 4 && strings.Contains(s, `"comment":"ccccc"`) {
			break
		}
		if closed || time.Now().After(deadline) {
			t.Fatalf("the reconnected client got %q (closed %v), want the store's 4 events and to stay", s, closed)
		}
	}
}
