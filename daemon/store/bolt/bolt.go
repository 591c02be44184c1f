// Package bolt is the embedded Store: one bbolt file under the state directory, the default for a
// single node. Each match is a bucket whose keys are big-endian seqs and whose values are the
// records' JSON, so events list in seq order by a plain cursor walk.
package bolt

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	bbolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"

	"matchstream/daemon/match"
	"matchstream/daemon/store"
)

var matchesBucket = []byte("matches")

// Store is a bbolt-backed store.Store.
type Store struct {
	db   *bbolt.DB
	path string
}

// Open opens (creating if needed) the store file at path. A second daemon on the same file waits
// up to timeout for the lock and then fails, rather than hanging forever.
//
// A damaged file is refused with an error that names it and says what to do, never a panic
// (bbolt panics on a page it cannot make sense of). An empty file is damage too, not a new store:
// it can only be a store that lost its contents, and serving it empty would hide that.
func Open(path string, timeout time.Duration) (s *Store, err error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
		return nil, fmt.Errorf("open store %s: %w", path, err)
	}
	if fi, err := os.Stat(path); err == nil && fi.Size() == 0 {
		return nil, damaged(path, errors.New("the file is empty"))
	}
	var db *bbolt.DB
	defer func() {
		if p := recover(); p != nil {
			if db != nil {
				func() { defer func() { recover() }(); db.Close() }()
			}
			s, err = nil, damaged(path, fmt.Errorf("%v", p))
		}
	}()
	db, err = bbolt.Open(path, 0o600, &bbolt.Options{Timeout: timeout})
	if err != nil {
		var pe *fs.PathError
		switch {
		case errors.Is(err, berrors.ErrTimeout):
			return nil, fmt.Errorf("open store %s: locked by another process (is a daemon already running on it?)", path)
		case errors.As(err, &pe):
			return nil, fmt.Errorf("open store %s: %w", path, err)
		}
		return nil, damaged(path, err) // what bbolt says of its own format: invalid, checksum, size
	}
	err = db.Update(func(tx *bbolt.Tx) error {
		_, err := tx.CreateBucketIfNotExists(matchesBucket)
		return err
	})
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("open store %s: %w", path, err)
	}
	return &Store{db: db, path: path}, nil
}

// damaged is the error for a store file bbolt cannot read, with what the operator can do.
func damaged(path string, why error) error {
	return fmt.Errorf("store %s is damaged (%s): restore it from a backup, or move it away (mv %s %s.damaged) to start with an empty store",
		path, strings.ReplaceAll(why.Error(), "\n", " "), path, path)
}

// safely runs f, turning a bbolt panic on a damaged page into an error.
func (s *Store) safely(f func() error) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = damaged(s.path, fmt.Errorf("%v", p))
		}
	}()
	return f()
}

func (s *Store) view(f func(*bbolt.Tx) error) error {
	return s.safely(func() error { return s.db.View(f) })
}

func (s *Store) update(f func(*bbolt.Tx) error) error {
	return s.safely(func() error { return s.db.Update(f) })
}

func key(seq uint64) []byte {
	var k [8]byte
	binary.BigEndian.PutUint64(k[:], seq)
	return k[:]
}

// Append implements store.Store. bbolt fsyncs on commit, so a nil return means durable.
func (s *Store) Append(_ context.Context, id string, recs []match.Record) error {
	return s.update(func(tx *bbolt.Tx) error {
		b, err := tx.Bucket(matchesBucket).CreateBucketIfNotExists([]byte(id))
		if err != nil {
			return fmt.Errorf("append to %s: %w", id, err)
		}
		var last uint64
		if k, _ := b.Cursor().Last(); k != nil {
			last = binary.BigEndian.Uint64(k)
		}
		if err := store.CheckAppend(id, last, recs); err != nil {
			return err
		}
		for _, r := range recs {
			v, err := json.Marshal(r)
			if err != nil {
				return fmt.Errorf("append to %s: %w", id, err)
			}
			if err := b.Put(key(r.Seq), v); err != nil {
				return fmt.Errorf("append to %s: %w", id, err)
			}
		}
		return nil
	})
}

// Matches implements store.Store.
func (s *Store) Matches(_ context.Context) ([]string, error) {
	var ids []string
	err := s.view(func(tx *bbolt.Tx) error {
		return tx.Bucket(matchesBucket).ForEachBucket(func(k []byte) error {
			ids = append(ids, string(k))
			return nil
		})
	})
	return ids, err
}

// Events implements store.Store.
func (s *Store) Events(_ context.Context, id string, from uint64) ([]match.Record, error) {
	var recs []match.Record
	if from == ^uint64(0) {
		return nil, nil
	}
	err := s.view(func(tx *bbolt.Tx) error {
		b := tx.Bucket(matchesBucket).Bucket([]byte(id))
		if b == nil {
			return nil
		}
		c := b.Cursor()
		for k, v := c.Seek(key(from + 1)); k != nil; k, v = c.Next() {
			var r match.Record
			if err := json.Unmarshal(v, &r); err != nil {
				return fmt.Errorf("events of %s: record %d: %w", id, binary.BigEndian.Uint64(k), err)
			}
			recs = append(recs, r)
		}
		return nil
	})
	return recs, err
}

// Ping implements store.Store: a read transaction proves the file is open and readable.
func (s *Store) Ping(_ context.Context) error {
	return s.view(func(tx *bbolt.Tx) error { return nil })
}

// Close implements store.Store.
func (s *Store) Close() error { return s.db.Close() }

// Probe checks a store file without creating it or taking it from a running daemon: it says whether
// the file answers, is held by a daemon, or does not exist yet (the daemon will create it).
func Probe(path string, timeout time.Duration) (found string, err error) {
	defer func() {
		if p := recover(); p != nil {
			found, err = "", damaged(path, fmt.Errorf("%v", p))
		}
	}()
	fi, err := os.Stat(path)
	if err == nil && fi.Size() == 0 {
		return "", damaged(path, errors.New("the file is empty"))
	}
	if errors.Is(err, os.ErrNotExist) {
		dir := filepath.Dir(path)
		if st, err := os.Stat(dir); err != nil || !st.IsDir() {
			return fmt.Sprintf("absent; %s will be created by the daemon", dir), nil
		}
		return "absent; the daemon creates it in " + dir, nil
	}
	db, err := bbolt.Open(path, 0o600, &bbolt.Options{ReadOnly: true, Timeout: timeout})
	var pe *fs.PathError
	switch {
	case errors.Is(err, berrors.ErrTimeout):
		return "held by the running daemon", nil
	case errors.As(err, &pe):
		return "", fmt.Errorf("store %s: %w", path, err)
	case err != nil:
		return "", damaged(path, err)
	}
	defer db.Close()
	n := 0
	err = db.View(func(tx *bbolt.Tx) error {
		if b := tx.Bucket(matchesBucket); b != nil {
			return b.ForEachBucket(func([]byte) error { n++; return nil })
		}
		return nil
	})
	if err != nil {
		return "", fmt.Errorf("store %s: %w", path, err)
	}
	return fmt.Sprintf("answers, %d matches", n), nil
}
