package protocol

import (
	"bytes"
	"encoding/json"
	"strconv"
	"time"

	"matchstream/daemon/match"
)

// Frames is one event (or status) rendered once for every protocol version, so a broadcast writes the
// same bytes to every subscriber of a version.
type Frames struct {
	V1  []byte // versions 1 and 2: the original's text frame
	V3  []byte // version 3: one JSON line
	SSE []byte // Server-Sent Events (VersionSSE): the v3 JSON as data, the seq as id
}

// VersionSSE is the hub's "protocol version" of browsers and other Server-Sent Events clients on the
// API port; it is never sent on the wire.
const VersionSSE = 4

// Versions is the number of protocol version slots (index = version; 0 is unused).
const Versions = VersionSSE + 1

// For returns the frame for a protocol version.
func (f Frames) For(version int) []byte {
	switch version {
	case 3:
		return f.V3
	case VersionSSE:
		return f.SSE
	}
	return f.V1
}

// RenderEvent renders an event of match id in every version.
func RenderEvent(id string, r match.Record) Frames {
	v3 := RenderV3(id, r)
	return Frames{V1: RenderV1(&r.Event), V3: v3, SSE: RenderSSE(r.Seq, string(r.Event.Kind), v3)}
}

// RenderSSE renders one Server-Sent Event: its id is the seq a reconnecting browser sends back as
// Last-Event-ID, its type the event kind, its data the v3 JSON (one line, so one data: field).
func RenderSSE(seq uint64, kind string, v3 []byte) []byte {
	b := make([]byte, 0, len(v3)+48)
	b = append(b, "id: "...)
	b = strconv.AppendUint(b, seq, 10)
	b = append(b, "\nevent: "...)
	b = append(b, kind...)
	b = append(b, "\ndata: "...)
	b = append(b, bytes.TrimSuffix(v3, []byte("\n"))...)
	return append(b, "\n\n"...)
}

// Welcome is the banner the original server wrote on accept, before the client said anything. It
// is sent only with serve --welcome: the original's own fake_client read the first line it got as
// a frame header, so by default, as that client expects, the first bytes are the status frame.
const Welcome = "Welcome to Match Stream.\nTo watch the current game use: V:2:<your-name>\n"

// SSEHeartbeat is a comment line: it keeps proxies and NATs from timing an idle stream out, and a
// browser ignores it.
var SSEHeartbeat = []byte(": keep-alive\n\n")

// RenderStatus renders the status a client gets on connect; now stamps the v1 header, as the
// original stamped its status with the time of the connect.
func RenderStatus(s *match.State, now time.Time) Frames {
	v3 := RenderV3Status(s)
	return Frames{V1: RenderV1Status(s, now), V3: v3, SSE: RenderSSE(s.Seq, "status", v3)}
}

// v1Time is the original's header time: UTC, rounded to the nearest second as its dtformat did
// (erlang:round(TS/1000) on a millisecond timestamp, so halves go up and 21:05:53.500 prints as
// 21:05:54). Cutting to whole milliseconds first gives what the original saw.
func v1Time(b []byte, t time.Time) []byte {
	return t.UTC().Truncate(time.Millisecond).Round(time.Second).AppendFormat(b, "2006-01-02 15:04:05")
}

func header(b []byte, t time.Time, kind string) []byte {
	b = v1Time(b, t)
	b = append(b, ": "...)
	b = append(b, kind...)
	return append(b, ":\n"...)
}

// binaryField prints a string the way Erlang printed a binary: <<"tig">>.
func binaryField(b []byte, key, v string) []byte {
	b = append(b, '\t')
	b = append(b, key...)
	b = append(b, `: <<"`...)
	b = append(b, v...)
	return append(b, "\">>\n"...)
}

func atomField(b []byte, key, v string) []byte {
	b = append(b, '\t')
	b = append(b, key...)
	b = append(b, ": "...)
	b = append(b, v...)
	return append(b, '\n')
}

func playerText(b []byte, p match.Player) []byte {
	b = append(b, p.Name...)
	b = append(b, " ("...)
	b = strconv.AppendInt(b, int64(p.Number), 10)
	return append(b, ") \n"...)
}

