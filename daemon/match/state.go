package match

import (
	"fmt"
	"slices"
	"time"
)

// Period is where a match is in its timeline; the names are the original's.
type Period string

// The original's periods.
const (
	NotStarted    Period = "not_started"
	First         Period = "first"
	Halftime      Period = "halftime"
	Last          Period = "last"
	FirstExtra    Period = "first_extra"
	HalftimeExtra Period = "halftime_extra"
	LastExtra     Period = "last_extra"
	Ended         Period = "ended"
)

// State is a match folded from its events. The zero value is a match that has not started.
type State struct {
	ID           string    `json:"match"`
	Seq          uint64    `json:"seq"` // seq of the last event folded in; 0 before start
	Home         string    `json:"home"`
	Visit        string    `json:"visit"`
	StartDate    string    `json:"start_date"`
	HomePlayers  []Player  `json:"home_players"`
	VisitPlayers []Player  `json:"visit_players"`
	HomeScore    int       `json:"home_score"`
	VisitScore   int       `json:"visit_score"`
	Period       Period    `json:"period"`
	LastAt       time.Time `json:"last_at"`
}

// Live reports whether the match has started and not ended.
func (s *State) Live() bool { return s.Period != NotStarted && s.Period != Ended && s.Period != "" }

// Ended reports whether the stop event was applied.
func (s *State) Ended() bool { return s.Period == Ended }

// Clone returns a deep copy, so a snapshot can be handed out while the match goes on.
func (s *State) Clone() State {
	c := *s
	c.HomePlayers = slices.Clone(s.HomePlayers)
	c.VisitPlayers = slices.Clone(s.VisitPlayers)
	return c
}

// Players returns the players on the pitch for team, or nil if team is not in the match.
func (s *State) Players(team string) []Player {
	switch team {
	case s.Home:
		return s.HomePlayers
	case s.Visit:
		return s.VisitPlayers
	}
	return nil
}

// Apply validates e against the state and folds it in, assigning it the next seq. On error the state
// is unchanged. The event may be completed in place: a player given by number only gets its name
// from the line-up, so every stored event renders the same way whoever posted it.
func (s *State) Apply(e *Event) error {
	if err := e.CheckShape(); err != nil {
		return err
	}
	if s.Period == Ended {
		return fmt.Errorf("match %s has ended: no %s event after stop", s.ID, e.Kind)
	}
	if s.Period == NotStarted || s.Period == "" {
		if e.Kind != KindStart {
			return fmt.Errorf("match has not started: its first event must be start, not %s", e.Kind)
		}
	} else if e.Kind == KindStart {
		return fmt.Errorf("match %s has already started", s.ID)
	}
	if e.At.IsZero() {
		return fmt.Errorf("%s event has no \"at\" time", e.Kind)
	}
	if e.At.Before(s.LastAt) {
		return fmt.Errorf("%s event at %s goes back in time: the previous event was at %s",
			e.Kind, e.At.UTC().Format(time.RFC3339Nano), s.LastAt.UTC().Format(time.RFC3339Nano))
	}
	next := s.Clone()
	if err := next.fold(e); err != nil {
		return err
	}
	next.Seq = s.Seq + 1
	next.LastAt = e.At
	*s = next
	return nil
}

func (s *State) fold(e *Event) error {
	switch e.Kind {
	case KindStart:
		s.Home, s.Visit, s.StartDate = e.Home, e.Visit, e.StartDate
		s.HomePlayers = slices.Clone(e.HomePlayers)
		s.VisitPlayers = slices.Clone(e.VisitPlayers)
		s.Period = First
		if s.ID == "" {
			s.ID = e.ID()
		}
	case KindStop:
		s.Period = Ended
	case KindHalftimeStart:
		switch s.Period {
		case First:
			s.Period = Halftime
		case FirstExtra:
			s.Period = HalftimeExtra
		default:
			return fmt.Errorf("halftime_start in period %s: only after first or first_extra", s.Period)
		}
	case KindHalftimeStop:
		switch s.Period {
		case Halftime:
			s.Period = Last
		case HalftimeExtra:
			s.Period = LastExtra
		default:
			return fmt.Errorf("halftime_stop in period %s: only during halftime", s.Period)
		}
	case KindExtratime:
		if s.Period != Last {
			return fmt.Errorf("extratime in period %s: only after the last period", s.Period)
		}
		s.Period = FirstExtra
	case KindComment:
	case KindCard:
		p, err := s.onPitch(e.Team, e.Player)
		if err != nil {
			return err
		}
		e.Player.Name = p.Name
		if e.Card == "red" {
			s.remove(e.Team, p.Number)
		}
	case KindSubstitution:
		p, err := s.onPitch(e.Team, e.PlayerOut)
		if err != nil {
			return err
		}
		e.PlayerOut.Name = p.Name
		if e.PlayerIn.Name == "" {
			return fmt.Errorf("substitution: player_in %d needs a name", e.PlayerIn.Number)
		}
		if slices.ContainsFunc(s.Players(e.Team), func(q Player) bool { return q.Number == e.PlayerIn.Number }) {
			return fmt.Errorf("substitution: player_in %d is already on the pitch for %s", e.PlayerIn.Number, e.Team)
		}
		ps := s.Players(e.Team)
		i := slices.IndexFunc(ps, func(q Player) bool { return q.Number == p.Number })
		ps[i] = *e.PlayerIn // the player coming on takes the place of the one going off
	default: // player kinds
		team := e.Team
		if e.PlayerTeam != "" {
			if err := s.checkTeam(e.Team); err != nil {
				return err
			}
			team = e.PlayerTeam
		}
		p, err := s.onPitch(team, e.Player)
		if err != nil {
			return err
		}
		e.Player.Name = p.Name
		if e.Kind == KindGoal {
			if e.Team == s.Home {
				s.HomeScore++
			} else {
				s.VisitScore++
			}
		}
	}
	return nil
}

func (s *State) checkTeam(team string) error {
	if team != s.Home && team != s.Visit {
		return fmt.Errorf("unknown team %q: match %s is %s v %s", team, s.ID, s.Home, s.Visit)
	}
	return nil
}

// onPitch finds player want (by number; the name, if given, must match) among team's players on
// the pitch.
func (s *State) onPitch(team string, want *Player) (Player, error) {
	if err := s.checkTeam(team); err != nil {
		return Player{}, err
	}
	for _, p := range s.Players(team) {
		if p.Number == want.Number {
			if want.Name != "" && want.Name != p.Name {
				return Player{}, fmt.Errorf("player %d of %s is %s, not %s", p.Number, team, p.Name, want.Name)
			}
			return p, nil
		}
	}
	return Player{}, fmt.Errorf("player %d is not on the pitch for %s", want.Number, team)
}

func (s *State) remove(team string, number int) {
	del := func(q Player) bool { return q.Number == number }
	if team == s.Home {
		s.HomePlayers = slices.DeleteFunc(s.HomePlayers, del)
	} else {
		s.VisitPlayers = slices.DeleteFunc(s.VisitPlayers, del)
	}
}

// Record is an event with its place in the match: what the store keeps, the API lists and the
// version-3 protocol sends. Its JSON is the event's with "seq" first.
type Record struct {
	Seq uint64 `json:"seq"`
	Event
}
