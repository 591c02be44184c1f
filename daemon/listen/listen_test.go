package listen_test

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"

	"matchstream/daemon/listen"
)

func TestParseRange(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want []string
		err  string
	}{
		{"127.0.0.1:9000-9002", []string{"127.0.0.1:9000", "127.0.0.1:9001", "127.0.0.1:9002"}, ""},
		{"127.0.0.1:9000", []string{"127.0.0.1:9000"}, ""},
		{"[::1]:9000-9001", []string{"[::1]:9000", "[::1]:9001"}, ""},
		{":9000-9000", []string{":9000"}, ""},
		{"127.0.0.1:9002-9000", nil, "first <= last"},
		{"127.0.0.1:0-5", nil, "1-65535"},
		{"127.0.0.1:65535-65536", nil, "1-65535"},
		{"127.0.0.1:a-b", nil, "1-65535"},
		{"127.0.0.1", nil, "host:port"},
		{"127.0.0.1:1000-3000", nil, "too many"},
	} {
		t.Run(tc.in, func(t *testing.T) {
			got, err := listen.ParseRange(tc.in)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("ParseRange = %v, %v; want error with %q", got, err, tc.err)
				}
				return
			}
			if err != nil || !slices.Equal(got, tc.want) {
				t.Fatalf("ParseRange = %v, %v; want %v", got, err, tc.want)
			}
		})
	}
}

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// Self-bound listeners: every port bound, and a clear error for an address that cannot be bound.
// A port another listener holds is refused, naming the port and the holder's pid, even when that
// holder is another matchstream: with SO_REUSEPORT on both, the kernel split clients and posts
// between two daemons that knew nothing of each other.
func TestOpenSelfBound(t *testing.T) {
	ln, err := listen.Bind("127.0.0.1:0", 16)
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	for _, addr := range []string{ln.Addr().String(), fmt.Sprintf("0.0.0.0:%d", port)} {
		again, err := listen.Bind(addr, 16)
		if err == nil {
			again.Close()
			t.Fatalf("a second listener on %s while the first is open", addr)
		}
		want := fmt.Sprintf("port %d is in use by pid %d", port, os.Getpid())
		if !strings.Contains(err.Error(), want) || !errors.Is(err, syscall.EADDRINUSE) {
			t.Fatalf("second bind of %s: %v; want %q (and EADDRINUSE)", addr, err, want)
		}
	}
	ln.Close()
	again, err := listen.Bind(fmt.Sprintf("127.0.0.1:%d", port), 16) // free again at once
	if err != nil {
		t.Fatalf("bind after the holder closed: %v", err)
	}
	again.Close()

	somax := filepath.Join(t.TempDir(), "somaxconn")
	os.WriteFile(somax, []byte("128\n"), 0o644)
	set, err := listen.Open(listen.Config{API: "127.0.0.1:0", Stream: []string{"127.0.0.1:0", "127.0.0.1:0"},
		Backlog: 4096, SomaxconnPath: somax}, quiet())
	if err != nil {
		t.Fatal(err)
	}
	defer set.Close()
	if len(set.Stream) != 2 || set.API == nil || set.Activated {
		t.Fatalf("set = %+v", set)
	}
	set.Stream[0].Conns.Store(3)
	if set.LeastLoaded(false) != set.Stream[1] {
		t.Fatal("LeastLoaded did not pick the idle port")
	}
	c, err := net.Dial("tcp", set.Stream[1].Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	c.Close()

	for _, bad := range []string{"example.com:80", "127.0.0.1:x", "10.255.255.1:9000"} {
		if _, err := listen.Bind(bad, 16); err == nil || !strings.Contains(err.Error(), bad) {
			t.Errorf("Bind(%s) = %v, want an error naming the address", bad, err)
		}
	}
}
