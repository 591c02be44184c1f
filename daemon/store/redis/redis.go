// Package redis is the multi-node Store on Redis (github.com/redis/go-redis/v9, UniversalClient:
// one server, Sentinel or Cluster). Each match's events are a Redis Stream whose entry IDs are
// "<seq>-1", appended by a Lua script that checks the last seq first, so two watchers or two nodes
// can never produce a gap or a duplicate seq. Keys carry the match id as a hash tag ({id}), so a
// match lives in one Cluster slot; the set of match ids is a separate key.
//
// Durability is Redis's own: with appendonly yes and appendfsync always (or everysec, accepting
// up to a second), an acknowledged append survives a Redis restart. With replicas (MinReplicas),
// an append is acknowledged only once WAIT confirms it, and readers see events only up to the
// match's commit stream, so a failover cannot take back what a node has shown; an idempotency key
// kept with each batch makes a retry after an unknown outcome find its batch instead of storing
// it twice. In a Cluster the append and its WAIT go to the primary of the match's slot.
// Incarnation (the primary's run_id) lets the nodes notice a Redis that came back with less
// than it acknowledged (live.Registry.Check). url.go has the URL forms, TLS files included.
package redis

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
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

// commitsKey is a match's commit stream: entry "<seq>-1" says every event up to seq is on enough
// replicas (WAIT confirmed it). With --store-min-replicas, readers see events up to the last
// commit only, whatever server answers them: an event a failover can still lose is never taken
// in by a node nor shown to a client. A match without the stream (written without WAIT) is
// read whole.
func commitsKey(id string) string { return "matchstream:{" + id + "}:commits" }

// nonceKey is written to confirm, with WAIT, that earlier writes reached the replicas.
func nonceKey(id string) string { return "matchstream:{" + id + "}:nonce" }

// keysKey maps each idempotency key of a match to the seq its batch started at (same slot).
func keysKey(id string) string { return "matchstream:{" + id + "}:keys" }

// appendScript appends ARGV[4..] as seqs ARGV[1], ARGV[1]+1, ... if and only if the stream's last
// seq is ARGV[1]-1 (else CONFLICT <last>) and the key ARGV[2], if any, was never appended (else
// DUPLICATE <first seq>); the key is recorded with the events, atomically. With ARGV[3] = 1 (the
// appends wait for replicas) a match without a commit stream gets one, committed up to the events
// it had: the new ones are committed only once WAIT confirms them.
var appendScript = goredis.NewScript(`
if ARGV[2] ~= '' then
  local was = redis.call('HGET', KEYS[2], ARGV[2])
  if was then return redis.error_reply('DUPLICATE ' .. was) end
end
local last = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)
local lastSeq = 0
if #last > 0 then lastSeq = tonumber(string.match(last[1][1], '^(%d+)')) end
local first = tonumber(ARGV[1])
if lastSeq ~= first - 1 then
  return redis.error_reply('CONFLICT ' .. lastSeq)
end
if ARGV[3] == '1' and redis.call('EXISTS', KEYS[3]) == 0 then
  redis.call('XADD', KEYS[3], lastSeq .. '-1', 's', lastSeq)
end
for i = 4, #ARGV do
  redis.call('XADD', KEYS[1], (first + i - 4) .. '-1', 'r', ARGV[i])
end
if ARGV[2] ~= '' then redis.call('HSET', KEYS[2], ARGV[2], first) end
return #ARGV - 3
`)

// Store is a Redis-backed store.Store.
type Store struct {
	c goredis.UniversalClient
	// minReplicas: an append is acknowledged only once that many replicas have it (WAIT), so a
	// failover cannot lose it; waitFor bounds the wait.
	minReplicas int
	waitFor     time.Duration
}

// Config is how the store treats replication.
type Config struct {
	// MinReplicas is how many replicas must have an append before it is acknowledged (Redis WAIT).
	// AutoReplicas: 1 when the primary has a replica when the store opens, else 0.
	MinReplicas int
	// ReplicaTimeout bounds the wait for them; an append not replicated in time is an unknown
	// outcome (504): it is on the primary, and lost if the primary is lost.
	ReplicaTimeout time.Duration
}

// AutoReplicas asks Open to look at the primary's replicas.
const AutoReplicas = -1

