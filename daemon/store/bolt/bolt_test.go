package bolt_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"matchstream/daemon/match"
	"matchstream/daemon/store"
	"matchstream/daemon/store/bolt"
	"matchstream/daemon/store/storetest"
)

func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) (store.Store, func() store.Store) {
		path := filepath.Join(t.TempDir(), "m.db")
		open := func() store.Store {
			s, err := bolt.Open(path, time.Second)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { s.Close() })
			return s
		}
		return open(), open
	})
}

func TestSecondOpenTimesOut(t *testing.T) {
	path := filepath.Join(t.TempDir(), "m.db")
	s, err := bolt.Open(path, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, err := bolt.Open(path, 50*time.Millisecond); err == nil {
		t.Fatal("second Open of a locked store succeeded")
	}
}

// fill writes a store with a few matches of events and closes it.
func fill(t *testing.T, path string) {
	t.Helper()
	s, err := bolt.Open(path, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	at := time.Date(2011, 9, 10, 21, 0, 0, 0, time.UTC)
	for m := range 3 {
		for seq := uint64(1); seq <= 50; seq++ {
			rec := match.Record{Seq: seq, Event: match.Event{At: at, Kind: match.KindComment, Comment: strings.Repeat("x", 200)}}
			if err := s.Append(context.Background(), fmt.Sprintf("m%d", m), []match.Record{rec}); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
}

// A damaged store file is refused with one error that says what to do, never a panic, and an
// empty file is not taken for a new store: the matches it held would silently be gone.
func TestDamagedFileIsRefused(t *testing.T) {
	page := os.Getpagesize()
	for _, tc := range []struct {
		name   string
		damage func(t *testing.T, path string)
	}{
		{"zero length", func(t *testing.T, path string) { os.Truncate(path, 0) }},
		{"truncated mid-page", func(t *testing.T, path string) { os.Truncate(path, int64(page)+100) }},
		{"both meta pages", func(t *testing.T, path string) { scribble(t, path, 0, 2*page, 1) }},
		{"freelist page", func(t *testing.T, path string) { scribble(t, path, 2*page, page, 2) }},
		{"every page after the metas", func(t *testing.T, path string) { scribble(t, path, 2*page, 64*page, 3) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "m.db")
			fill(t, path)
			tc.damage(t, path)
			var s store.Store
			var err error
			func() {
				defer func() {
					if p := recover(); p != nil {
						t.Fatalf("Open panicked: %v", p)
					}
				}()
				s, err = bolt.Open(path, time.Second)
				if err == nil {
					// What Open let through must not panic on use either.
					_, err = s.Matches(context.Background())
					for i := 0; err == nil && i < 3; i++ {
						_, err = s.Events(context.Background(), fmt.Sprintf("m%d", i), 0)
					}
					s.Close()
				}
			}()
			if err == nil {
				t.Fatal("a damaged store opened and read without an error")
			}
			msg := err.Error()
			if !strings.Contains(msg, path) || !strings.Contains(msg, "restore") || !strings.Contains(msg, "move") {
				t.Fatalf("the error does not say which file and what to do: %v", err)
			}
			if strings.Contains(msg, "\n") {
				t.Fatalf("the error is more than one line: %q", msg)
			}
		})
	}
}

// scribble overwrites n bytes at off with pseudo-random bytes.
func scribble(t *testing.T, path string, off, n int, seed uint64) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	r := rand.New(rand.NewPCG(seed, seed))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	if _, err := f.WriteAt(b, int64(off)); err != nil {
		t.Fatal(err)
	}
}

// doctor's probe says the same of a damaged file, without a panic.
func TestProbeDamaged(t *testing.T) {
	path := filepath.Join(t.TempDir(), "m.db")
	fill(t, path)
	scribble(t, path, 2*os.Getpagesize(), 64*os.Getpagesize(), 3)
	if _, err := bolt.Probe(path, time.Second); err == nil || !strings.Contains(err.Error(), "damaged") {
		t.Fatalf("Probe = %v", err)
	}
	os.Truncate(path, 0)
	if _, err := bolt.Probe(path, time.Second); err == nil || !strings.Contains(err.Error(), "empty") {
		t.Fatalf("Probe of an empty file = %v", err)
	}
}
