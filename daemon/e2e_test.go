package daemon

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"matchstream/daemon/daemontest"
)

// The whole sample match through a Server in-process, on every protocol version at once: users
// there from the kick-off (v1, V:2, v3), hostile and broken clients, users joining mid-match and
// one resuming with FROM; each gets exactly the bytes the protocol prescribes, the metrics agree,
// and a user after the end gets the status and a close. (The binary's TestEndToEnd runs the
// watcher and the user simulator against a real process.)
func TestServerEndToEnd(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t)
	cfg.Listen.Stream = []string{"127.0.0.1:0", "127.0.0.1:0", "127.0.0.1:0", "127.0.0.1:0"}
	cfg.Hub.QueueLimit, cfg.Hub.WriteTimeout = 512, 10*time.Second
	cfg.Stream.HandshakeTimeout = 300 * time.Millisecond
	s := startServer(t, cfg)
	_, streams := s.Addrs()
	port := func(i int) string { return streams[i%len(streams)].String() }
	id := daemontest.SampleID
	lines, v3 := daemontest.SampleLines(t)
	batch := func(ls []string) string { return "[" + strings.Join(ls, ",") + "]" }
	subscribers := func(n int64) func() bool {
		return func() bool { return s.reg.Stats.Subscribers.Load() == n }
	}
	post(t, s, id, lines[0])

	var early1, early2, early3 []*daemontest.Client
	for i := range 50 {
		early1 = append(early1, daemontest.Dial(t, port(i), fmt.Sprintf("VERSION:1:CONNECT:u%d:MATCH:%s\r\n", i, id), true))
		early3 = append(early3, daemontest.Dial(t, port(i+1), fmt.Sprintf("VERSION:3:CONNECT:u%d:MATCH:%s\r\n", i, id), true))
	}
	for i := range 40 {
		early2 = append(early2, daemontest.Dial(t, port(i+2), fmt.Sprintf("V:2:u%d\n", i), true))
	}
	hostile := map[string]*daemontest.Client{
		"bad_request":         daemontest.Dial(t, port(0), "HELLO WORLD\r\n", true),
		"not_found":           daemontest.Dial(t, port(1), "VERSION:1:CONNECT:me:MATCH:elp-tig-2011-09-11\r\n", true),
		"unsupported_version": daemontest.Dial(t, port(2), "VERSION:9:CONNECT:me:MATCH:x\r\n", true),
		"line_too_long":       daemontest.Dial(t, port(3), strings.Repeat("x", 5000), true),
		"timeout":             daemontest.Dial(t, port(0), "", true),
	}
	waitFor(t, "140 subscribers", subscribers(140))
	for code, c := range hostile {
		if got := c.Wait(t); !bytes.HasPrefix(got, []byte("ERROR: "+code+" ")) || !bytes.HasSuffix(got, []byte("\n\r\n")) {
			t.Errorf("%s client got %q", code, got)
		}
	}

	post(t, s, id, batch(lines[1:10]))
	var mid1, mid3 []*daemontest.Client
	for i := range 15 {
		mid1 = append(mid1, daemontest.Dial(t, port(i), fmt.Sprintf("VERSION:1:CONNECT:m%d:MATCH:%s\r\n", i, id), true))
		mid3 = append(mid3, daemontest.Dial(t, port(i), fmt.Sprintf("VERSION:3:CONNECT:m%d:MATCH:%s\r\n", i, id), true))
	}
	resumed := daemontest.Dial(t, port(3), "VERSION:3:CONNECT:r:MATCH:"+id+":FROM:5\r\n", true)
	waitFor(t, "171 subscribers", subscribers(171))
	post(t, s, id, batch(lines[10:]))

	for i, c := range early1 {
		daemontest.CheckV1(t, fmt.Sprintf("v1 user %d", i), c.Wait(t), "home_score: 0\n", 2)
	}
	for i, c := range early2 {
		daemontest.CheckV1(t, fmt.Sprintf("V:2 user %d", i), c.Wait(t), "home_score: 0\n", 2)
	}
	for i, c := range early3 {
		daemontest.CheckV3(t, fmt.Sprintf("v3 user %d", i), c.Wait(t), v3, 1, false)
	}
	for i, c := range mid1 {
		daemontest.CheckV1(t, fmt.Sprintf("mid-match v1 user %d", i), c.Wait(t), "visit_score: 3\n", 11)
	}
	for i, c := range mid3 {
		daemontest.CheckV3(t, fmt.Sprintf("mid-match v3 user %d", i), c.Wait(t), v3, 10, false)
	}
	daemontest.CheckV3(t, "FROM:5 user", resumed.Wait(t), v3, 5, true)
	waitFor(t, "no subscriber after the end", subscribers(0))

	resp, err := http.Get(s.testURL("/metrics"))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	m := daemontest.Metrics(body)
	for _, code := range []string{"bad_request", "not_found", "unsupported_version", "line_too_long", "timeout"} {
		if v := m[`matchstream_handshake_errors_total{code="`+code+`"}`]; v != 1 {
			t.Errorf("handshake errors %s = %v, want 1", code, v)
		}
	}
	if m["matchstream_events_accepted_total"] != 31 || m["matchstream_deliveries_total"] < 171*20 ||
		m[`matchstream_subscribers_by_protocol{protocol="3"}`] != 0 || m["matchstream_delivery_latency_seconds_count"] == 0 {
		t.Errorf("metrics after the match: events %v, deliveries %v, v3 subscribers %v, latency count %v",
			m["matchstream_events_accepted_total"], m["matchstream_deliveries_total"],
			m[`matchstream_subscribers_by_protocol{protocol="3"}`], m["matchstream_delivery_latency_seconds_count"])
	}
	late := daemontest.Dial(t, port(0), "VERSION:1:CONNECT:late:MATCH:"+id+"\r\n", true).Wait(t)
	if f := daemontest.SplitFrames(late); len(f) != 1 || !bytes.Contains(f[0], []byte("period: ended")) {
		t.Errorf("user after the end got %q", late)
	}
}