// Open connects to the Redis a URL names: one server, Sentinel or Cluster (url.go has the forms).
func Open(ctx context.Context, raw string) (*Store, error) {
	return OpenWith(ctx, raw, Config{MinReplicas: AutoReplicas})
}

// OpenWith is Open with the replication settings.
func OpenWith(ctx context.Context, raw string, cfg Config) (*Store, error) {
	opts, err := options(raw)
	if err != nil {
		return nil, fmt.Errorf("store %s: %w", store.Shown(raw), err)
	}
	// Each live match holds a connection in a blocking XREAD (Follow): room for a hundred
	// concurrent matches besides the posts. One XREAD over all streams is the next step.
	opts.PoolSize = 128
	c := goredis.NewUniversalClient(opts)
	s := &Store{c: c, minReplicas: cfg.MinReplicas, waitFor: cfg.ReplicaTimeout}
	if s.waitFor <= 0 {
		s.waitFor = 2 * time.Second
	}
	if err := s.Ping(ctx); err != nil {
		c.Close()
		if opts.TLSConfig != nil && len(opts.TLSConfig.Certificates) == 0 && sentAndLost(err) {
			err = fmt.Errorf("%w (over TLS, Redis asks for a client certificate unless tls-auth-clients is no: cert_file=...&key_file=...)", err)
		}
		return nil, fmt.Errorf("store %s: %w", store.Shown(raw), err)
	}
	switch {
	case s.minReplicas == AutoReplicas:
		n, err := s.replicas(ctx)
		if err != nil {
			c.Close()
			return nil, fmt.Errorf("store %s: %w", store.Shown(raw), err)
		}
		s.minReplicas = min(n, 1)
	}
	return s, nil
}

// MinReplicas is how many replicas must have an append before it is acknowledged.
func (s *Store) MinReplicas() int { return s.minReplicas }

// replicas is how many replicas the primary has now (INFO replication: connected_slaves); in a
// Cluster, the fewest any primary has.
func (s *Store) replicas(ctx context.Context) (int, error) {
	vals, err := s.primariesInfo(ctx, "replication", "connected_slaves")
	fewest := -1
	for _, v := range vals {
		if n, err := strconv.Atoi(v); err == nil && (fewest < 0 || n < fewest) {
			fewest = n
		}
	}
	return max(fewest, 0), err
}

// primariesInfo is one field of an INFO section, from the primary, or from each primary of a
// Cluster (sorted); a server without the field gives none.
func (s *Store) primariesInfo(ctx context.Context, section, field string) ([]string, error) {
	of := func(ctx context.Context, c goredis.Cmdable) (string, bool, error) {
		info, err := c.Info(ctx, section).Result()
		if err != nil {
			return "", false, fmt.Errorf("%s info: %w", section, err)
		}
		for _, l := range strings.Split(info, "\n") {
			if v, ok := strings.CutPrefix(strings.TrimSpace(l), field+":"); ok {
				return v, true, nil
			}
		}
		return "", false, nil
	}
	cc, ok := s.c.(*goredis.ClusterClient)
	if !ok {
		v, found, err := of(ctx, s.c)
		if !found {
			return nil, err
		}
		return []string{v}, err
	}
	var mu sync.Mutex
	var vals []string
	err := cc.ForEachMaster(ctx, func(ctx context.Context, c *goredis.Client) error {
		v, found, err := of(ctx, c)
		if found {
			mu.Lock()
			vals = append(vals, v)
			mu.Unlock()
		}
		return err
	})
	slices.Sort(vals)
	return vals, err
}

// primaryOf is where an append to match id and its WAIT go, together on one connection (WAIT
// counts the replicas that have that connection's writes): the store's client, or in a Cluster
// the primary of the match's slot.
func (s *Store) primaryOf(ctx context.Context, id string) (goredis.Cmdable, error) {
	cc, ok := s.c.(*goredis.ClusterClient)
	if !ok {
		return s.c, nil
	}
	c, err := cc.MasterForKey(ctx, eventsKey(id))
	if err != nil {
		return nil, fmt.Errorf("primary of %s: %w", id, err)
	}
	return c, nil
}

// Append implements store.Store.
func (s *Store) Append(ctx context.Context, id string, recs []match.Record) error {
	return s.AppendKeyed(ctx, id, "", recs)
}

