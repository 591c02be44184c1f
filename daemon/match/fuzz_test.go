package match_test

import (
	"encoding/json"
	"testing"
	"time"

	"matchstream/daemon/match"
)

// FuzzDecodeEvent: any input decodes to a shape-valid event or an error; a decoded event
// re-encodes and decodes to the same thing.
func FuzzDecodeEvent(f *testing.F) {
	for _, e := range sample(f) {
		b, _ := json.Marshal(e)
		f.Add(b)
	}
	f.Add([]byte(`{"kind":"comment","comment":"x","at":"2011-09-10T21:00:00Z"}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		e, err := match.DecodeEvent(data)
		if err != nil {
			return
		}
		if err := e.CheckShape(); err != nil {
			t.Fatalf("decoded event fails CheckShape: %v", err)
		}
		b, err := json.Marshal(e)
		if err != nil {
			t.Fatal(err)
		}
		e2, err := match.DecodeEvent(b)
		if err != nil {
			t.Fatalf("re-decode of %s: %v", b, err)
		}
		b2, _ := json.Marshal(e2)
		if string(b) != string(b2) {
			t.Fatalf("not stable: %s vs %s", b, b2)
		}
	})
}

// FuzzApply: random event sequences after the sample's start never panic and keep the invariants:
// the score equals the goals accepted, at most eleven on the pitch per side, nothing after stop.
func FuzzApply(f *testing.F) {
	f.Add([]byte{1, 7, 2, 3, 9, 0, 4, 4, 5, 1})
	f.Add([]byte{0, 0, 0, 0, 15, 15, 16, 1, 2})
	first := sample(f)[0]
	f.Fuzz(func(t *testing.T, ops []byte) {
		var s match.State
		start := first
		if err := s.Apply(&start); err != nil {
			t.Fatal(err)
		}
		kinds := match.Kinds()
		teams := []string{"elp", "tig", "boc"}
		goals := map[string]int{}
		at := start.At
		for i := 0; i+2 < len(ops); i += 3 {
			k := kinds[int(ops[i])%len(kinds)]
			team := teams[int(ops[i+1])%len(teams)]
			num := int(ops[i+2] % 32)
			at = at.Add(secondsOf(ops[i+1]))
			e := match.Event{At: at, Kind: k, Team: team, Player: &match.Player{Number: num}}
			switch k {
			case match.KindCard:
				e.Card = []string{"yellow", "red"}[num%2]
			case match.KindSubstitution:
				e.Player = nil
				e.PlayerOut = &match.Player{Number: num}
				e.PlayerIn = &match.Player{Number: num + 40, Name: "Sub"}
			case match.KindComment:
				e.Player, e.Comment = nil, "c"
			case match.KindStart, match.KindStop, match.KindHalftimeStart, match.KindHalftimeStop, match.KindExtratime:
				e.Player, e.Team = nil, ""
			}
			wasEnded := s.Ended()
			seq := s.Seq
			err := s.Apply(&e)
			if wasEnded && err == nil {
				t.Fatalf("%s accepted after stop", k)
			}
			if err == nil {
				if s.Seq != seq+1 {
					t.Fatalf("seq %d after %d", s.Seq, seq)
				}
				if k == match.KindGoal {
					goals[team]++
				}
			} else if s.Seq != seq {
				t.Fatalf("refused event changed seq")
			}
			if s.HomeScore != goals["elp"] || s.VisitScore != goals["tig"] {
				t.Fatalf("score %d-%d, goals %v", s.HomeScore, s.VisitScore, goals)
			}
			if len(s.HomePlayers) > 11 || len(s.VisitPlayers) > 11 {
				t.Fatalf("more than eleven on the pitch")
			}
		}
	})
}

// secondsOf moves time forward 0-4 s, so equal timestamps are exercised too.
func secondsOf(b byte) time.Duration { return time.Duration(b%5) * time.Second }
