// Package daemontest holds what the daemon's end-to-end tests share, in-process (package daemon)
// and against the binary (cmd/matchstream): a raw TCP client, the sample match and its expected
// bytes in every protocol version, and the checks of a client's whole stream against them.
package daemontest

import (
	"bytes"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"matchstream/daemon/match"
	"matchstream/daemon/protocol"
)

// SampleID is the original's sample match.
const SampleID = "elp-tig-2011-09-10"

// Testdata is a path under the repository's testdata directory, wherever the test runs.
func Testdata(parts ...string) string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(append([]string{filepath.Dir(file), "..", "..", "testdata"}, parts...)...)
}

// SampleJSONL and SampleV1 are the sample match in our event format and the exact v1 bytes of its
// events after the start.
var (
	SampleJSONL = Testdata("matches", "elp-tig-2011-09-10.jsonl")
	SampleV1    = Testdata("matches", "elp-tig-2011-09-10.v1.golden")
)

// Client is a hand-made TCP client: it sends its connect line and reads until the server closes.
type Client struct {
	Conn  net.Conn
	done  chan struct{}
	data  []byte
	err   error
	Lines atomic.Int64 // newlines received so far, to follow progress while it reads
}

// Dial connects to addr and sends line; with read it reads everything until the server closes.
func Dial(t *testing.T, addr, line string, read bool) *Client {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	rc := &Client{Conn: c, done: make(chan struct{})}
	if line != "" {
		if _, err := io.WriteString(c, line); err != nil {
			t.Fatal(err)
		}
	}
	if read {
		go rc.readAll()
	}
	return rc
}

// Read starts reading everything from a connection made elsewhere, until the server closes it.
func Read(c net.Conn) *Client {
	rc := &Client{Conn: c, done: make(chan struct{})}
	go rc.readAll()
	return rc
}

func (rc *Client) readAll() {
	defer close(rc.done)
	rc.Conn.SetReadDeadline(time.Now().Add(3 * time.Minute))
	buf := make([]byte, 64<<10)
	for {
		n, err := rc.Conn.Read(buf)
		rc.data = append(rc.data, buf[:n]...)
		rc.Lines.Add(int64(bytes.Count(buf[:n], []byte("\n"))))
		if err != nil {
			if err != io.EOF {
				rc.err = err
			}
			return
		}
	}
}

// Wait returns everything the client got once the server has closed it.
func (rc *Client) Wait(t *testing.T) []byte {
	t.Helper()
	select {
	case <-rc.done:
	case <-time.After(3 * time.Minute):
		t.Fatal("client still connected after 3 minutes")
	}
	return rc.data
}

// SampleLines is the sample match file's lines, and the v3 line of each event (index = seq-1).
func SampleLines(t *testing.T) (lines []string, v3 [][]byte) {
	t.Helper()
	b, err := os.ReadFile(SampleJSONL)
	if err != nil {
		t.Fatal(err)
	}
	lines = strings.Split(strings.TrimSpace(string(b)), "\n")
	var st match.State
	for _, l := range lines {
		e, err := match.DecodeEvent([]byte(l))
		if err != nil {
			t.Fatal(err)
		}
		if err := st.Apply(&e); err != nil {
			t.Fatal(err)
		}
		v3 = append(v3, protocol.RenderV3(SampleID, match.Record{Seq: st.Seq, Event: e}))
	}
	return lines, v3
}

// SplitFrames cuts a v1/v2 stream into frames ending with a line holding only \r\n.
func SplitFrames(b []byte) [][]byte {
	var out [][]byte
	for len(b) > 0 {
		i := bytes.Index(b, []byte("\n\r\n"))
		if i < 0 {
			return append(out, b)
		}
		out = append(out, b[:i+3])
		b = b[i+3:]
	}
	return out
}

// CheckV1 asserts a v1/v2 stream is a status frame with the given score, then exactly the golden
// frames from event `from` (seq) to the end.
func CheckV1(t *testing.T, name string, got []byte, score string, from int) {
	t.Helper()
	golden, err := os.ReadFile(SampleV1)
	if err != nil {
		t.Fatal(err)
	}
	want := bytes.Join(SplitFrames(golden)[from-2:], nil) // the golden file starts at seq 2
	frames := SplitFrames(got)
	if len(frames) == 0 || !bytes.Contains(frames[0], []byte(": status:\n")) || !bytes.Contains(frames[0], []byte(score)) {
		t.Fatalf("%s: first frame is not the status with %q:\n%s", name, score, got)
	}
	if rest := bytes.Join(frames[1:], nil); !bytes.Equal(rest, want) {
		t.Fatalf("%s: after the status got\n%s\nwant\n%s", name, rest, want)
	}
}

