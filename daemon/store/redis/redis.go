// Package redis is the multi-node Store on Redis (github.com/redis/go-redis/v9, UniversalClient:
// one server, Sentinel or Cluster). Each match's events are a Redis Stream whose entry IDs are
// "<seq>-1", appended by a Lua script that checks the last seq first, so two watchers or two nodes
// can never produce a gap or a duplicate seq. Keys carry the match id as a hash tag ({id}), so a
// match lives in one Cluster slot; the set of match ids is a separate key.
//
// Durability is Redis's own: with appendonly yes and appendfsync always (or everysec, accepting
// up to a second), an acknowledged append survives a Redis restart.
package redis

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"matchstream/daemon/match"
	"matchstream/daemon/store"
)

const (
	matchesKey = "matchstream:matches"
	// newKey is a stream of the ids of matches whose first event was just stored (NewMatches).
	newKey = "matchstream:new"
)

func eventsKey(id string) string { return "matchstream:{" + id + "}:events" }

// appendScript appends ARGV[2..] as seqs ARGV[1], ARGV[1]+1, ... if and only if the stream's last
// seq is ARGV[1]-1; otherwise it answers CONFLICT <last>.
var appendScript = goredis.NewScript(`
local last = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)
local lastSeq = 0
if #last > 0 then lastSeq = tonumber(string.match(last[1][1], '^(%d+)')) end
local first = tonumber(ARGV[1])
if lastSeq ~= first - 1 then
  return redis.error_reply('CONFLICT ' .. lastSeq)
end
for i = 2, #ARGV do
  redis.call('XADD', KEYS[1], (first + i - 2) .. '-1', 'r', ARGV[i])
end
return #ARGV - 1
`)

// Store is a Redis-backed store.Store.
type Store struct {
	c goredis.UniversalClient
}

// Open connects to the Redis a URL names: one server, Sentinel or Cluster (url.go has the forms).
func Open(ctx context.Context, raw string) (*Store, error) {
	opts, err := options(raw)
	if err != nil {
		return nil, fmt.Errorf("store %s: %w", store.Shown(raw), err)
	}
	// Each live match holds a connection in a blocking XREAD (Follow): room for a hundred
	// concurrent matches besides the posts. One XREAD over all streams is the next step.
	opts.PoolSize = 128
	c := goredis.NewUniversalClient(opts)
	s := &Store{c: c}
	if err := s.Ping(ctx); err != nil {
		c.Close()
		return nil, fmt.Errorf("store %s: %w", store.Shown(raw), err)
	}
	return s, nil
}

// Append implements store.Store.
func (s *Store) Append(ctx context.Context, id string, recs []match.Record) error {
	if len(recs) == 0 {
		return fmt.Errorf("append to %s: no records", id)
	}
	args := make([]any, 0, len(recs)+1)
	args = append(args, recs[0].Seq)
	for i, r := range recs {
		if r.Seq != recs[0].Seq+uint64(i) {
			return fmt.Errorf("append to %s: record %d has seq %d: %w", id, i, r.Seq, store.ErrConflict)
		}
		b, err := json.Marshal(r)
		if err != nil {
			return fmt.Errorf("append to %s: %w", id, err)
		}
		args = append(args, b)
	}
	// The id joins the set first: if the append then fails, listing a match with no events is harmless.
	if err := s.c.SAdd(ctx, matchesKey, id).Err(); err != nil {
		return fmt.Errorf("append to %s: %w", id, err)
	}
	err := appendScript.Run(ctx, s.c, []string{eventsKey(id)}, args...).Err()
	if err != nil && strings.HasPrefix(err.Error(), "CONFLICT") {
		return fmt.Errorf("append to %s: last seq is %s, not %d: %w", id, strings.TrimPrefix(err.Error(), "CONFLICT "), recs[0].Seq-1, store.ErrConflict)
	}
	var ne net.Error
	if err != nil && (errors.As(err, &ne) && ne.Timeout() || errors.Is(err, context.DeadlineExceeded)) {
		// The script was sent and no answer came: Redis may still run it.
		return fmt.Errorf("append to %s: %w: %w", id, store.ErrOutcomeUnknown, err)
	}
	if err != nil {
		return fmt.Errorf("append to %s: %w", id, err)
	}
	if recs[0].Seq == 1 {
		// Best effort, after the append: a lost push delays the others' discovery until their next
		// scan, and a read-through answers any request for the match before that.
		s.c.XAdd(ctx, &goredis.XAddArgs{Stream: newKey, MaxLen: 10000, Approx: true, Values: []any{"id", id}})
	}
	return nil
}

