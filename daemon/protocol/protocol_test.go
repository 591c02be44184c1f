package protocol_test

import (
	"bufio"
	"bytes"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"matchstream/daemon/match"
	"matchstream/daemon/protocol"
)

var update = flag.Bool("update", false, "rewrite golden files")

const sample = "../../testdata/matches/elp-tig-2011-09-10"

// sampleRecords folds the sample match, which also completes player names from the line-ups.
func sampleRecords(t testing.TB) ([]match.Record, *match.State) {
	t.Helper()
	f, err := os.Open(sample + ".jsonl")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var st match.State
	var recs []match.Record
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		e, err := match.DecodeEvent(sc.Bytes())
		if err != nil {
			t.Fatal(err)
		}
		if err := st.Apply(&e); err != nil {
			t.Fatal(err)
		}
		recs = append(recs, match.Record{Seq: st.Seq, Event: e})
	}
	return recs, &st
}

func golden(t *testing.T, path string, got []byte) {
	t.Helper()
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s differs:\ngot:\n%q\nwant:\n%q", path, got, want)
	}
}

// The original's bytes for events 2..31 of the sample match, reproduced exactly.
func TestV1SampleGolden(t *testing.T) {
	recs, _ := sampleRecords(t)
	var got []byte
	for _, r := range recs[1:] {
		got = append(got, protocol.RenderV1(&r.Event)...)
	}
	want, err := os.ReadFile(sample + ".v1.golden")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("v1 rendering differs from the original's:\ngot:\n%s\nwant:\n%s", got, want)
	}
}

// One golden file per event kind (and the status), in both renderings.
func TestGoldenPerKind(t *testing.T) {
	recs, end := sampleRecords(t)
	at := time.Date(2011, 9, 10, 22, 0, 0, 0, time.UTC)
	p := &match.Player{Number: 7, Name: "Luna"}
	extra := map[match.Kind]match.Event{
		match.KindExtratime: {At: at, Kind: match.KindExtratime},
		match.KindComment:   {At: at, Kind: match.KindComment, Comment: "what a save"},
	}
	for _, k := range []match.Kind{match.KindSave, match.KindCorner, match.KindGoalkick, match.KindOffside,
		match.KindFoul, match.KindFreekick, match.KindThrowin} {
		extra[k] = match.Event{At: at, Kind: k, Team: "tig", Player: p}
	}
	byKind := map[string]match.Record{}
	for _, r := range recs {
		name := string(r.Kind)
		if r.Kind == match.KindGoal && r.PlayerTeam != "" {
			name = "own_goal"
		}
		if r.Kind == match.KindCard {
			name = "card_" + r.Card
		}
		if _, ok := byKind[name]; !ok {
			byKind[name] = r
		}
	}
	for k, e := range extra {
		byKind[string(k)] = match.Record{Seq: 99, Event: e}
	}
	for _, k := range match.Kinds() {
		if _, ok := byKind[string(k)]; !ok && k != match.KindGoal && k != match.KindCard {
			t.Errorf("no golden case for kind %s", k)
		}
	}
	for name, r := range byKind {
		t.Run(name, func(t *testing.T) {
			f := protocol.RenderEvent("elp-tig-2011-09-10", r)
			golden(t, filepath.Join("testdata", name+".golden"), bytes.Join([][]byte{f.V1, f.V3, f.SSE}, []byte("----\n")))
		})
	}
	t.Run("status", func(t *testing.T) {
		f := protocol.RenderStatus(end, time.Date(2011, 9, 10, 21, 20, 0, 999e6, time.UTC))
		golden(t, filepath.Join("testdata", "status.golden"), bytes.Join([][]byte{f.V1, f.V3, f.SSE}, []byte("----\n")))
	})
}

