package daemon

import (
	"bytes"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"matchstream/daemon/daemontest"
)

// A reload applies the watcher token, refuses a configuration that does not validate or load, and
// names the settings that wait for a restart.
func TestReload(t *testing.T) {
	cfg := testConfig(t)
	s := startServer(t, cfg)
	token := func() string { cur, _ := s.handler.WatcherTokens(); return cur }

	bad := cfg
	bad.Hub.QueueLimit = 0
	if err := s.Reload(func() (Config, error) { return bad, nil }); err == nil || !strings.Contains(err.Error(), "client-queue") {
		t.Fatalf("a configuration that does not validate: %v", err)
	}
	if err := s.Reload(func() (Config, error) { return cfg, errors.New("config file: unknown key") }); err == nil {
		t.Fatal("a configuration that does not load was applied")
	}
	if token() != "tok" {
		t.Fatalf("refused reloads changed the token to %q", token())
	}

	next := cfg // with addresses that validate (the test's are all port 0); they wait for a restart
	next.Listen.API, next.Listen.Stream = "127.0.0.1:1", []string{"127.0.0.1:2", "127.0.0.1:3"}
	next.API.WatcherToken, next.WatcherTokenGrace = "tok2", time.Minute
	next.Stream.MaxLine = 64 // the longest connect line, for the connections from now on
	_, streams := s.Addrs()
	line := "VERSION:3:CONNECT:a-user-with-a-long-name:MATCH:elp-tig-2011-09-10-and-more\r\n" // 75 bytes
	if got := daemontest.Dial(t, streams[0].String(), line, true).Wait(t); bytes.HasPrefix(got, []byte("ERROR: line_too_long")) {
		t.Fatalf("before the reload, a 75-byte line got %q", got)
	}
	if err := s.Reload(func() (Config, error) { return next, nil }); err != nil {
		t.Fatal(err)
	}
	if cur, prev := s.handler.WatcherTokens(); cur != "tok2" || prev != "tok" {
		t.Fatalf("after the reload: tokens %q and %q, want tok2 and tok", cur, prev)
	}
	if got := daemontest.Dial(t, streams[0].String(), line, true).Wait(t); !bytes.HasPrefix(got, []byte("ERROR: line_too_long")) {
		t.Fatalf("after a reload to max-line 64, a 75-byte line got %q", got)
	}
}

func TestNeedRestart(t *testing.T) {
	cfg := Default()
	next := cfg
	next.API.WatcherToken, next.WatcherTokenGrace = "other", time.Hour // reloaded: not listed
	next.Hub.QueueLimit, next.Hub.WriteTimeout = 9, time.Minute
	next.Stream.MaxLine, next.Stream.HandshakeTimeout, next.Stream.ConnRate = 99, time.Second, 5
	if got := cfg.needRestart(next); len(got) != 0 {
		t.Fatalf("token, grace, client and stream limits listed as needing a restart: %v", got)
	}
	next.Listen.API, next.Store, next.Listen.StreamTLS = "127.0.0.1:1", "redis://127.0.0.1:6379/0", []string{"127.0.0.1:9443"}
	got := cfg.needRestart(next)
	for _, want := range []string{"api", "store", "stream-tls"} {
		if !slices.Contains(got, want) {
			t.Errorf("needRestart = %v, want %q in it", got, want)
		}
	}
	if len(got) != 3 {
		t.Errorf("needRestart = %v, want 3 settings", got)
	}
}