// NewMatches implements store.Announcer with a blocking XREAD of the new-matches stream.
func (s *Store) NewMatches(ctx context.Context, cursor string, block time.Duration) ([]string, string, error) {
	if cursor == "" { // from now on: after the last id announced so far
		last, err := s.c.XRevRangeN(ctx, newKey, "+", "-", 1).Result()
		if err != nil {
			return nil, "", fmt.Errorf("new matches: %w", err)
		}
		cursor = "0-0"
		if len(last) > 0 {
			cursor = last[0].ID
		}
	}
	res, err := s.c.XRead(ctx, &goredis.XReadArgs{Streams: []string{newKey, cursor}, Block: block, Count: 100}).Result()
	if errors.Is(err, goredis.Nil) {
		return nil, cursor, nil
	}
	if err != nil {
		return nil, cursor, fmt.Errorf("new matches: %w", err)
	}
	var ids []string
	for _, st := range res {
		for _, m := range st.Messages {
			if id, ok := m.Values["id"].(string); ok {
				ids = append(ids, id)
			}
			cursor = m.ID
		}
	}
	return ids, cursor, nil
}

// Matches implements store.Store.
func (s *Store) Matches(ctx context.Context) ([]string, error) {
	ids, err := s.c.SMembers(ctx, matchesKey).Result()
	if err != nil {
		return nil, fmt.Errorf("list matches: %w", err)
	}
	out := ids[:0]
	for _, id := range ids { // a match whose first append failed has no events: not a match
		if n, err := s.c.XLen(ctx, eventsKey(id)).Result(); err == nil && n > 0 {
			out = append(out, id)
		}
	}
	return out, nil
}

// Events implements store.Store.
func (s *Store) Events(ctx context.Context, id string, from uint64) ([]match.Record, error) {
	if from == ^uint64(0) {
		return nil, nil
	}
	msgs, err := s.c.XRange(ctx, eventsKey(id), strconv.FormatUint(from+1, 10)+"-1", "+").Result()
	if err != nil {
		return nil, fmt.Errorf("events of %s: %w", id, err)
	}
	recs, err := decode(nil, msgs)
	if err != nil {
		return nil, fmt.Errorf("events of %s: %w", id, err)
	}
	return recs, nil
}

// decode appends the records stream entries hold.
func decode(recs []match.Record, msgs []goredis.XMessage) ([]match.Record, error) {
	for _, m := range msgs {
		raw, _ := m.Values["r"].(string)
		var r match.Record
		if err := json.Unmarshal([]byte(raw), &r); err != nil {
			return nil, fmt.Errorf("entry %s: %w", m.ID, err)
		}
		recs = append(recs, r)
	}
	return recs, nil
}

// Ping implements store.Store.
func (s *Store) Ping(ctx context.Context) error {
	if err := s.c.Ping(ctx).Err(); err != nil {
		return errors.Join(errors.New("redis does not answer"), err)
	}
	return nil
}

// Close implements store.Store.
func (s *Store) Close() error { return s.c.Close() }

// Follow implements store.Follower with a blocking XREAD from the entry after seq after: a node that
// blips loses nothing, it reads on from where it was.
func (s *Store) Follow(ctx context.Context, id string, after uint64, block time.Duration) ([]match.Record, error) {
	res, err := s.c.XRead(ctx, &goredis.XReadArgs{Streams: []string{eventsKey(id), strconv.FormatUint(after, 10) + "-1"},
		Count: 1000, Block: block}).Result()
	if errors.Is(err, goredis.Nil) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("follow %s: %w", id, err)
	}
	var recs []match.Record
	for _, st := range res {
		if recs, err = decode(recs, st.Messages); err != nil {
			return nil, fmt.Errorf("follow %s: %w", id, err)
		}
	}
	return recs, nil
}

const nodesKey = "matchstream:nodes"

// Announce implements store.Presence: the node's load, expiring after ttl unless announced again.
func (s *Store) Announce(ctx context.Context, n store.NodeLoad, ttl time.Duration) error {
	n.Expires = time.Now().Add(ttl)
	b, err := json.Marshal(n)
	if err != nil {
		return err
	}
	return s.c.HSet(ctx, nodesKey, n.ID, b).Err()
}

// Nodes implements store.Presence: the nodes whose announcement has not expired (expired ones are
// removed on the way).
func (s *Store) Nodes(ctx context.Context) ([]store.NodeLoad, error) {
	all, err := s.c.HGetAll(ctx, nodesKey).Result()
	if err != nil {
		return nil, fmt.Errorf("nodes: %w", err)
	}
	var out []store.NodeLoad
	for id, raw := range all {
		var n store.NodeLoad
		if json.Unmarshal([]byte(raw), &n) != nil || time.Now().After(n.Expires) {
			s.c.HDel(ctx, nodesKey, id)
			continue
		}
		out = append(out, n)
	}
	return out, nil
}

// Leave implements store.Presence.
func (s *Store) Leave(ctx context.Context, id string) error { return s.c.HDel(ctx, nodesKey, id).Err() }