func playerField(b []byte, key string, p *match.Player) []byte {
	b = append(b, '\t')
	b = append(b, key...)
	b = append(b, ": "...)
	return playerText(b, *p)
}

func playersField(b []byte, key string, ps []match.Player) []byte {
	b = append(b, '\t')
	b = append(b, key...)
	b = append(b, ":\n"...)
	for _, p := range ps {
		b = append(b, "\t\t "...)
		b = playerText(b, p)
	}
	return b
}

const frameEnd = "\r\n"

// RenderV1 renders an event as the original server wrote it, fields in the original's order.
func RenderV1(e *match.Event) []byte {
	b := make([]byte, 0, 128)
	b = header(b, e.At, string(e.Kind))
	switch e.Kind {
	case match.KindStart:
		b = binaryField(b, "home", e.Home)
		b = playersField(b, "home_players", e.HomePlayers)
		b = binaryField(b, "visit", e.Visit)
		b = playersField(b, "visit_players", e.VisitPlayers)
	case match.KindCard:
		b = playerField(b, "player", e.Player)
		b = atomField(b, "card", e.Card)
		b = binaryField(b, "team", e.Team)
	case match.KindSubstitution:
		b = playerField(b, "player_out", e.PlayerOut)
		b = binaryField(b, "team", e.Team)
		b = playerField(b, "player_in", e.PlayerIn)
	case match.KindComment:
		b = binaryField(b, "comment", e.Comment)
	default:
		if e.Player != nil {
			b = playerField(b, "player", e.Player)
			b = binaryField(b, "team", e.Team)
			if e.PlayerTeam != "" {
				b = binaryField(b, "player_team", e.PlayerTeam)
			}
		}
	}
	return append(b, frameEnd...)
}

// RenderV1Status renders the status frame the original sent on connect.
func RenderV1Status(s *match.State, now time.Time) []byte {
	b := make([]byte, 0, 512)
	b = header(b, now, "status")
	b = binaryField(b, "home", s.Home)
	b = playersField(b, "home_players", s.HomePlayers)
	b = atomField(b, "home_score", strconv.Itoa(s.HomeScore))
	b = binaryField(b, "visit", s.Visit)
	b = playersField(b, "visit_players", s.VisitPlayers)
	b = atomField(b, "visit_score", strconv.Itoa(s.VisitScore))
	b = atomField(b, "period", string(s.Period))
	return append(b, frameEnd...)
}

// V3Event is the version-3 line for an event: the API's event JSON plus "match" and "seq".
type V3Event struct {
	Match string `json:"match"`
	match.Record
}

// V3Status is the version-3 status line: the state with kind "status"; its seq is the last event
// folded in, so the next event a client gets is seq+1.
type V3Status struct {
	Kind string `json:"kind"`
	*match.State
}

// RenderV3 renders an event as one JSON line.
func RenderV3(id string, r match.Record) []byte {
	return jsonLine(V3Event{Match: id, Record: r})
}

// RenderV3Status renders the status as one JSON line.
func RenderV3Status(s *match.State) []byte {
	return jsonLine(V3Status{Kind: "status", State: s})
}

func jsonLine(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		// Only plain structs of strings and numbers are marshalled here: an error is a bug.
		panic("protocol: marshal: " + err.Error())
	}
	return append(b, '\n')
}

// ShutdownNotice is what clients get when the daemon stops: v1/v2 an error frame in the original's
// shape, v3 a line they can act on. Then the server closes; a v3 client resumes with FROM.
func ShutdownNotice() Frames {
	return Frames{
		V1: (&Error{Code: CodeShutdown, Detail: "server stopping, reconnect"}).Frame(),
		V3: []byte(`{"kind":"shutdown","reason":"server stopping, reconnect with FROM:<last seq>"}` + "\n"),
		// No id: the browser keeps the last event's as its Last-Event-ID, and reconnects by itself.
		SSE: []byte(`event: shutdown` + "\n" + `data: {"kind":"shutdown","reason":"server stopping"}` + "\n\n"),
	}
}
