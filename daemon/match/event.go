// Package match holds the football domain: the event kinds the watcher posts, their validation, and
// the state of a match (score, line-ups, period) obtained by folding its events in order.
//
// Validation replaces the original sample's behaviour of crashing the match process on a bad event:
// every rejection is an error that says what is wrong, and nothing is applied.
package match

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"
)

// Kind is an event kind; the names are the original sample's.
type Kind string

// The original's event kinds, plus comment (ours).
const (
	KindStart         Kind = "start"
	KindStop          Kind = "stop"
	KindHalftimeStart Kind = "halftime_start"
	KindHalftimeStop  Kind = "halftime_stop"
	KindExtratime     Kind = "extratime"
	KindShot          Kind = "shot"
	KindSave          Kind = "save"
	KindGoal          Kind = "goal"
	KindCorner        Kind = "corner"
	KindGoalkick      Kind = "goalkick"
	KindOffside       Kind = "offside"
	KindFoul          Kind = "foul"
	KindPenalty       Kind = "penalty"
	KindFreekick      Kind = "freekick"
	KindCard          Kind = "card"
	KindSubstitution  Kind = "substitution"
	KindThrowin       Kind = "throwin"
	KindComment       Kind = "comment"
)

// playerKinds are the kinds that name a player of a team (and, for goal, optionally player_team).
var playerKinds = map[Kind]bool{
	KindShot: true, KindSave: true, KindGoal: true, KindCorner: true, KindGoalkick: true,
	KindOffside: true, KindFoul: true, KindPenalty: true, KindFreekick: true, KindThrowin: true,
}

// Kinds lists every kind in a stable order (for help text and tests).
func Kinds() []Kind {
	return []Kind{KindStart, KindStop, KindHalftimeStart, KindHalftimeStop, KindExtratime, KindShot,
		KindSave, KindGoal, KindCorner, KindGoalkick, KindOffside, KindFoul, KindPenalty, KindFreekick,
		KindCard, KindSubstitution, KindThrowin, KindComment}
}

// Player is a shirt number and a name.
type Player struct {
	Number int    `json:"number"`
	Name   string `json:"name"`
}

// Event is one match event, exactly the JSON a watcher posts and a match file line holds.
// Fields not used by a kind stay empty and are omitted from JSON.
type Event struct {
	At           time.Time `json:"at"`
	Kind         Kind      `json:"kind"`
	Home         string    `json:"home,omitempty"`
	Visit        string    `json:"visit,omitempty"`
	StartDate    string    `json:"start_date,omitempty"`
	HomePlayers  []Player  `json:"home_players,omitempty"`
	VisitPlayers []Player  `json:"visit_players,omitempty"`
	Team         string    `json:"team,omitempty"`
	Player       *Player   `json:"player,omitempty"`
	PlayerTeam   string    `json:"player_team,omitempty"`
	Card         string    `json:"card,omitempty"`
	PlayerOut    *Player   `json:"player_out,omitempty"`
	PlayerIn     *Player   `json:"player_in,omitempty"`
	Comment      string    `json:"comment,omitempty"`
}

// Limits on what an event may carry, so a hostile watcher cannot make one event cost megabytes.
const (
	MaxNameLen    = 64
	MaxCommentLen = 1024
	MaxSquad      = 30
	MaxIDLen      = 200
)

