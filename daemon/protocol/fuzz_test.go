package protocol_test

import (
	"bytes"
	"errors"
	"strconv"
	"strings"
	"testing"
	"testing/iotest"

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
		const max = 1024
		a, errA := protocol.ReadLine(bytes.NewReader(line), max)
		b, errB := protocol.ReadLine(iotest.HalfReader(bytes.NewReader(line)), max)
		if !bytes.Equal(a, b) || (errA == nil) != (errB == nil) {
			t.Fatalf("ReadLine depends on chunking: %q/%v vs %q/%v", a, errA, b, errB)
		}
	})
}