// FirstSeq implements store.KeyedAppender: a batch of n found under key is confirmed on the
// replicas first (its post may have got 504), so it is readable.
func (s *Store) FirstSeq(ctx context.Context, id, key string, n int) (uint64, bool, error) {
	v, err := s.c.HGet(ctx, keysKey(id), key).Result()
	if errors.Is(err, goredis.Nil) {
		return 0, false, nil
	}
	if err != nil {
		return 0, false, fmt.Errorf("key of %s: %w", id, err)
	}
	seq, err := strconv.ParseUint(v, 10, 64)
	if err != nil {
		return 0, false, fmt.Errorf("key of %s: %w", id, err)
	}
	if err := s.confirm(ctx, id, seq+uint64(n)-1); err != nil {
		return 0, false, fmt.Errorf("key of %s: %w", id, err)
	}
	return seq, true, nil
}

// commit records that every event of match id up to seq is on enough replicas. A commit that is
// lost (the primary dies before it replicates) is harmless: its events were confirmed, and a later
// commit or a confirm covers them. One that comes after a higher one is refused by Redis (its ID
// is smaller) and not needed.
func (s *Store) commit(ctx context.Context, id string, seq uint64) {
	if s.minReplicas > 0 {
		s.c.XAdd(ctx, &goredis.XAddArgs{Stream: commitsKey(id), ID: strconv.FormatUint(seq, 10) + "-1", Values: []any{"s", seq}})
	}
}

// confirm makes sure events up to seq, written earlier perhaps by another connection, are on
// enough replicas, then commits them: a write of our own and WAIT on the same connection
// (replication is in order, so a replica that has it has everything before it).
func (s *Store) confirm(ctx context.Context, id string, seq uint64) error {
	if s.minReplicas <= 0 {
		return nil
	}
	c, err := s.primaryOf(ctx, id)
	if err != nil {
		return err
	}
	var waited *goredis.Cmd
	if _, err := c.Pipelined(ctx, func(p goredis.Pipeliner) error {
		p.Incr(ctx, nonceKey(id))
		waited = p.Do(ctx, "WAIT", s.minReplicas, s.waitFor.Milliseconds())
		return nil
	}); err != nil {
		return fmt.Errorf("confirming seq %d: %w", seq, err)
	}
	if n, _ := waited.Int(); n < s.minReplicas {
		return fmt.Errorf("%d of %d replicas after %s: %w", n, s.minReplicas, s.waitFor, store.ErrOutcomeUnknown)
	}
	s.commit(ctx, id, seq)
	return nil
}

// committed is the last seq of match id readers may see; all: the match has no commit stream
// (written without WAIT), every event is readable.
func (s *Store) committed(ctx context.Context, id string) (seq uint64, all bool, err error) {
	if s.minReplicas <= 0 {
		return 0, true, nil
	}
	last, err := s.c.XRevRangeN(ctx, commitsKey(id), "+", "-", 1).Result()
	if err != nil {
		return 0, false, fmt.Errorf("commits of %s: %w", id, err)
	}
	if len(last) == 0 {
		return 0, true, nil
	}
	seq, err = strconv.ParseUint(strings.TrimSuffix(last[0].ID, "-1"), 10, 64)
	return seq, false, err
}

