package protocol_test

import (
	"bytes"
	"errors"
	"strconv"
	"strings"
	"testing"
	"unicode"

	"matchstream/daemon/match"
	"matchstream/daemon/protocol"
)

// FuzzParseConnect: any line either parses to a request that round-trips its fields or is refused
// with one of the protocol's codes; never a panic. Reading it in any chunking gives the same line.
func FuzzParseConnect(f *testing.F) {
	for _, s := range []string{"VERSION:1:CONNECT:me:MATCH:elp-tig-2011-09-10\r\n", "V:2:me\r\n",
		"VERSION:3:CONNECT:u:MATCH:m:FROM:3\r\n", "VERSION:9:x\n", "::::\n", "VERSION:3:CONNECT:u:MATCH:m:FROM:18446744073709551615\n"} {
		f.Add([]byte(s))
	}
	codes := map[string]bool{protocol.CodeBadRequest: true, protocol.CodeUnsupportedVersion: true}
	f.Fuzz(func(t *testing.T, line []byte) {
		req, err := protocol.ParseConnect(line)
		if err != nil {
			var pe *protocol.Error
			if !errors.As(err, &pe) || !codes[pe.Code] {
				t.Fatalf("error %v is not a protocol error", err)
			}
			if fr := pe.Frame(); !bytes.HasPrefix(fr, []byte("ERROR: ")) || !bytes.HasSuffix(fr, []byte("\n\r\n")) || bytes.Count(fr, []byte("\n")) != 2 {
				t.Fatalf("error frame %q is not one line", fr)
			}
			return
		}
		switch req.Version {
		case 1, 3:
			if req.Match == "" || req.User == "" || strings.Contains(req.Match, ":") {
				t.Fatalf("parsed %+v from %q", req, line)
			}
		case 2:
			if req.User == "" {
				t.Fatalf("parsed %+v from %q", req, line)
			}
		default:
			t.Fatalf("version %d from %q", req.Version, line)
		}
		if req.HasFrom {
			i := bytes.LastIndex(line, []byte(":FROM:"))
			n, err := strconv.ParseUint(strings.TrimRight(string(line[i+6:]), "\r\n"), 10, 64)
			if i < 0 || err != nil || n != req.From {
				t.Fatalf("FROM %d does not match %q", req.From, line)
			}
		}
		// Fed to CutLine byte by byte, as a slow client sends it, the line comes out the same as whole.
		const max = 1024
		whole, okW, errW := protocol.CutLine(line, max)
		for i := 1; i <= len(line); i++ {
			got, ok, err := protocol.CutLine(line[:i], max)
			if ok || err != nil {
				if !bytes.Equal(got, whole) || ok != okW || (err == nil) != (errW == nil) {
					t.Fatalf("CutLine depends on chunking at %d: %q/%v vs %q/%v", i, got, err, whole, errW)
				}
				break
			}
		}
	})
}

// FuzzRenderV1: whatever a watcher posts, once it is accepted (it decodes and applies to a live
// match), its v1 frame and the status after it hold "\r\n" only as the frame's end and no control
// character but the tab and newline of the format: no posted text can forge a frame.
func FuzzRenderV1(f *testing.F) {
	for _, s := range []string{
		`{"at":"2011-09-10T21:30:00Z","kind":"comment","comment":"a\r\nERROR: fake\r\n"}`,
		`{"at":"2011-09-10T21:30:00Z","kind":"comment","comment":"what a save"}`,
		`{"at":"2011-09-10T21:30:00Z","kind":"goal","team":"tig","player":{"number":7,"name":"Luna"}}`,
		`{"at":"2011-09-10T21:30:00Z","kind":"substitution","team":"elp","player_out":{"number":9},"player_in":{"number":40,"name":"New\nline"}}`,
		`{"at":"2011-09-10T21:30:00Z","kind":"card","team":"elp","card":"red","player":{"number":9}}`,
	} {
		f.Add([]byte(s))
	}
	recs, _ := sampleRecords(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		e, err := match.DecodeEvent(data)
		if err != nil {
			return
		}
		var st match.State
		for _, r := range recs[:20] { // a live match, in its first half
			ev := r.Event
			if err := st.Apply(&ev); err != nil {
				t.Fatal(err)
			}
		}
		if err := st.Apply(&e); err != nil {
			return
		}
		for name, fr := range map[string][]byte{"event": protocol.RenderV1(&e), "status": protocol.RenderV1Status(&st, e.At)} {
			if !bytes.HasSuffix(fr, []byte("\n\r\n")) || bytes.Count(fr, []byte("\r\n")) != 1 {
				t.Fatalf("%s frame of %s holds \\r\\n before its end:\n%q", name, data, fr)
			}
			body := fr[:len(fr)-2]
			if i := bytes.IndexFunc(body, func(r rune) bool { return r != '\t' && r != '\n' && unicode.IsControl(r) }); i >= 0 {
				t.Fatalf("%s frame of %s has a control character at %d:\n%q", name, data, i, fr)
			}
		}
	})
}
