package main

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"matchstream/daemon/api"
	"matchstream/daemon/match"
)

// A post answered 504 (the store may have kept it) is posted again under the same idempotency
// key, through a 503 while the store fails over; each event of a file has a key of its own.
func TestWatcherRetries504UnderTheSameKey(t *testing.T) {
	t.Parallel()
	at := time.Date(2011, 9, 10, 21, 5, 0, 0, time.UTC)
	goal := match.Event{At: at, Kind: match.KindGoal, Team: "elp", Player: &match.Player{Number: 9}}
	var mu sync.Mutex
	var keys []string
	answers := []int{http.StatusGatewayTimeout, http.StatusServiceUnavailable, http.StatusCreated}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		keys = append(keys, r.Header.Get("Idempotency-Key"))
		code := answers[min(len(keys), len(answers))-1]
		mu.Unlock()
		w.WriteHeader(code)
		if code == http.StatusCreated {
			json.NewEncoder(w).Encode(api.PostResult{Seq: 8, Seqs: []uint64{8}})
		}
	}))
	defer srv.Close()
	var said []string
	res, err := postEvent(context.Background(), srv.Client(), srv.URL+"/matches/m/events", "tok", goal, 12, 10*time.Second,
		func(why string) { said = append(said, why) })
	if err != nil || res.Seq != 8 {
		t.Fatalf("postEvent: %+v, %v", res, err)
	}
	if len(keys) != 3 || keys[0] == "" || keys[1] != keys[0] || keys[2] != keys[0] {
		t.Fatalf("keys sent: %q, want the same one three times", keys)
	}
	if len(said) != 2 {
		t.Fatalf("retries said: %q", said)
	}
	// Another line of the file, or the same event on another line, has another key.
	first := keys[0]
	keys = nil
	answers = []int{http.StatusCreated}
	postEvent(context.Background(), srv.Client(), srv.URL+"/matches/m/events", "tok", goal, 13, time.Second, func(string) {})
	if len(keys) != 1 || keys[0] == "" || keys[0] == first {
		t.Fatalf("second post's key: %q", keys)
	}
}
