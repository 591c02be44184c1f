// Package matchfile reads the match files `matchstream watcher` replays: ours (JSON Lines, one event
// per line, exactly the body posted to the API) and the original sample's fake-watcher files (Erlang
// terms: {home,..}, {visit,..}, {start_date,..}, {steps,[{sleep,Ms} | {Kind,Data}]}), so old match
// files replay unchanged.
package matchfile

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"time"

	"matchstream/daemon/match"
)

// Entry is one event of a file and the line it came from (for error messages).
type Entry struct {
	Line  int
	Event match.Event
}

// File is a parsed match file.
type File struct {
	Format  string // "jsonl" or "erlang"
	Entries []Entry
}

// ID is the match id the file's start event gives (<home>-<visit>-<start_date>), or "".
func (f *File) ID() string {
	for _, e := range f.Entries {
		if e.Event.Kind == match.KindStart {
			return e.Event.ID()
		}
	}
	return ""
}

// MaxSize bounds what Read accepts: a whole match is a few kilobytes.
const MaxSize = 64 << 20

// Read parses a match file, telling the two formats apart by their first meaningful byte: a JSON
// object starts with {" while an Erlang term starts with { and an atom (or with a % comment).
func Read(r io.Reader) (*File, error) {
	data, err := io.ReadAll(io.LimitReader(r, MaxSize+1))
	if err != nil {
		return nil, err
	}
	if len(data) > MaxSize {
		return nil, fmt.Errorf("match file is over %d bytes", MaxSize)
	}
	if isJSONL(data) {
		return readJSONL(data)
	}
	return readErlang(data)
}

func isJSONL(data []byte) bool {
	t := bytes.TrimLeft(data, " \t\r\n")
	if len(t) == 0 || t[0] != '{' {
		return false
	}
	t = bytes.TrimLeft(t[1:], " \t\r\n")
	return len(t) > 0 && (t[0] == '"' || t[0] == '}')
}

func readJSONL(data []byte) (*File, error) {
	f := &File{Format: "jsonl"}
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(nil, 1<<20)
	for n := 1; sc.Scan(); n++ {
		line := bytes.TrimSpace(sc.Bytes())
		if len(line) == 0 || line[0] == '#' {
			continue
		}
		e, err := match.DecodeEvent(line)
		if err != nil {
			return nil, fmt.Errorf("line %d: %w", n, err)
		}
		f.Entries = append(f.Entries, Entry{Line: n, Event: e})
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if len(f.Entries) == 0 {
		return nil, fmt.Errorf("no events in the file")
	}
	return f, nil
}

// kickoffHour is the time of day the original's files start at: they carry only a date and sleeps,
// and its sample match (elp-tig-2011-09-10) kicked off at 21:00 UTC.
const kickoffHour = 21

func readErlang(data []byte) (*File, error) {
	terms, err := parseTerms(data)
	if err != nil {
		return nil, err
	}
	var home, visit, date string
	var steps []term
	stepsLine := 0
	for _, t := range terms {
		k, v, ok := t.pair()
		if !ok {
			return nil, fmt.Errorf("line %d: expected {Key, Value}", t.line)
		}
		switch k {
		case "home":
			home, ok = v.binary()
		case "visit":
			visit, ok = v.binary()
		case "start_date":
			var ymd []int
			ymd, ok = v.ints(3)
			if ok {
				date = fmt.Sprintf("%04d-%02d-%02d", ymd[0], ymd[1], ymd[2])
			}
		case "steps":
			steps, ok = v.list()
			stepsLine = v.line
		default:
			return nil, fmt.Errorf("line %d: unknown key %s", t.line, k)
		}
		if !ok {
			return nil, fmt.Errorf("line %d: bad value for %s", t.line, k)
		}
	}
	if home == "" || visit == "" || date == "" || stepsLine == 0 {
		return nil, fmt.Errorf("an original match file needs home, visit, start_date and steps")
	}
	day, err := time.Parse(time.DateOnly, date)
	if err != nil {
		return nil, fmt.Errorf("start_date %s: %w", date, err)
	}
	at := day.Add(kickoffHour * time.Hour)
	f := &File{Format: "erlang"}
	for _, st := range steps {
		k, v, ok := st.pair()
		if !ok {
			return nil, fmt.Errorf("line %d: a step must be {sleep, Ms} or {Kind, Data}", st.line)
		}
		if k == "sleep" {
			ms, ok := v.integer()
			if !ok || ms < 0 {
				return nil, fmt.Errorf("line %d: sleep needs milliseconds", st.line)
			}
			at = at.Add(time.Duration(ms) * time.Millisecond)
			continue
		}
		e, err := stepEvent(match.Kind(k), v)
		if err != nil {
			return nil, fmt.Errorf("line %d: %s: %w", st.line, k, err)
		}
		e.At = at
		if e.Kind == match.KindStart {
			e.Home, e.Visit, e.StartDate = home, visit, date
		}
		if err := e.CheckShape(); err != nil {
			return nil, fmt.Errorf("line %d: %w", st.line, err)
		}
		f.Entries = append(f.Entries, Entry{Line: st.line, Event: e})
	}
	if len(f.Entries) == 0 {
		return nil, fmt.Errorf("no events in the steps")
	}
	return f, nil
}

// stepEvent converts {Kind, Data}: Data is a proplist whose players are shirt numbers, or
// {Number, <<"Name">>} for a player coming on.
func stepEvent(kind match.Kind, data term) (match.Event, error) {
	e := match.Event{Kind: kind}
	props, ok := data.list()
	if !ok {
		return e, fmt.Errorf("data must be a list")
	}
	for _, p := range props {
		k, v, ok := p.pair()
		if !ok {
			return e, fmt.Errorf("line %d: expected {Key, Value}", p.line)
		}
		var err error
		switch k {
		case "team":
			e.Team, ok = v.binary()
		case "player_team":
			e.PlayerTeam, ok = v.binary()
		case "card":
			e.Card, ok = v.atom()
		case "comment":
			e.Comment, ok = v.binary()
		case "player":
			e.Player, err = v.player()
		case "player_in":
			e.PlayerIn, err = v.player()
		case "player_out":
			e.PlayerOut, err = v.player()
		case "home_players":
			e.HomePlayers, err = v.players()
		case "visit_players":
			e.VisitPlayers, err = v.players()
		default:
			return e, fmt.Errorf("line %d: unknown field %s", p.line, k)
		}
		if err != nil {
			return e, fmt.Errorf("line %d: %s: %w", p.line, k, err)
		}
		if !ok {
			return e, fmt.Errorf("line %d: bad value for %s", p.line, k)
		}
	}
	return e, nil
}
