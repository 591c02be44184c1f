package main

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"matchstream/daemon/api"
	"matchstream/daemon/match"
)

// A post answered 504 (the store may have kept it) is read back: found, it is not posted again;
// not found, it is posted again; the read-back retries while the store cannot answer.
func TestWatcherReadsBackAfter504(t *testing.T) {
	t.Parallel()
	at := time.Date(2011, 9, 10, 21, 5, 0, 0, time.UTC)
	goal := match.Event{At: at, Kind: match.KindGoal, Team: "elp", Player: &match.Player{Number: 9}}
	for _, tc := range []struct {
		name   string
		stored bool
		posts  int32
	}{
		{"stored before the answer was lost", true, 1},
		{"lost with the primary", false, 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var posts, reads atomic.Int32
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				switch r.Method {
				case http.MethodPost:
					if posts.Add(1) == 1 {
						w.WriteHeader(http.StatusGatewayTimeout)
						json.NewEncoder(w).Encode(api.ErrorBody{Error: "outcome unknown"})
						return
					}
					w.WriteHeader(http.StatusCreated)
					json.NewEncoder(w).Encode(api.PostResult{Seq: 8, Seqs: []uint64{8}})
				case http.MethodGet:
					if r.URL.Query().Get("from") != "7" {
						t.Errorf("read back from %q, want after the last seq posted (7)", r.URL.Query().Get("from"))
					}
					if reads.Add(1) == 1 { // the store is still failing over
						w.WriteHeader(http.StatusServiceUnavailable)
						return
					}
					recs := []match.Record{}
					if tc.stored {
						recs = append(recs, match.Record{Seq: 8, Event: goal})
					}
					json.NewEncoder(w).Encode(recs)
				}
			}))
			defer srv.Close()
			res, err := postEvent(context.Background(), srv.Client(), srv.URL+"/matches/m/events", "tok", goal, 7, 10*time.Second, func(string) {})
			if err != nil || res.Seq != 8 {
				t.Fatalf("postEvent: %+v, %v", res, err)
			}
			if posts.Load() != tc.posts {
				t.Fatalf("%d posts, want %d", posts.Load(), tc.posts)
			}
		})
	}
}
