package match_test

import (
	"bufio"
	"os"
	"strings"
	"testing"
	"time"

	"matchstream/daemon/match"
)

func sample(t testing.TB) []match.Event {
	t.Helper()
	f, err := os.Open("../../testdata/matches/elp-tig-2011-09-10.jsonl")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var evs []match.Event
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		e, err := match.DecodeEvent(sc.Bytes())
		if err != nil {
			t.Fatal(err)
		}
		evs = append(evs, e)
	}
	return evs
}

func TestSampleMatch(t *testing.T) {
	var s match.State
	for i, e := range sample(t) {
		if err := s.Apply(&e); err != nil {
			t.Fatalf("event %d: %v", i+1, err)
		}
		if s.Seq != uint64(i+1) {
			t.Fatalf("seq %d after event %d", s.Seq, i+1)
		}
		if i == 0 && (!s.Live() || s.Period != match.First || s.ID != "elp-tig-2011-09-10") {
			t.Fatalf("after start: %+v", s)
		}
	}
	if s.HomeScore != 1 || s.VisitScore != 3 {
		t.Errorf("score %d-%d, want 1-3 (own goal counts for elp)", s.HomeScore, s.VisitScore)
	}
	if !s.Ended() || s.Live() {
		t.Errorf("period %s, want ended", s.Period)
	}
	// Albil sent off: 10 left for elp; tig made three substitutions and keeps 11.
	if len(s.HomePlayers) != 10 || len(s.VisitPlayers) != 11 {
		t.Errorf("on the pitch: %d and %d", len(s.HomePlayers), len(s.VisitPlayers))
	}
	for _, p := range s.HomePlayers {
		if p.Number == 25 || p.Number == 18 || p.Number == 19 || p.Number == 11 {
			t.Errorf("%v should be off the pitch", p)
		}
	}
}

