// Package storetest is the conformance suite every store.Store implementation must pass.
package storetest

import (
	"context"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"

	"matchstream/daemon/match"
	"matchstream/daemon/store"
)

// Opener returns a fresh, empty store; reopen (may be nil) reopens the same data after Close.
type Opener func(t *testing.T) (s store.Store, reopen func() store.Store)

func recs(from uint64, n int) []match.Record {
	out := make([]match.Record, n)
	base := time.Date(2011, 9, 10, 21, 0, 0, 0, time.UTC)
	for i := range out {
		seq := from + uint64(i)
		out[i] = match.Record{Seq: seq, Event: match.Event{At: base.Add(time.Duration(seq) * time.Second), Kind: match.KindComment, Comment: "c"}}
	}
	return out
}

// Run runs the suite.
func Run(t *testing.T, open Opener) {
	ctx := context.Background()
	t.Run("empty", func(t *testing.T) {
		s, _ := open(t)
		ids, err := s.Matches(ctx)
		if err != nil || len(ids) != 0 {
			t.Fatalf("Matches = %v, %v; want none", ids, err)
		}
		evs, err := s.Events(ctx, "nope", 0)
		if err != nil || len(evs) != 0 {
			t.Fatalf("Events of unknown match = %v, %v; want none, nil", evs, err)
		}
		if err := s.Ping(ctx); err != nil {
			t.Fatalf("Ping: %v", err)
		}
	})
	t.Run("append and read back", func(t *testing.T) {
		s, _ := open(t)
		if err := s.Append(ctx, "a-b-2011-09-10", recs(1, 3)); err != nil {
			t.Fatal(err)
		}
		if err := s.Append(ctx, "a-b-2011-09-10", recs(4, 2)); err != nil {
			t.Fatal(err)
		}
		got, err := s.Events(ctx, "a-b-2011-09-10", 0)
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != 5 {
			t.Fatalf("got %d records, want 5", len(got))
		}
		for i, r := range got {
			if r.Seq != uint64(i+1) || !r.At.Equal(recs(1, 5)[i].At) || r.Kind != match.KindComment {
				t.Fatalf("record %d = %+v", i, r)
			}
		}
		tail, _ := s.Events(ctx, "a-b-2011-09-10", 3)
		if len(tail) != 2 || tail[0].Seq != 4 {
			t.Fatalf("Events from 3 = %+v, want seqs 4,5", tail)
		}
		if none, _ := s.Events(ctx, "a-b-2011-09-10", ^uint64(0)); len(none) != 0 {
			t.Fatalf("Events from max = %d records, want none", len(none))
		}
	})
	t.Run("conflicting seq is refused whole", func(t *testing.T) {
		s, _ := open(t)
		if err := s.Append(ctx, "m", recs(1, 2)); err != nil {
			t.Fatal(err)
		}
		for _, bad := range [][]match.Record{recs(2, 1), recs(4, 1), append(recs(3, 1), recs(5, 1)...), nil} {
			if err := s.Append(ctx, "m", bad); err == nil {
				t.Fatalf("Append(%v) succeeded, want error", bad)
			} else if len(bad) > 0 && !errors.Is(err, store.ErrConflict) {
				t.Fatalf("Append(%v) = %v, want ErrConflict", bad, err)
			} else if ce := new(store.ConflictError); len(bad) == 1 && (!errors.As(err, &ce) || ce.Last != 2 || ce.Want != bad[0].Seq) {
				t.Fatalf("Append(%v) = %v, want a ConflictError saying the last seq is 2", bad, err)
			}
		}
		if got, _ := s.Events(ctx, "m", 0); len(got) != 2 {
			t.Fatalf("after refused appends: %d records, want 2", len(got))
		}
	})
	t.Run("concurrent writers never gap or duplicate", func(t *testing.T) {
		s, _ := open(t)
		var wg sync.WaitGroup
		for w := 0; w < 4; w++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for done := 0; done < 20; {
					evs, err := s.Events(ctx, "race", 0)
					if err != nil {
						t.Error(err)
						return
					}
					if err := s.Append(ctx, "race", recs(uint64(len(evs))+1, 1)); err == nil {
						done++
					} else if !errors.Is(err, store.ErrConflict) {
						t.Error(err)
						return
					}
				}
			}()
		}
		wg.Wait()
		got, _ := s.Events(ctx, "race", 0)
		if len(got) != 80 {
			t.Fatalf("%d records, want 80", len(got))
		}
		for i, r := range got {
			if r.Seq != uint64(i+1) {
				t.Fatalf("record %d has seq %d", i, r.Seq)
			}
		}
	})
	t.Run("matches listed and survive reopen", func(t *testing.T) {
		s, reopen := open(t)
		for _, id := range []string{"x-y-2020-01-01", "a-b-2011-09-10"} {
			if err := s.Append(ctx, id, recs(1, 1)); err != nil {
				t.Fatal(err)
			}
		}
		ids, _ := s.Matches(ctx)
		slices.Sort(ids)
		if !slices.Equal(ids, []string{"a-b-2011-09-10", "x-y-2020-01-01"}) {
			t.Fatalf("Matches = %v", ids)
		}
		if reopen == nil {
			return
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		s2 := reopen()
		ids, _ = s2.Matches(ctx)
		if len(ids) != 2 {
			t.Fatalf("after reopen Matches = %v", ids)
		}
		if got, _ := s2.Events(ctx, "a-b-2011-09-10", 0); len(got) != 1 {
			t.Fatalf("after reopen: %d records", len(got))
		}
	})
}
