package redis_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"matchstream/daemon/store"
	"matchstream/daemon/store/redis"
	"matchstream/daemon/store/storetest"

	"matchstream/daemon/match"
	"slices"
)

func TestConformance(t *testing.T) {
	url := storetest.RedisServer(t)
	conformance(t, func(db int) string { return strings.TrimSuffix(url, "/0") + fmt.Sprintf("/%d", db) })
}

// conformance runs the store suite, every subtest on a fresh database (urlOf names it).
func conformance(t *testing.T, urlOf func(db int) string) {
	db := 0
	storetest.Run(t, func(t *testing.T) (store.Store, func() store.Store) {
		db++
		u := urlOf(db)
		open := func() store.Store {
			s, err := redis.Open(context.Background(), u)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { s.Close() })
			return s
		}
		return open(), open
	})
}

func TestUnreachable(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := redis.Open(ctx, "redis://127.0.0.1:1/0"); err == nil || !strings.Contains(err.Error(), "redis does not answer") {
		t.Fatalf("Open of a closed port = %v", err)
	}
}

// The id of each match whose first event is stored is pushed to every node waiting in NewMatches,
// from where each one left off; later events of that match are not announced again.
func TestNewMatchesPushed(t *testing.T) {
	ctx := context.Background()
	s, err := redis.Open(ctx, storetest.RedisServer(t))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.Append(ctx, "old", []match.Record{{Seq: 1, Event: match.Event{Kind: match.KindComment, Comment: "x"}}}); err != nil {
		t.Fatal(err)
	}
	ids, cursor, err := s.NewMatches(ctx, "", 50*time.Millisecond) // from now on: "old" is before
	if err != nil || len(ids) != 0 {
		t.Fatalf("from now on: %v, %v", ids, err)
	}
	got := make(chan []string, 1)
	go func() {
		ids, _, err := s.NewMatches(ctx, cursor, 5*time.Second)
		if err != nil {
			t.Error(err)
		}
		got <- ids
	}()
	for seq, id := range []string{"a", "a", "b"} {
		n := uint64(1)
		if seq == 1 {
			n = 2
		}
		if err := s.Append(ctx, id, []match.Record{{Seq: n, Event: match.Event{Kind: match.KindComment, Comment: "x"}}}); err != nil {
			t.Fatal(err)
		}
	}
	first := <-got // the blocked read returns with what had come by then
	ids, _, err = s.NewMatches(ctx, cursor, 50*time.Millisecond)
	if err != nil || !slices.Equal(ids, []string{"a", "b"}) || len(first) == 0 || first[0] != "a" {
		t.Fatalf("announced %v (the blocked read got %v), %v; want a, b once each", ids, first, err)
	}
}

// Through Sentinel (a primary, a replica, a sentinel): the store passes the same conformance
// suite, the client having asked the sentinel where the primary is.
func TestConformanceThroughSentinel(t *testing.T) {
	primary := storetest.StartRedis(t)
	storetest.StartReplica(t, primary)
	sentinel := storetest.StartSentinel(t, primary, "mymaster", 1)
	conformance(t, func(db int) string {
		return fmt.Sprintf("redis+sentinel://%s/%d?master_name=mymaster", sentinel.Addr(), db)
	})
}

// With a replica, an append is acknowledged once the replica has it (WAIT; automatic: 1 when the
// primary has a replica). Without the replica, the same append is stored on the primary only and
// is an unknown outcome, never an acknowledgement; with MinReplicas 0 it is acknowledged.
func TestAppendWaitsForReplicas(t *testing.T) {
	ctx := context.Background()
	primary := storetest.StartRedis(t)
	replica := storetest.StartReplica(t, primary)
	s, err := redis.OpenWith(ctx, primary.URL, redis.Config{MinReplicas: redis.AutoReplicas})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if s.MinReplicas() != 1 {
		t.Fatalf("automatic min replicas with one replica = %d, want 1", s.MinReplicas())
	}
	rec := func(seq uint64) []match.Record {
		return []match.Record{{Seq: seq, Event: match.Event{Kind: match.KindComment, Comment: "x"}}}
	}
	if err := s.Append(ctx, "m", rec(1)); err != nil {
		t.Fatalf("append with the replica up: %v", err)
	}
	replica.Stop()
	// A short wait for the replica that is gone; the append above had the default 2 s, which a
	// replica on a loaded machine needs (300 ms was seen too short with every package's tests).
	short, err := redis.OpenWith(ctx, primary.URL, redis.Config{MinReplicas: 1, ReplicaTimeout: 300 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer short.Close()
	err = short.Append(ctx, "m", rec(2))
	if !errors.Is(err, store.ErrOutcomeUnknown) || !strings.Contains(err.Error(), "0 of 1 replicas") {
		t.Fatalf("append without the replica: %v, want an unknown outcome", err)
	}
	// The unreplicated append is on the primary, not readable, and cannot be confirmed yet: another
	// writer is refused, with nothing stored and nothing unknown.
	if err := short.Append(ctx, "m", rec(2)); err == nil || errors.Is(err, store.ErrOutcomeUnknown) || errors.Is(err, store.ErrConflict) {
		t.Fatalf("append while the store holds an unconfirmed event: %v, want a plain store error", err)
	}
	if got, _ := s.Events(ctx, "m", 0); len(got) != 1 {
		t.Fatalf("readers see %d events, want the 1 confirmed", len(got))
	}
	// Once the replica is back, the writer's conflict confirms the event, so it can catch up
	// (before, it read 1 event, conflicted again and never got past).
	replica.Start()
	var ce *store.ConflictError
	if err := s.Append(ctx, "m", rec(2)); !errors.As(err, &ce) || ce.Last != 2 {
		t.Fatalf("append behind the store: %v, want a conflict at last seq 2", err)
	}
	if got, _ := s.Events(ctx, "m", 0); len(got) != 2 {
		t.Fatalf("after the conflict readers see %d events, want 2 (the unconfirmed one confirmed)", len(got))
	}
	none, err := redis.OpenWith(ctx, primary.URL, redis.Config{MinReplicas: 0})
	if err != nil {
		t.Fatal(err)
	}
	defer none.Close()
	if err := none.Append(ctx, "m", rec(3)); err != nil {
		t.Fatalf("append with min replicas 0: %v", err)
	}
}