func TestApplyRejects(t *testing.T) {
	at := time.Date(2011, 9, 10, 21, 0, 0, 0, time.UTC)
	started := func() match.State {
		var s match.State
		start := sample(t)[0]
		if err := s.Apply(&start); err != nil {
			t.Fatal(err)
		}
		return s
	}
	p := func(n int) *match.Player { return &match.Player{Number: n} }
	ended := func() match.State {
		s := started()
		if err := s.Apply(&match.Event{At: at.Add(time.Hour), Kind: match.KindStop}); err != nil {
			t.Fatal(err)
		}
		return s
	}
	for _, tc := range []struct {
		name  string
		state func() match.State
		ev    match.Event
		want  string
	}{
		{"unknown kind", started, match.Event{At: at.Add(time.Hour), Kind: "dance"}, `unknown event kind "dance"`},
		{"no kind", started, match.Event{At: at.Add(time.Hour)}, `no "kind"`},
		{"unknown team", started, match.Event{At: at.Add(time.Hour), Kind: match.KindGoal, Team: "boc", Player: p(7)}, `unknown team "boc"`},
		{"player not on pitch", started, match.Event{At: at.Add(time.Hour), Kind: match.KindShot, Team: "tig", Player: p(99)}, "player 99 is not on the pitch for tig"},
		{"wrong name", started, match.Event{At: at.Add(time.Hour), Kind: match.KindShot, Team: "tig", Player: &match.Player{Number: 7, Name: "Messi"}}, "is Luna, not Messi"},
		{"event after stop", ended, match.Event{At: at.Add(2 * time.Hour), Kind: match.KindComment, Comment: "late"}, "has ended"},
		{"time backwards", started, match.Event{At: at, Kind: match.KindCorner, Team: "elp", Player: p(9)}, "goes back in time"},
		{"no time", started, match.Event{Kind: match.KindStop}, `no "at"`},
		{"before start", func() match.State { return match.State{} }, match.Event{At: at, Kind: match.KindGoal, Team: "elp", Player: p(9)}, "first event must be start"},
		{"second start", started, sample(t)[0], "already started"},
		{"bad card", started, match.Event{At: at.Add(time.Hour), Kind: match.KindCard, Team: "elp", Card: "green", Player: p(9)}, `card must be "yellow" or "red"`},
		{"sub in already on", started, match.Event{At: at.Add(time.Hour), Kind: match.KindSubstitution, Team: "elp", PlayerOut: p(9), PlayerIn: &match.Player{Number: 10, Name: "X"}}, "already on the pitch"},
		{"sub out not on pitch", started, match.Event{At: at.Add(time.Hour), Kind: match.KindSubstitution, Team: "elp", PlayerOut: p(99), PlayerIn: &match.Player{Number: 30, Name: "X"}}, "not on the pitch"},
		{"sub in unnamed", started, match.Event{At: at.Add(time.Hour), Kind: match.KindSubstitution, Team: "elp", PlayerOut: p(9), PlayerIn: p(30)}, "needs a name"},
		{"halftime_stop in first", started, match.Event{At: at.Add(time.Hour), Kind: match.KindHalftimeStop}, "only during halftime"},
		{"extratime in first", started, match.Event{At: at.Add(time.Hour), Kind: match.KindExtratime}, "only after the last period"},
		{"player_team on shot", started, match.Event{At: at.Add(time.Hour), Kind: match.KindShot, Team: "elp", PlayerTeam: "tig", Player: p(7)}, "only for goal"},
		{"own goal unknown team", started, match.Event{At: at.Add(time.Hour), Kind: match.KindGoal, Team: "boc", PlayerTeam: "tig", Player: p(7)}, `unknown team "boc"`},
		{"empty comment", started, match.Event{At: at.Add(time.Hour), Kind: match.KindComment}, `needs "comment"`},
		{"huge comment", started, match.Event{At: at.Add(time.Hour), Kind: match.KindComment, Comment: strings.Repeat("x", 2000)}, "at most 1024"},
		{"control chars in name", func() match.State { return match.State{} }, match.Event{At: at, Kind: match.KindStart, Home: "a\nb", Visit: "c", StartDate: "2011-09-10",
			HomePlayers: []match.Player{{1, "A"}}, VisitPlayers: []match.Player{{1, "B"}}}, "printable"},
		{"bad date", func() match.State { return match.State{} }, match.Event{At: at, Kind: match.KindStart, Home: "a", Visit: "c", StartDate: "10/09/2011",
			HomePlayers: []match.Player{{1, "A"}}, VisitPlayers: []match.Player{{1, "B"}}}, "YYYY-MM-DD"},
		{"duplicate number", func() match.State { return match.State{} }, match.Event{At: at, Kind: match.KindStart, Home: "a", Visit: "c", StartDate: "2011-09-10",
			HomePlayers: []match.Player{{1, "A"}, {1, "B"}}, VisitPlayers: []match.Player{{1, "B"}}}, "number 1 twice"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := tc.state()
			before := s.Clone()
			err := s.Apply(&tc.ev)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Apply = %v, want error containing %q", err, tc.want)
			}
			if s.Seq != before.Seq || s.Period != before.Period || len(s.HomePlayers) != len(before.HomePlayers) {
				t.Fatalf("state changed by a refused event")
			}
		})
	}
}

func TestPeriods(t *testing.T) {
	var s match.State
	at := time.Date(2011, 9, 10, 21, 0, 0, 0, time.UTC)
	start := sample(t)[0]
	steps := []struct {
		kind match.Kind
		want match.Period
	}{
		{match.KindStart, match.First}, {match.KindHalftimeStart, match.Halftime}, {match.KindHalftimeStop, match.Last},
		{match.KindExtratime, match.FirstExtra}, {match.KindHalftimeStart, match.HalftimeExtra},
		{match.KindHalftimeStop, match.LastExtra}, {match.KindStop, match.Ended},
	}
	for i, st := range steps {
		e := match.Event{At: at.Add(time.Duration(i) * time.Minute), Kind: st.kind}
		if st.kind == match.KindStart {
			e = start
		}
		if err := s.Apply(&e); err != nil {
			t.Fatalf("%s: %v", st.kind, err)
		}
		if s.Period != st.want {
			t.Fatalf("after %s: period %s, want %s", st.kind, s.Period, st.want)
		}
	}
}

