// Package store keeps matches and their events durably. Store is the one interface of the daemon:
// the embedded bbolt implementation (package store/bolt, the single-node default) and the Redis one
// (multi-node) both satisfy it, and the storetest suite checks both the same way.
//
// A match is its ordered events; its state is recovered by folding them (package match), so the
// store never has two truths to keep in step.
package store

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"

	"matchstream/daemon/match"
)

// ErrConflict is returned by Append when the first record's seq is not the match's next one: another
// writer appended in between. The caller reloads and retries or reports it.
var ErrConflict = errors.New("sequence conflict")

// ConflictError is the ErrConflict of an append whose first seq was not the store's last + 1: Last
// is the store's last seq. A Last below the writer's own last means the store is behind the writer
// (a shared store that lost events it had acknowledged), not that another writer came first.
type ConflictError struct {
	ID         string
	Last, Want uint64 // Want: the seq the append started at
}

func (e *ConflictError) Error() string {
	return fmt.Sprintf("append to %s: the store's last seq is %d, the append starts at %d: %v", e.ID, e.Last, e.Want, ErrConflict)
}

func (e *ConflictError) Unwrap() error { return ErrConflict }

// ErrOutcomeUnknown is returned by Append when the store may have applied the append but did not
// say so (a shared store that stopped answering mid-command). Retrying blindly could store the
// events twice; the caller must look at the match's events first.
var ErrOutcomeUnknown = errors.New("outcome unknown")

// Store is durable match storage.
type Store interface {
	// Append stores records of match id atomically; recs[0].Seq must be the match's last seq + 1
	// and the rest consecutive. It returns only once the records are durable.
	Append(ctx context.Context, id string, recs []match.Record) error
	// Matches lists the ids of every stored match.
	Matches(ctx context.Context) ([]string, error)
	// Events returns the records of match id with seq > from, in order.
	Events(ctx context.Context, id string, from uint64) ([]match.Record, error)
	// Ping reports whether the store answers.
	Ping(ctx context.Context) error
	Close() error
}

// CheckAppend validates the seq numbering of recs against the match's last seq; both backends use it.
func CheckAppend(id string, last uint64, recs []match.Record) error {
	if len(recs) == 0 {
		return fmt.Errorf("append to %s: no records", id)
	}
	if recs[0].Seq != last+1 {
		return &ConflictError{ID: id, Last: last, Want: recs[0].Seq}
	}
	for i, r := range recs {
		if r.Seq != last+1+uint64(i) {
			return fmt.Errorf("append to %s: record %d has seq %d, want %d: %w", id, i, r.Seq, last+1+uint64(i), ErrConflict)
		}
	}
	return nil
}

// Shown is a store URL with its passwords hidden (the userinfo's, and a Sentinel URL's password
// parameters), for errors and logs.
func Shown(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "(unparsable store URL)"
	}
	q := u.Query()
	hidden := false
	for k := range q {
		if strings.Contains(strings.ToLower(k), "password") {
			q.Set(k, "xxxxx")
			hidden = true
		}
	}
	if hidden {
		u.RawQuery = q.Encode()
	}
	return u.Redacted()
}

// ParseURL splits a store URL into its scheme and the rest, rejecting what no backend serves.
func ParseURL(raw string) (*url.URL, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return nil, fmt.Errorf("store URL %q: %w", Shown(raw), err)
	}
	switch u.Scheme {
	case "bolt":
		if u.Path == "" && u.Opaque == "" {
			return nil, fmt.Errorf("store URL %q: bolt needs a file path, e.g. bolt:///var/lib/matchstream/matchstream.db", Shown(raw))
		}
	case "redis", "rediss", "redis+sentinel", "rediss+sentinel", "redis+cluster", "rediss+cluster":
	default:
		return nil, fmt.Errorf("store URL %q: scheme must be bolt:// (embedded), redis:// or rediss:// (one server), redis+sentinel:// or redis+cluster://", Shown(raw))
	}
	return u, nil
}

// Follower is a store other nodes append to: Follow blocks up to block for records of match id with
// seq > after, and returns what it found (none when the time is up). Only a shared store implements
// it; the registry then follows the matches it serves, so an event posted to any node reaches the
// subscribers of every node, in seq order, exactly once.
type Follower interface {
	Follow(ctx context.Context, id string, after uint64, block time.Duration) ([]match.Record, error)
}

// KeyedAppender is a store that appends a batch at most once per key: a post retried after an
// unknown outcome (a primary lost mid-append) finds its first append instead of storing the events
// twice. AppendKeyed answers a *DuplicateError for a key appended before; FirstSeq looks up a key
// whose batch has n records.
type KeyedAppender interface {
	AppendKeyed(ctx context.Context, id, key string, recs []match.Record) error
	FirstSeq(ctx context.Context, id, key string, n int) (seq uint64, found bool, err error)
}

// DuplicateError: the key was appended before, its first record as seq First.
type DuplicateError struct{ First uint64 }

func (e *DuplicateError) Error() string {
	return fmt.Sprintf("appended before, from seq %d", e.First)
}

// Announcer is a shared store that pushes the id of each match whose first event was just stored,
// so other nodes know it at once rather than at their next scan. NewMatches blocks up to block for
// ids announced after cursor ("" = from now on) and returns them and the cursor to go on from.
type Announcer interface {
	NewMatches(ctx context.Context, cursor string, block time.Duration) (ids []string, next string, err error)
}

// Incarnation is a shared store that can say when it may have come back with less than it
// acknowledged: Incarnation changes whenever the server that answers does (a restart, a
// failover). The registry then checks its matches against the store (live.Registry.Check).
type Incarnation interface {
	Incarnation(ctx context.Context) (string, error)
}

// NodeLoad is what a node tells the others about itself: where clients reach it and how loaded
// each of its stream ports is.
type NodeLoad struct {
	ID      string        `json:"id"`
	Host    string        `json:"host"`
	Ports   map[int]int64 `json:"ports"` // stream port → open connections
	Expires time.Time     `json:"expires"`
}

// Presence is a shared store that nodes announce themselves in, so any node's /connect can send a
// client to the least-loaded port of the whole cluster without a load balancer.
type Presence interface {
	Announce(ctx context.Context, n NodeLoad, ttl time.Duration) error
	Nodes(ctx context.Context) ([]NodeLoad, error)
	Leave(ctx context.Context, id string) error
}
