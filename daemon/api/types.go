package api

import (
	"matchstream/daemon/hub"
	"matchstream/daemon/live"
	"matchstream/daemon/match"
)

// The API's JSON bodies. Tools that read the API (top, client, bench) decode these same types.

// Summary is a match as GET /matches lists it.
type Summary struct {
	ID          string       `json:"id"`
	Home        string       `json:"home"`
	Visit       string       `json:"visit"`
	HomeScore   int          `json:"home_score"`
	VisitScore  int          `json:"visit_score"`
	Period      match.Period `json:"period"`
	State       string       `json:"state"` // live or ended
	Seq         uint64       `json:"seq"`
	StartDate   string       `json:"start_date"`
	Subscribers int          `json:"subscribers"`
}

// SummaryOf is a listed match's JSON form.
func SummaryOf(l live.Summary) Summary {
	s := &l.State
	state := "live"
	if s.Ended() {
		state = "ended"
	}
	return Summary{ID: s.ID, Home: s.Home, Visit: s.Visit, HomeScore: s.HomeScore, VisitScore: s.VisitScore,
		Period: s.Period, State: state, Seq: s.Seq, StartDate: s.StartDate, Subscribers: l.Subscribers}
}

// Summaries is the body of GET /matches, sorted by id.
func Summaries(reg *live.Registry) []Summary {
	list := reg.List()
	out := make([]Summary, len(list))
	for i, l := range list {
		out[i] = SummaryOf(l)
	}
	return out
}

// Poll is the body of GET /matches/{id}/poll: the events after the seq asked for (none if it timed
// out), the match's last seq and whether it is over, so a client knows where to poll from and
// when to stop.
type Poll struct {
	Seq    uint64         `json:"seq"`
	Ended  bool           `json:"ended"`
	Events []match.Record `json:"events"`
}

// Queue is one subscriber's backlog and its match, as GET /debug/queues lists them.
type Queue struct {
	Match string `json:"match"`
	hub.Queue
}

func queuesOf(qs []live.Queue) []Queue {
	out := make([]Queue, len(qs))
	for i, q := range qs {
		out[i] = Queue{Match: q.Match, Queue: q.Queue}
	}
	return out
}