func TestDecodeEventRejectsUnknownFields(t *testing.T) {
	for _, in := range []string{`{"at":"2011-09-10T21:00:00Z","kind":"stop","colour":"red"}`, `{"kind":"stop"} {}`, `[`, ``} {
		if _, err := match.DecodeEvent([]byte(in)); err == nil {
			t.Errorf("DecodeEvent(%q) succeeded", in)
		}
	}
}

// A key given twice is refused at any depth, whatever its case: encoding/json would keep the last
// one, and {"kind":"comment","kind":"stop"} ended a live match.
func TestDecodeEventRejectsDuplicateKeys(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{`{"at":"2011-09-10T21:00:00Z","kind":"comment","comment":"x","kind":"stop"}`, `duplicate key "kind"`},
		{`{"at":"2011-09-10T21:00:00Z","kind":"stop","Kind":"stop"}`, `duplicate key "Kind"`},
		{`{"at":"2011-09-10T21:00:00Z","kind":"goal","team":"tig","player":{"number":7,"number":9}}`, `duplicate key "number"`},
		{`{"at":"2011-09-10T21:00:00Z","at":"2011-09-10T21:00:01Z","kind":"stop"}`, `duplicate key "at"`},
	} {
		_, err := match.DecodeEvent([]byte(tc.in))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("DecodeEvent(%s) = %v, want %q", tc.in, err, tc.want)
		}
	}
	// The same key in different objects is no duplicate.
	ok := `{"at":"2011-09-10T21:00:00Z","kind":"substitution","team":"elp","player_out":{"number":1,"name":"A"},"player_in":{"number":2,"name":"B"}}`
	if _, err := match.DecodeEvent([]byte(ok)); err != nil {
		t.Errorf("DecodeEvent(%s) = %v", ok, err)
	}
	start := `{"at":"2011-09-10T21:00:00Z","kind":"start","home":"a","visit":"b","start_date":"2011-09-10",` +
		`"home_players":[{"number":1,"name":"A"},{"number":2,"name":"B"}],"visit_players":[{"number":1,"name":"C"}]}`
	if _, err := match.DecodeEvent([]byte(start)); err != nil {
		t.Errorf("players in a list share key names: %v", err)
	}
}

// No posted text may carry a control character: on the line-based protocol 1 a CR LF in a comment
// forged frames ("ERROR: fake").
func TestTextRefusesControlCharacters(t *testing.T) {
	at := time.Date(2011, 9, 10, 21, 0, 0, 0, time.UTC)
	for _, c := range []string{"a\r\nERROR: fake\r\n", "nul\x00", "tab\there", "bell\a", "del\x7f", "c1\u0085", "bad\xffutf8"} {
		e := match.Event{At: at, Kind: match.KindComment, Comment: c}
		if err := e.CheckShape(); err == nil {
			t.Errorf("comment %q accepted", c)
		}
		p := match.Event{At: at, Kind: match.KindShot, Team: "tig", Player: &match.Player{Number: 7, Name: c}}
		if err := p.CheckShape(); err == nil {
			t.Errorf("player name %q accepted", c)
		}
	}
	if err := (match.Event{At: at, Kind: match.KindComment, Comment: "¡Golazo! ⚽ 1–0"}).CheckShape(); err != nil {
		t.Errorf("plain Unicode refused: %v", err)
	}
	for _, id := range []string{"elp-tig-2011-09-10", "a_b.c"} {
		if err := match.CheckID(id); err != nil {
			t.Errorf("CheckID(%q) = %v", id, err)
		}
	}
	for _, id := range []string{"", "a\r\nb", "a/b", "a:b", "a b", strings.Repeat("x", 201)} {
		if err := match.CheckID(id); err == nil {
			t.Errorf("CheckID(%q) accepted", id)
		}
	}
}