func TestParseConnect(t *testing.T) {
	for _, tc := range []struct {
		name, line string
		want       protocol.Request
		code       string
	}{
		{"v1 crlf", "VERSION:1:CONNECT:me:MATCH:elp-tig-2011-09-10\r\n", protocol.Request{Version: 1, User: "me", Match: "elp-tig-2011-09-10"}, ""},
		{"v1 lf", "VERSION:1:CONNECT:me:MATCH:m\n", protocol.Request{Version: 1, User: "me", Match: "m"}, ""},
		{"v1 extra fields ignored", "VERSION:1:CONNECT:me:MATCH:m:FOO:bar\r\n", protocol.Request{Version: 1, User: "me", Match: "m"}, ""},
		{"v2", "V:2:me\r\n", protocol.Request{Version: 2, User: "me"}, ""},
		{"v3", "VERSION:3:CONNECT:u:MATCH:m\r\n", protocol.Request{Version: 3, User: "u", Match: "m"}, ""},
		{"v3 from", "VERSION:3:CONNECT:u:MATCH:m:FROM:12\r\n", protocol.Request{Version: 3, User: "u", Match: "m", From: 12, HasFrom: true}, ""},
		{"v3 from 0", "VERSION:3:CONNECT:u:MATCH:m:FROM:0\n", protocol.Request{Version: 3, User: "u", Match: "m", HasFrom: true}, ""},
		{"v3 bad from", "VERSION:3:CONNECT:u:MATCH:m:FROM:x\r\n", protocol.Request{}, protocol.CodeBadRequest},
		{"v3 negative from", "VERSION:3:CONNECT:u:MATCH:m:FROM:-1\r\n", protocol.Request{}, protocol.CodeBadRequest},
		{"v3 junk after", "VERSION:3:CONNECT:u:MATCH:m:JUNK\r\n", protocol.Request{}, protocol.CodeBadRequest},
		{"v4", "VERSION:4:CONNECT:u:MATCH:m\r\n", protocol.Request{}, protocol.CodeUnsupportedVersion},
		{"version 2 long form", "VERSION:2:CONNECT:u:MATCH:m\r\n", protocol.Request{}, protocol.CodeBadRequest},
		{"garbage", "GET / HTTP/1.1\r\n", protocol.Request{}, protocol.CodeBadRequest},
		{"empty", "\r\n", protocol.Request{}, protocol.CodeBadRequest},
		{"no match", "VERSION:1:CONNECT:me\r\n", protocol.Request{}, protocol.CodeBadRequest},
		{"empty user", "VERSION:1:CONNECT::MATCH:m\r\n", protocol.Request{}, protocol.CodeBadRequest},
		{"empty v2 user", "V:2:\r\n", protocol.Request{}, protocol.CodeBadRequest},
		{"wrong keyword", "VERSION:1:HELLO:me:MATCH:m\r\n", protocol.Request{}, protocol.CodeBadRequest},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := protocol.ParseConnect([]byte(tc.line))
			if tc.code == "" {
				if err != nil || got != tc.want {
					t.Fatalf("ParseConnect = %+v, %v; want %+v", got, err, tc.want)
				}
				return
			}
			var pe *protocol.Error
			if !errors.As(err, &pe) || pe.Code != tc.code {
				t.Fatalf("ParseConnect error = %v, want code %s", err, tc.code)
			}
		})
	}
}

func TestCutLine(t *testing.T) {
	for _, tc := range []struct {
		name, in, want string
		max            int
		ok             bool
		err            error
	}{
		{"one line", "V:2:me\r\nmore", "V:2:me\r\n", 1024, true, nil},
		{"exactly max", "abc\n", "abc\n", 4, true, nil},
		{"over max", "abcd\n", "", 4, false, protocol.ErrLineTooLong},
		{"long without newline", strings.Repeat("x", 1025), "", 1024, false, protocol.ErrLineTooLong},
		{"not yet", "V:2:m", "", 1024, false, nil},
		{"empty", "", "", 1024, false, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, ok, err := protocol.CutLine([]byte(tc.in), tc.max)
			if string(got) != tc.want || ok != tc.ok || !errors.Is(err, tc.err) {
				t.Fatalf("CutLine = %q, %v, %v; want %q, %v, %v", got, ok, err, tc.want, tc.ok, tc.err)
			}
		})
	}
}

func TestErrorFrame(t *testing.T) {
	e := &protocol.Error{Code: protocol.CodeNotFound, Detail: "elp-tig-2011-09-11"}
	if got := string(e.Frame()); got != "ERROR: not_found elp-tig-2011-09-11\n\r\n" {
		t.Fatalf("Frame = %q", got)
	}
	e = &protocol.Error{Code: protocol.CodeBadRequest, Detail: "a\r\nb" + strings.Repeat("z", 200)}
	if f := e.Frame(); bytes.Count(f, []byte("\n")) != 2 || len(f) > 120 {
		t.Fatalf("Frame of a hostile detail = %q: want one short line", f)
	}
}

// The header time rounds to the nearest second as the original's dtformat did
// (erlang:round(TS/1000) on milliseconds: halves go up).
func TestV1HeaderRounds(t *testing.T) {
	base := time.Date(2011, 9, 10, 21, 5, 53, 0, time.UTC)
	for _, c := range []struct {
		frac time.Duration
		want string
	}{
		{0, "21:05:53"},
		{499 * time.Millisecond, "21:05:53"},
		{499*time.Millisecond + 999*time.Microsecond, "21:05:53"}, // the original saw whole milliseconds
		{500 * time.Millisecond, "21:05:54"},
		{900 * time.Millisecond, "21:05:54"},
		{6*time.Second + 500*time.Millisecond, "21:06:00"},
	} {
		e := match.Event{At: base.Add(c.frac), Kind: match.KindStop}
		got := string(protocol.RenderV1(&e))
		if want := "2011-09-10 " + c.want + ": stop:\n\r\n"; got != want {
			t.Errorf("%s: got %q, want %q", base.Add(c.frac).Format(time.RFC3339Nano), got, want)
		}
	}
}