// CheckV3 asserts a v3 stream is (unless resuming) a status line with seq statusSeq, then exactly
// the events after it.
func CheckV3(t *testing.T, name string, got []byte, v3 [][]byte, statusSeq int, resume bool) {
	t.Helper()
	lines := bytes.SplitAfter(got, []byte("\n"))
	if len(lines) > 0 && len(lines[len(lines)-1]) == 0 {
		lines = lines[:len(lines)-1]
	}
	if !resume {
		var st struct {
			Kind string `json:"kind"`
			Seq  int    `json:"seq"`
		}
		if len(lines) == 0 || json.Unmarshal(lines[0], &st) != nil || st.Kind != "status" || st.Seq != statusSeq {
			t.Fatalf("%s: first line is not a status with seq %d: %s", name, statusSeq, got)
		}
		lines = lines[1:]
	}
	want := v3[statusSeq:]
	if len(lines) != len(want) {
		t.Fatalf("%s: %d events, want %d:\n%s", name, len(lines), len(want), got)
	}
	for i := range want {
		if !bytes.Equal(lines[i], want[i]) {
			t.Fatalf("%s: event %d is\n%s want\n%s", name, statusSeq+i+1, lines[i], want[i])
		}
	}
}

// GetJSON GETs url and decodes a 200 answer into v (may be nil); it returns the status code.
func GetJSON(t *testing.T, url string, v any) int {
	t.Helper()
	return GetJSONWith(t, http.DefaultClient, url, v)
}

// GetJSONWith is GetJSON with the client hc (one that trusts a test certificate, say).
func GetJSONWith(t *testing.T, hc *http.Client, url string, v any) int {
	t.Helper()
	resp, err := hc.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if v != nil && resp.StatusCode == 200 {
		if err := json.Unmarshal(b, v); err != nil {
			t.Fatalf("GET %s: %v: %s", url, err, b)
		}
	}
	return resp.StatusCode
}

// FetchMetrics reads a /metrics URL into name{labels} → value.
func FetchMetrics(t *testing.T, url string) map[string]float64 {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return Metrics(b)
}

// SyncBuffer is a bytes.Buffer safe for a logger's writes and a test's reads at once.
type SyncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *SyncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}
func (s *SyncBuffer) String() string { s.mu.Lock(); defer s.mu.Unlock(); return s.b.String() }

// Metrics parses a Prometheus text exposition into name{labels} → value.
func Metrics(body []byte) map[string]float64 {
	out := map[string]float64{}
	for _, l := range strings.Split(string(body), "\n") {
		if l == "" || strings.HasPrefix(l, "#") {
			continue
		}
		i := strings.LastIndexByte(l, ' ')
		if v, err := strconv.ParseFloat(l[i+1:], 64); err == nil {
			out[l[:i]] = v
		}
	}
	return out
}

// SSEEvent is one parsed Server-Sent Event.
type SSEEvent struct{ ID, Event, Data string }

// ParseSSE splits an event-stream response into its head and events; comments (heartbeats) are
// counted apart.
func ParseSSE(t *testing.T, raw []byte) (head string, events []SSEEvent, comments int) {
	t.Helper()
	h, body, ok := bytes.Cut(raw, []byte("\r\n\r\n"))
	if !ok {
		t.Fatalf("no HTTP head in %q", raw)
	}
	for _, block := range strings.Split(string(body), "\n\n") {
		var e SSEEvent
		for _, line := range strings.Split(block, "\n") {
			k, v, _ := strings.Cut(line, ": ")
			switch {
			case line == "":
			case strings.HasPrefix(line, ":"):
				comments++
			case k == "id":
				e.ID = v
			case k == "event":
				e.Event = v
			case k == "data":
				e.Data = v
			case k == "retry":
			default:
				t.Fatalf("unexpected SSE line %q", line)
			}
		}
		if e.Event != "" {
			events = append(events, e)
		}
	}
	return string(h), events, comments
}

// CheckSSE asserts events are exactly the match's events with seq > after, as SSE: id = seq,
// event = kind, data = the v3 line.
func CheckSSE(t *testing.T, name string, events []SSEEvent, v3 [][]byte, after int) {
	t.Helper()
	want := v3[after:]
	if len(events) != len(want) {
		t.Fatalf("%s: %d events, want %d: %+v", name, len(events), len(want), events)
	}
	for i, e := range events {
		seq := after + i + 1
		if e.ID != strconv.Itoa(seq) || e.Data != strings.TrimSuffix(string(want[i]), "\n") ||
			!strings.Contains(e.Data, `"kind":"`+e.Event+`"`) {
			t.Fatalf("%s: event %d is %+v, want id %d and data %s", name, i, e, seq, want[i])
		}
	}
}
