package redis_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"matchstream/daemon/store"
	"matchstream/daemon/store/redis"
	"matchstream/daemon/store/storetest"
)

func TestConformance(t *testing.T) {
	url := storetest.RedisServer(t)
	db := 0
	storetest.Run(t, func(t *testing.T) (store.Store, func() store.Store) {
		db++ // every subtest on a fresh database of the same server
		u := strings.TrimSuffix(url, "/0") + fmt.Sprintf("/%d", db)
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