// DecodeEvent parses one event from JSON, rejecting unknown fields so a typo in a match file is an
// error rather than a silently dropped field. It checks the event's own shape (CheckShape) but not
// whether it fits a match; Apply does that.
func DecodeEvent(data []byte) (Event, error) {
	var e Event
	dec := json.NewDecoder(strings.NewReader(string(data)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&e); err != nil {
		return Event{}, fmt.Errorf("invalid event JSON: %w", err)
	}
	if dec.More() {
		return Event{}, fmt.Errorf("invalid event JSON: trailing data after the event")
	}
	if err := checkKeys(data); err != nil {
		return Event{}, fmt.Errorf("invalid event JSON: %w", err)
	}
	if err := e.CheckShape(); err != nil {
		return Event{}, err
	}
	return e, nil
}

// checkKeys refuses an object that has a key twice, at any depth. encoding/json silently keeps
// the last one, so {"kind":"comment","kind":"stop"} would pass for a stop and end a live match;
// which one a reader takes is a guess no watcher should depend on. Keys are compared without case,
// as encoding/json matches them to fields ("Kind" fills kind). data has decoded already, so it is
// valid JSON.
func checkKeys(data []byte) error {
	type object struct {
		keys    map[string]bool
		wantKey bool
	}
	var stack []*object // nil entries are arrays
	dec := json.NewDecoder(bytes.NewReader(data))
	valueDone := func() {
		if n := len(stack); n > 0 && stack[n-1] != nil {
			stack[n-1].wantKey = true
		}
	}
	for {
		tok, err := dec.Token()
		if err != nil {
			return nil // io.EOF, or an error the decoder already reported
		}
		top := (*object)(nil)
		if len(stack) > 0 {
			top = stack[len(stack)-1]
		}
		if key, ok := tok.(string); ok && top != nil && top.wantKey {
			folded := strings.ToLower(key)
			if top.keys[folded] {
				return fmt.Errorf("duplicate key %q", key)
			}
			top.keys[folded] = true
			top.wantKey = false
			continue
		}
		switch tok {
		case json.Delim('{'):
			stack = append(stack, &object{keys: map[string]bool{}, wantKey: true})
		case json.Delim('['):
			stack = append(stack, nil)
		case json.Delim('}'), json.Delim(']'):
			stack = stack[:len(stack)-1]
			valueDone()
		default:
			valueDone()
		}
	}
}

// CheckID validates a match id given by a URL: it names the match in every protocol, so it is held
// to what the original's own rule (<home>-<visit>-<start_date>) can produce: printable, and
// without '/', ':' (the connect line's separator) or white space.
func CheckID(id string) error {
	if !printable(id, MaxIDLen) || strings.ContainsAny(id, "/: \t") {
		return fmt.Errorf("match id %q must be 1-%d printable characters without '/', ':' or spaces", id, MaxIDLen)
	}
	return nil
}

// ID is the original's match id rule: <home>-<visit>-<start_date>. Only meaningful for start.
func (e Event) ID() string { return e.Home + "-" + e.Visit + "-" + e.StartDate }

// CheckShape validates what can be checked without the match: the kind is known and the fields it
// needs are present and sane.
func (e Event) CheckShape() error {
	need := func(ok bool, what string) error {
		if !ok {
			return fmt.Errorf("%s event needs %s", e.Kind, what)
		}
		return nil
	}
	checkPlayer := func(p *Player, field string) error {
		if p == nil {
			return fmt.Errorf("%s event needs %q", e.Kind, field)
		}
		return p.check(field)
	}
	switch {
	case e.Kind == "":
		return fmt.Errorf("event has no \"kind\"")
	case e.Kind == KindStart:
		if err := checkTeamName(e.Home, "home"); err != nil {
			return err
		}
		if err := checkTeamName(e.Visit, "visit"); err != nil {
			return err
		}
		if e.Home == e.Visit {
			return fmt.Errorf("start event: home and visit are both %q", e.Home)
		}
		if _, err := time.Parse(time.DateOnly, e.StartDate); err != nil {
			return fmt.Errorf("start event: start_date %q is not YYYY-MM-DD", e.StartDate)
		}
		if err := checkSquad(e.HomePlayers, "home_players"); err != nil {
			return err
		}
		return checkSquad(e.VisitPlayers, "visit_players")
	case e.Kind == KindCard:
		if err := need(e.Team != "", `"team"`); err != nil {
			return err
		}
		if e.Card != "yellow" && e.Card != "red" {
			return fmt.Errorf("card event: card must be \"yellow\" or \"red\", not %q", e.Card)
		}
		return checkPlayer(e.Player, "player")
	case e.Kind == KindSubstitution:
		if err := need(e.Team != "", `"team"`); err != nil {
			return err
		}
		if err := checkPlayer(e.PlayerOut, "player_out"); err != nil {
			return err
		}
		if err := checkPlayer(e.PlayerIn, "player_in"); err != nil {
			return err
		}
		if e.PlayerOut.Number == e.PlayerIn.Number {
			return fmt.Errorf("substitution event: player_in and player_out are both number %d", e.PlayerIn.Number)
		}
		return nil
	case playerKinds[e.Kind]:
		if err := need(e.Team != "", `"team"`); err != nil {
			return err
		}
		if e.PlayerTeam != "" && e.Kind != KindGoal {
			return fmt.Errorf("%s event: player_team is only for goal (own goals)", e.Kind)
		}
		return checkPlayer(e.Player, "player")
	case e.Kind == KindComment:
		if e.Comment == "" {
			return fmt.Errorf("comment event needs \"comment\"")
		}
		if len(e.Comment) > MaxCommentLen {
			return fmt.Errorf("comment event: comment is %d bytes, at most %d", len(e.Comment), MaxCommentLen)
		}
		return checkText(e.Comment, "comment")
	case e.Kind == KindStop, e.Kind == KindHalftimeStart, e.Kind == KindHalftimeStop, e.Kind == KindExtratime:
		return nil
	default:
		return fmt.Errorf("unknown event kind %q", e.Kind)
	}
}

func (p Player) check(field string) error {
	if p.Number < 0 || p.Number > 999 {
		return fmt.Errorf("%s: shirt number %d out of range 0-999", field, p.Number)
	}
	if p.Name != "" && !printable(p.Name, MaxNameLen) {
		return fmt.Errorf("%s: name must be 1-%d printable characters", field, MaxNameLen)
	}
	return nil
}

func checkTeamName(name, field string) error {
	if name == "" {
		return fmt.Errorf("start event needs %q", field)
	}
	if !printable(name, MaxNameLen) || strings.ContainsAny(name, "/:-") {
		return fmt.Errorf("start event: %s %q must be 1-%d printable characters without '/', ':' or '-'", field, name, MaxNameLen)
	}
	return nil
}

func checkSquad(ps []Player, field string) error {
	if len(ps) == 0 {
		return fmt.Errorf("start event needs %q", field)
	}
	if len(ps) > MaxSquad {
		return fmt.Errorf("start event: %s has %d players, at most %d", field, len(ps), MaxSquad)
	}
	seen := make(map[int]bool, len(ps))
	for _, p := range ps {
		if err := p.check(field); err != nil {
			return err
		}
		if p.Name == "" {
			return fmt.Errorf("start event: %s: player %d has no name", field, p.Number)
		}
		if seen[p.Number] {
			return fmt.Errorf("start event: %s: number %d twice", field, p.Number)
		}
		seen[p.Number] = true
	}
	return nil
}

// printable reports whether s is non-empty, at most max bytes, valid UTF-8 without control characters
// (which would break the line-based v1 rendering).
func printable(s string, max int) bool {
	return s != "" && len(s) <= max && checkText(s, "") == nil
}

// checkText refuses text that is not valid UTF-8 or holds a control character (C0, DEL, C1). Text
// goes to protocol-1 clients as it is, and that protocol is line-based: a CR, LF or NUL in a
// comment would end the frame early and forge the next one ("ERROR: ...", a fake goal). JSON (v3,
// SSE) would escape them, but one rule for every protocol is the one that cannot be got wrong.
func checkText(s, field string) error {
	for i, r := range s {
		switch {
		case r == utf8.RuneError:
			return fmt.Errorf("%s: not valid UTF-8 at byte %d", field, i)
		case unicode.IsControl(r):
			return fmt.Errorf("%s: control character %U at byte %d (CR, LF, NUL and other control characters are refused: they would break protocol-1 frames)", field, r, i)
		}
	}
	return nil
}