// AppendKeyed implements store.KeyedAppender; key "" is a plain Append.
func (s *Store) AppendKeyed(ctx context.Context, id, key string, recs []match.Record) error {
	if len(recs) == 0 {
		return fmt.Errorf("append to %s: no records", id)
	}
	waiting := "0"
	if s.minReplicas > 0 {
		waiting = "1"
	}
	args := make([]any, 0, len(recs)+3)
	args = append(args, recs[0].Seq, key, waiting)
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
	var err error
	var replicated *goredis.Cmd
	if s.minReplicas > 0 {
		// The script and WAIT in one pipeline, so on one connection: WAIT counts the replicas that
		// have this connection's writes. EVAL, not EVALSHA: a primary promoted by a failover may
		// not have the script cached.
		var ran *goredis.Cmd
		var c goredis.Cmdable
		if c, err = s.primaryOf(ctx, id); err != nil {
			return fmt.Errorf("append to %s: %w", id, err)
		}
		_, err = c.Pipelined(ctx, func(p goredis.Pipeliner) error {
			ran = appendScript.Eval(ctx, p, []string{eventsKey(id), keysKey(id), commitsKey(id)}, args...)
			replicated = p.Do(ctx, "WAIT", s.minReplicas, s.waitFor.Milliseconds())
			return nil
		})
		if rerr := ran.Err(); rerr != nil {
			err = rerr // the script's own answer (CONFLICT) comes first
		}
	} else {
		err = appendScript.Run(ctx, s.c, []string{eventsKey(id), keysKey(id), commitsKey(id)}, args...).Err()
	}
	if err != nil && strings.HasPrefix(err.Error(), "DUPLICATE ") {
		first, _ := strconv.ParseUint(strings.TrimPrefix(err.Error(), "DUPLICATE "), 10, 64)
		// Stored before, perhaps never confirmed (its post got 504): confirm it now.
		if err := s.confirm(ctx, id, first+uint64(len(recs))-1); err != nil {
			return fmt.Errorf("append to %s: %w", id, err)
		}
		return &store.DuplicateError{First: first}
	}
	if err != nil && strings.HasPrefix(err.Error(), "CONFLICT ") {
		last, _ := strconv.ParseUint(strings.TrimPrefix(err.Error(), "CONFLICT "), 10, 64)
		if last >= recs[0].Seq {
			// Ahead of the writer: perhaps with events whose append got 504 and so are not
			// committed, which the writer cannot read to catch up. They are on the primary and
			// readers may be shown them now, once confirmed on the replicas.
			if err := s.confirm(ctx, id, last); err != nil {
				// Nothing of this append was stored: not an unknown outcome, and not a conflict
				// the writer could resolve by reading. It may be posted again.
				return fmt.Errorf("append to %s: the store has events up to seq %d not yet on enough replicas: %v", id, last, err)
			}
		}
		return &store.ConflictError{ID: id, Last: last, Want: recs[0].Seq}
	}
	if err != nil && sentAndLost(err) {
		// The script was sent and no answer came: Redis may have run it.
		return fmt.Errorf("append to %s: %w: %w", id, store.ErrOutcomeUnknown, err)
	}
	if err != nil {
		return fmt.Errorf("append to %s: %w", id, err)
	}
	if replicated != nil {
		if n, _ := replicated.Int(); n < s.minReplicas {
			return fmt.Errorf("append to %s: stored on the primary, but %d of %d replicas have it after %s: %w",
				id, n, s.minReplicas, s.waitFor, store.ErrOutcomeUnknown)
		}
		s.commit(ctx, id, recs[len(recs)-1].Seq)
	}
	if recs[0].Seq == 1 {
		// Best effort, after the append: a lost push delays the others' discovery until their next
		// scan, and a read-through answers any request for the match before that.
		s.c.XAdd(ctx, &goredis.XAddArgs{Stream: newKey, MaxLen: 10000, Approx: true, Values: []any{"id", id}})
	}
	return nil
}

// sentAndLost reports whether err can mean the command reached Redis and its answer was lost: a
// timeout, or the connection dropping under it (a primary killed mid-command). A refused
// connection never sent anything.
func sentAndLost(err error) bool {
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() || errors.Is(err, context.DeadlineExceeded) {
		return true
	}
	if errors.Is(err, syscall.ECONNREFUSED) {
		return false
	}
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, syscall.ECONNRESET) ||
		errors.Is(err, syscall.EPIPE) || errors.Is(err, net.ErrClosed)
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
	// One pipeline, not a round trip per match: the listings discover through it on every request.
	lens := make([]*goredis.IntCmd, len(ids))
	s.c.Pipelined(ctx, func(p goredis.Pipeliner) error {
		for i, id := range ids {
			lens[i] = p.XLen(ctx, eventsKey(id))
		}
		return nil
	})
	out := ids[:0]
	for i, id := range ids { // a match whose first append failed has no events: not a match
		if n, err := lens[i].Result(); err == nil && n > 0 {
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
	end := "+"
	if upTo, all, err := s.committed(ctx, id); err != nil {
		return nil, err
	} else if !all {
		if upTo <= from {
			return nil, nil
		}
		end = strconv.FormatUint(upTo, 10) + "-1"
	}
	return s.between(ctx, id, from, end)
}

// between reads match id's events after seq from, up to the entry ID end ("+": the last).
func (s *Store) between(ctx context.Context, id string, from uint64, end string) ([]match.Record, error) {
	msgs, err := s.c.XRange(ctx, eventsKey(id), strconv.FormatUint(from+1, 10)+"-1", end).Result()
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
		return fmt.Errorf("redis does not answer: %w", err)
	}
	return nil
}

