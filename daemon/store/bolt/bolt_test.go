package bolt_test

import (
	"path/filepath"
	"testing"
	"time"

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
