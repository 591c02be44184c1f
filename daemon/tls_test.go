package daemon

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"matchstream/daemon/daemontest"
)

// tlsServer is a Server with a plain and a TLS stream port and an HTTPS API, and a client that
// trusts its certificate.
func tlsServer(t *testing.T) (*Server, daemontest.Cert, *http.Client, Config) {
	t.Helper()
	cert := daemontest.NewCert(t, 90*24*time.Hour)
	cfg := testConfig(t)
	cfg.Listen.Stream = []string{"127.0.0.1:0"}
	cfg.Listen.StreamTLS = []string{"127.0.0.1:0", "127.0.0.1:0"}
	cfg.TLS = TLS{Cert: cert.CertFile, Key: cert.KeyFile, API: true}
	s := startServer(t, cfg)
	return s, cert, &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: cert.ClientConfig()}}, cfg
}

func (s *Server) httpsURL(path string) string {
	api, _ := s.Addrs()
	return "https://" + api.String() + path
}

func postTLS(t *testing.T, hc *http.Client, s *Server, id, body string) {
	t.Helper()
	req, _ := http.NewRequest("POST", s.httpsURL("/matches/"+id+"/events"), strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer tok")
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 201 {
		t.Fatalf("POST over HTTPS: %d %s", resp.StatusCode, b)
	}
}

// The sample match over TLS end to end: posted over HTTPS, followed on a TLS stream port found
// with /connect?tls=1, over Server-Sent Events and long-poll on the HTTPS API, every client with
// the bytes a plain client gets; the metrics count the handshakes and show the certificate's
// expiry.
func TestTLSEndToEnd(t *testing.T) {
	t.Parallel()
	s, cert, hc, _ := tlsServer(t)
	id := daemontest.SampleID
	lines, v3 := daemontest.SampleLines(t)
	postTLS(t, hc, s, id, lines[0])

	resp, err := hc.Get(s.httpsURL("/connect?match=" + id + "&tls=1"))
	if err != nil {
		t.Fatal(err)
	}
	var where struct {
		Host string
		Port int
		TLS  bool
	}
	json.NewDecoder(resp.Body).Decode(&where)
	resp.Body.Close()
	_, streams := s.Addrs()
	if !where.TLS || (where.Port != streams[1].(*net.TCPAddr).Port && where.Port != streams[2].(*net.TCPAddr).Port) {
		t.Fatalf("/connect?tls=1 = %+v, want one of the TLS ports", where)
	}
	addr := net.JoinHostPort(where.Host, strconv.Itoa(where.Port))
	var clients []*daemontest.Client
	for i := range 10 {
		c, err := tls.Dial("tcp", addr, cert.ClientConfig())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		io.WriteString(c, "VERSION:3:CONNECT:u"+strconv.Itoa(i)+":MATCH:"+id+"\r\n")
		clients = append(clients, daemontest.Read(c))
	}
	plain := daemontest.Dial(t, streams[0].String(), "VERSION:3:CONNECT:p:MATCH:"+id+"\r\n", true)

	sse, err := hc.Get(s.httpsURL("/matches/" + id + "/stream"))
	if err != nil || sse.StatusCode != 200 {
		t.Fatalf("event stream over HTTPS: %v %v", sse, err)
	}
	defer sse.Body.Close()
	waitFor(t, "12 subscribers", func() bool { return s.reg.Stats.Subscribers.Load() == 12 })
	poll := make(chan []byte, 1)
	go func() {
		resp, err := hc.Get(s.httpsURL("/matches/" + id + "/poll?after=1&timeout=20"))
		if err != nil {
			poll <- nil
			return
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		poll <- b
	}()
	postTLS(t, hc, s, id, "["+strings.Join(lines[1:], ",")+"]")

	want := plain.Wait(t)
	daemontest.CheckV3(t, "plain client", want, v3, 1, false)
	for i, c := range clients {
		if got := c.Wait(t); !bytes.Equal(got, want) {
			t.Errorf("TLS client %d: %d bytes, the plain client %d", i, len(got), len(want))
		}
	}
	raw, _ := io.ReadAll(sse.Body) // the stream ends with the match
	_, events, _ := daemontest.ParseSSE(t, append([]byte("HTTP/1.1 200 OK\r\n\r\n"), raw...))
	if len(events) == 0 || events[0].Event != "status" || events[0].ID != "1" {
		t.Fatalf("HTTPS event stream: first event %+v, want the status at seq 1", events)
	}
	daemontest.CheckSSE(t, "HTTPS event stream", events[1:], v3, 1)
	if b := <-poll; !bytes.Contains(b, []byte(`"seq":2`)) {
		t.Errorf("long-poll over HTTPS: %s", b)
	}
	mr, err := hc.Get(s.httpsURL("/metrics"))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(mr.Body)
	mr.Body.Close()
	m := daemontest.Metrics(body)
	if m["matchstream_tls_handshakes_total"] != 10 {
		t.Errorf("tls handshakes %v, want 10", m["matchstream_tls_handshakes_total"])
	}
	if exp := m["matchstream_tls_certificate_expiry_timestamp_seconds"]; int64(exp) != cert.Pair.Leaf.NotAfter.Unix() {
		t.Errorf("certificate expiry %v, want %d", exp, cert.Pair.Leaf.NotAfter.Unix())
	}
}

// A reload reads the certificate again: new handshakes present the new one, established TLS
// clients stay; a pair that does not load is refused and the running certificate stays.
func TestTLSCertificateReload(t *testing.T) {
	t.Parallel()
	s, cert, hc, cfg := tlsServer(t)
	id := daemontest.SampleID
	lines, _ := daemontest.SampleLines(t)
	postTLS(t, hc, s, id, lines[0])
	_, streams := s.Addrs()
	old, err := tls.Dial("tcp", streams[1].String(), cert.ClientConfig())
	if err != nil {
		t.Fatal(err)
	}
	defer old.Close()
	io.WriteString(old, "VERSION:3:CONNECT:old:MATCH:"+id+"\r\n")
	r := bufio.NewReader(old)
	if _, err := r.ReadString('\n'); err != nil {
		t.Fatal(err)
	}

	// Addresses that validate (the test's are all port 0); they wait for a restart.
	cfg.Listen.API, cfg.Listen.Stream, cfg.Listen.StreamTLS = "127.0.0.1:1", []string{"127.0.0.1:2"}, []string{"127.0.0.1:3", "127.0.0.1:4"}
	broken := cfg
	broken.TLS.Key = cfg.TLS.Cert // a certificate is no key
	if err := s.Reload(func() (Config, error) { return broken, nil }); err == nil {
		t.Fatal("a reload with a broken key pair was applied")
	}
	renewed := daemontest.NewCert(t, 180*24*time.Hour)
	next := cfg
	next.TLS.Cert, next.TLS.Key = renewed.CertFile, renewed.KeyFile
	if err := s.Reload(func() (Config, error) { return next, nil }); err != nil {
		t.Fatal(err)
	}
	api, _ := s.Addrs()
	for _, addr := range []string{streams[2].String(), api.String()} {
		c, err := tls.Dial("tcp", addr, renewed.ClientConfig())
		if err != nil {
			t.Fatalf("%s after the reload: %v", addr, err)
		}
		if got := c.ConnectionState().PeerCertificates[0].NotAfter; !got.Equal(renewed.Pair.Leaf.NotAfter) {
			t.Errorf("%s presents a certificate expiring %s", addr, got)
		}
		c.Close()
	}
	postTLS(t, &http.Client{Transport: &http.Transport{TLSClientConfig: renewed.ClientConfig()}}, s, id, lines[1])
	if line, err := r.ReadString('\n'); err != nil || !strings.Contains(line, `"seq":2,`) {
		t.Fatalf("the client from before the reload: %q %v", line, err)
	}
}
