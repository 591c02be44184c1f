package api

import (
	"strconv"
	"strings"

	"github.com/valyala/fasthttp"

	"matchstream/daemon/match"
)

// The original's read API. Its errors were bare status codes, so ours are too on these paths.

// V1Match is the original's match JSON: dashes in the keys, players as {"number": "name"}.
type V1Match struct {
	Home         string            `json:"home"`
	HomePlayers  map[string]string `json:"home-players"`
	HomeScore    int               `json:"home-score"`
	Visit        string            `json:"visit"`
	VisitPlayers map[string]string `json:"visit-players"`
	VisitScore   int               `json:"visit-score"`
	Period       match.Period      `json:"period"`
	StartTime    string            `json:"start_time"`
}

// V1Event is one entry of the original's history.
type V1Event struct {
	Timestamp int64          `json:"timestamp"` // ms since year 0, the original's unit
	Kind      match.Kind     `json:"kind"`
	Data      map[string]any `json:"data"`
}

// erlangEpochMs is 1970-01-01 in milliseconds since year 0 (Erlang's calendar epoch).
const erlangEpochMs = 62167219200000

func (h *Handler) serveV1(ctx *fasthttp.RequestCtx, rest string) {
	switch {
	case rest == "checkin":
		c, _, _ := h.pick(ctx, false)
		writeJSON(ctx, fasthttp.StatusOK, map[string]int{"port": c.Port})
	case rest == "matches":
		h.discoverAll(ctx)
		ids := []string{}
		for _, s := range h.reg.List() {
			ids = append(ids, s.State.ID)
		}
		writeJSON(ctx, fasthttp.StatusOK, ids)
	case strings.HasPrefix(rest, "match/"):
		id, sub, _ := strings.Cut(strings.TrimPrefix(rest, "match/"), "/")
		h.discover(ctx, id)
		switch sub {
		case "":
			s, ok := h.reg.State(id)
			if !ok {
				ctx.SetStatusCode(fasthttp.StatusNotFound)
				return
			}
			writeJSON(ctx, fasthttp.StatusOK, V1MatchOf(&s))
		case "history":
			recs, ok, err := h.reg.Events(ctx, id, 0)
			if !ok {
				ctx.SetStatusCode(fasthttp.StatusNotFound)
				return
			}
			if err != nil {
				ctx.SetStatusCode(fasthttp.StatusServiceUnavailable)
				return
			}
			out := make([]V1Event, len(recs))
			for i := range recs {
				out[i] = V1EventOf(&recs[i].Event)
			}
			writeJSON(ctx, fasthttp.StatusOK, out)
		default:
			ctx.SetStatusCode(fasthttp.StatusNotFound)
		}
	default:
		ctx.SetStatusCode(fasthttp.StatusNotFound)
	}
}

func playerMap(ps ...match.Player) map[string]string {
	m := make(map[string]string, len(ps))
	for _, p := range ps {
		m[strconv.Itoa(p.Number)] = p.Name
	}
	return m
}

// V1MatchOf renders a state as the original's match JSON.
func V1MatchOf(s *match.State) V1Match {
	return V1Match{Home: s.Home, HomePlayers: playerMap(s.HomePlayers...), HomeScore: s.HomeScore,
		Visit: s.Visit, VisitPlayers: playerMap(s.VisitPlayers...), VisitScore: s.VisitScore,
		Period: s.Period, StartTime: s.StartDate}
}

// V1EventOf renders an event as the original's history entry.
func V1EventOf(e *match.Event) V1Event {
	d := map[string]any{}
	set := func(k, v string) {
		if v != "" {
			d[k] = v
		}
	}
	setPlayer := func(k string, p *match.Player) {
		if p != nil {
			d[k] = playerMap(*p)
		}
	}
	set("home", e.Home)
	set("visit", e.Visit)
	set("start_date", e.StartDate)
	if e.HomePlayers != nil {
		d["home_players"] = playerMap(e.HomePlayers...)
	}
	if e.VisitPlayers != nil {
		d["visit_players"] = playerMap(e.VisitPlayers...)
	}
	set("team", e.Team)
	setPlayer("player", e.Player)
	set("player_team", e.PlayerTeam)
	set("card", e.Card)
	setPlayer("player_out", e.PlayerOut)
	setPlayer("player_in", e.PlayerIn)
	set("comment", e.Comment)
	return V1Event{Timestamp: e.At.UnixMilli() + erlangEpochMs, Kind: e.Kind, Data: d}
}