// Incarnation implements store.Incarnation: the run_id of the primary (of each primary, for a
// Cluster), which a restart or a failover changes; go-redis retries a command on the new server
// without telling, so a follower's blocking read does not.
func (s *Store) Incarnation(ctx context.Context) (string, error) {
	ids, err := s.primariesInfo(ctx, "server", "run_id")
	if err == nil && len(ids) == 0 {
		err = errors.New("server info: no run_id")
	}
	return strings.Join(ids, ","), err
}

// Close implements store.Store.
func (s *Store) Close() error { return s.c.Close() }

// followCommits follows match id's commit stream: it blocks until a commit past after, then reads
// the events up to it (Events bounds them by the last commit).
func (s *Store) followCommits(ctx context.Context, id string, after uint64, block time.Duration) ([]match.Record, error) {
	if _, all, err := s.committed(ctx, id); err != nil {
		return nil, fmt.Errorf("follow %s: %w", id, err)
	} else if all { // no commit stream yet: written without WAIT so far
		if recs, err := s.Events(ctx, id, after); err != nil || len(recs) > 0 {
			return recs, err
		}
	}
	_, err := s.c.XRead(ctx, &goredis.XReadArgs{Streams: []string{commitsKey(id), strconv.FormatUint(after, 10) + "-1"},
		Count: 1, Block: block}).Result()
	if errors.Is(err, goredis.Nil) { // no commit for a while: perhaps one was lost
		if settled, err := s.settle(ctx, id); err != nil {
			return nil, fmt.Errorf("follow %s: %w", id, err)
		} else if !settled {
			return nil, nil
		}
	} else if err != nil {
		return nil, fmt.Errorf("follow %s: %w", id, err)
	}
	return s.Events(ctx, id, after)
}

// settle commits the events of match id above its last commit, once WAIT confirms them, and
// reports whether there were any. A commit is written after its WAIT and not waited for itself,
// so a failover can lose the newest one while the events it covered survive: the last events of
// a match would stay unreadable, since no later commit comes. Events there whose post got 504
// are shown too, as a retry under their key would make them.
func (s *Store) settle(ctx context.Context, id string) (bool, error) {
	// The last event and the last commit in one round trip: this runs on every quiet wait.
	var events, commits *goredis.XMessageSliceCmd
	if _, err := s.c.Pipelined(ctx, func(p goredis.Pipeliner) error {
		events = p.XRevRangeN(ctx, eventsKey(id), "+", "-", 1)
		commits = p.XRevRangeN(ctx, commitsKey(id), "+", "-", 1)
		return nil
	}); err != nil {
		return false, fmt.Errorf("last event and commit of %s: %w", id, err)
	}
	last, lastCommit := events.Val(), commits.Val()
	if len(last) == 0 || len(lastCommit) == 0 { // no events, or written without WAIT: all readable
		return false, nil
	}
	seq, err := strconv.ParseUint(strings.TrimSuffix(last[0].ID, "-1"), 10, 64)
	if err != nil {
		return false, fmt.Errorf("events of %s: entry %s: %w", id, last[0].ID, err)
	}
	upTo, err := strconv.ParseUint(strings.TrimSuffix(lastCommit[0].ID, "-1"), 10, 64)
	if err != nil || upTo >= seq {
		return false, err
	}
	if err := s.confirm(ctx, id, seq); err != nil {
		return false, nil // not on the replicas yet: the next wait looks again
	}
	return true, nil
}

// Follow implements store.Follower with a blocking XREAD from the entry after seq after: a node that
// blips loses nothing, it reads on from where it was.
func (s *Store) Follow(ctx context.Context, id string, after uint64, block time.Duration) ([]match.Record, error) {
	if s.minReplicas > 0 {
		return s.followCommits(ctx, id, after, block)
	}
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
