// Package daemon is `matchstream serve` as one Server object (server.go) wired from its parts:
// listeners, store, live matches, the stream connection layer and the API. It owns every goroutine
// it starts and stops them on shutdown. The subpackages each do one thing; nothing here reads flags
// or the environment (the CLI builds Config, systemd's part included), and no file but the watcher
// token and the store the Config names.
package daemon

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"matchstream/daemon/store"
	"matchstream/daemon/store/bolt"
	"matchstream/daemon/store/redis"
)

// OpenStore opens the store a URL names; a Redis store waits for replicas as it finds them
// (redis.AutoReplicas).
func OpenStore(raw string) (store.Store, error) { return OpenStoreWith(raw, redis.AutoReplicas) }

// OpenStoreWith opens the store a URL names; a Redis store acknowledges an append once
// minReplicas replicas have it (redis.AutoReplicas: 1 if the primary has a replica, else 0).
func OpenStoreWith(raw string, minReplicas int) (store.Store, error) {
	u, err := store.ParseURL(raw)
	if err != nil {
		return nil, err
	}
	switch u.Scheme {
	case "bolt":
		return bolt.Open(boltPath(u), 5*time.Second)
	case "redis", "rediss", "redis+sentinel", "rediss+sentinel", "redis+cluster", "rediss+cluster":
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		return redis.OpenWith(ctx, raw, redis.Config{MinReplicas: minReplicas})
	default:
		return nil, fmt.Errorf("store %s: the %s backend is not in this build yet (use bolt:// or redis://)", store.Shown(raw), u.Scheme)
	}
}

// ProbeStore checks the store a URL names without changing it (for doctor).
func ProbeStore(raw string) (string, error) {
	u, err := store.ParseURL(raw)
	if err != nil {
		return "", err
	}
	if u.Scheme == "bolt" {
		return bolt.Probe(boltPath(u), time.Second)
	}
	s, err := OpenStore(raw)
	if err != nil {
		return "", err
	}
	defer s.Close()
	return "answers", nil
}

func boltPath(u *url.URL) string {
	if u.Host != "" { // bolt://relative/path.db
		return filepath.Join(u.Host, u.Path)
	}
	return u.Path
}

// WatcherToken returns the token in path, creating the file with a random token when it does not
// exist, so a fresh install can post events without a manual step and the token never sits in a
// unit file or a process list.
func WatcherToken(path string, log *slog.Logger) (string, error) {
	b, err := os.ReadFile(path)
	if err == nil {
		tok := strings.TrimSpace(string(b))
		if tok == "" {
			return "", fmt.Errorf("watcher token file %s is empty", path)
		}
		return tok, nil
	}
	if !errors.Is(err, os.ErrNotExist) {
		return "", fmt.Errorf("read watcher token: %w", err)
	}
	raw := make([]byte, 24)
	rand.Read(raw)
	tok := hex.EncodeToString(raw)
	if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
		return "", fmt.Errorf("create watcher token: %w", err)
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o640)
	if err != nil {
		return "", fmt.Errorf("create watcher token: %w", err)
	}
	_, err = f.WriteString(tok + "\n")
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return "", fmt.Errorf("create watcher token: %w", err)
	}
	log.Info("generated a watcher token", "file", path)
	return tok, nil
}
