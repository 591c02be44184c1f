package matchfile_test

import (
	"encoding/json"
	"os"
	"strings"
	"testing"
	"time"

	"matchstream/cmd/matchstream/matchfile"
	"matchstream/daemon/match"
)

const dir = "../../../testdata/matches/"

func read(t testing.TB, name string) *matchfile.File {
	t.Helper()
	fh, err := os.Open(dir + name)
	if err != nil {
		t.Fatal(err)
	}
	defer fh.Close()
	f, err := matchfile.Read(fh)
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return f
}

// fold applies a file's events, completing player names from the line-ups.
func fold(t testing.TB, f *matchfile.File) []match.Event {
	var s match.State
	var out []match.Event
	for _, e := range f.Entries {
		ev := e.Event
		if err := s.Apply(&ev); err != nil {
			t.Fatalf("line %d: %v", e.Line, err)
		}
		out = append(out, ev)
	}
	return out
}

// The original's Erlang file and our JSON Lines file are the same match, event for event.
func TestErlangFileEqualsJSONL(t *testing.T) {
	erl := read(t, "original/elp-tig-2011-09-10.config")
	jsl := read(t, "elp-tig-2011-09-10.jsonl")
	if erl.Format != "erlang" || jsl.Format != "jsonl" {
		t.Fatalf("formats %s, %s", erl.Format, jsl.Format)
	}
	if erl.ID() != "elp-tig-2011-09-10" || jsl.ID() != "elp-tig-2011-09-10" {
		t.Fatalf("ids %q %q", erl.ID(), jsl.ID())
	}
	a, b := fold(t, erl), fold(t, jsl)
	if len(a) != len(b) {
		t.Fatalf("%d events vs %d", len(a), len(b))
	}
	for i := range a {
		ja, _ := json.Marshal(a[i])
		jb, _ := json.Marshal(b[i])
		if string(ja) != string(jb) {
			t.Errorf("event %d:\nerlang %s\njsonl  %s", i+1, ja, jb)
		}
	}
	fast := read(t, "original/elp-tig-2011-09-10-fast.config")
	evs := fold(t, fast)
	if len(evs) != 31 || evs[1].At.Sub(evs[0].At) != 5*time.Second {
		t.Fatalf("fast file: %d events, first gap %s", len(evs), evs[1].At.Sub(evs[0].At))
	}
}

func TestReadErrors(t *testing.T) {
	for _, tc := range []struct{ name, in, want string }{
		{"empty", "", "needs home"},
		{"bad json line", `{"kind":"stop","at":"2011-09-10T21:00:00Z"}` + "\n{\"kind\":", "line 2"},
		{"unknown field", `{"kind":"stop","at":"2011-09-10T21:00:00Z","x":1}`, "unknown field"},
		{"no dot", `{home, <<"a">>}`, "expected '.'"},
		{"unknown key", `{colour, red}.`, "unknown key colour"},
		{"bad step", "{home, <<\"a\">>}.\n{visit, <<\"b\">>}.\n{start_date, {2011,9,10}}.\n{steps, [{goal, [{team, <<\"a\">>}, {player, x}]}]}.", "line 4"},
		{"deep", strings.Repeat("[", 100), "nested too deep"},
		{"unterminated binary", `{home, <<"abc`, `expected ">>`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := matchfile.Read(strings.NewReader(tc.in))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Read = %v, want error containing %q", err, tc.want)
			}
		})
	}
}

// FuzzRead: no input panics the reader, and what it accepts passes the event shape check.
func FuzzRead(f *testing.F) {
	for _, n := range []string{"original/elp-tig-2011-09-10.config", "elp-tig-2011-09-10.jsonl"} {
		b, err := os.ReadFile(dir + n)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte(`{steps, [{sleep, 1}, {stop, []}]}.`))
	f.Fuzz(func(t *testing.T, data []byte) {
		mf, err := matchfile.Read(strings.NewReader(string(data)))
		if err != nil {
			return
		}
		for _, e := range mf.Entries {
			if err := e.Event.CheckShape(); err != nil {
				t.Fatalf("accepted an event that fails CheckShape: %v", err)
			}
		}
	})
}
